//! The aggregate over an append-only input: stage 1 (DataFusion's Partial aggregate in
//! the fragment below) hands partial rows; they are merged into [`ShardedState`], or
//! into per-pane state for an event-time window ([`WindowedState`]), and emitted per
//! the operator's [`Emit`].

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};

use super::{BatchContext, Emit, Operator, Snapshot};
use crate::checkpoint::{Commit, WriteKind};
use crate::exec::plan::Windowing;
use crate::exec::watermark::{WatermarkTracker, NO_WATERMARK};
use crate::metrics::BatchProgress;
use crate::state::window::WindowedState;
use crate::state::{AggregateSpec, ShardedState};

/// GROUP BY over partial aggregates, with or without an event-time window.
pub enum AggregateOp {
    /// Without a window.
    Groups {
        /// The groups.
        state: ShardedState,
        /// What it emits.
        emit: Emit,
        /// The output schema with the change column (emitting changes).
        changes: SchemaRef,
    },
    /// With an event-time window, and its watermark.
    Windows {
        /// The panes.
        state: WindowedState,
        /// The watermark, when the source declares one.
        tracker: Option<Arc<WatermarkTracker>>,
        /// What it emits.
        emit: Emit,
    },
}

impl AggregateOp {
    /// Empty state for `spec`, sharded `shards` ways.
    pub fn new(
        spec: &AggregateSpec,
        window: Option<&Windowing>,
        shards: usize,
        emit: Emit,
        ttl_ms: Option<i64>,
    ) -> Result<Self> {
        Ok(match window {
            None => {
                let mut state = ShardedState::new(spec.clone(), shards)?;
                if emit == Emit::Changes {
                    state = state.with_retractions();
                }
                if let Some(ttl) = ttl_ms {
                    state = state.with_ttl(ttl);
                }
                AggregateOp::Groups {
                    state,
                    emit,
                    changes: super::with_change(&spec.output_schema),
                }
            }
            Some(w) => AggregateOp::Windows {
                state: WindowedState::new(spec.clone(), w.spec, shards),
                tracker: w.tracker.clone(),
                emit,
            },
        })
    }
}

impl Operator for AggregateOp {
    fn process(
        &mut self,
        inputs: super::Inputs,
        ctx: &mut BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let partials = super::only_input(inputs)?;
        let (rows, emitted) = match self {
            AggregateOp::Groups {
                state,
                emit,
                changes,
            } => {
                ctx.expired += state.expire(ctx.now_ms)? as u64;
                let rows = state.merge(&partials)?;
                let out = match emit {
                    Emit::All => state.emit(false)?,
                    Emit::Upserts => state.emit(true)?,
                    Emit::Changes => state.emit_changes(changes)?,
                    // Groups of whole windows from the operator below: final now.
                    Emit::Closed => {
                        let out = state.emit(false)?;
                        state.clear()?;
                        out
                    }
                };
                (rows, out)
            }
            AggregateOp::Windows {
                state,
                tracker,
                emit,
            } => {
                if let Some(t) = tracker {
                    ctx.progress.late_rows += t.take_late();
                }
                let rows = state.merge(&partials)?;
                let watermark = match tracker {
                    Some(t) if ctx.close_all => {
                        t.close_all();
                        t.watermark()
                    }
                    Some(t) => t.advance(),
                    None => NO_WATERMARK,
                };
                let out = match emit {
                    Emit::Closed => state.emit_closed(watermark)?,
                    Emit::Upserts => state.emit_changed(watermark)?,
                    Emit::All => state.emit_all()?,
                    Emit::Changes => {
                        return Err(DataFusionError::Internal(
                            "windowed aggregates do not emit changes".into(),
                        ))
                    }
                };
                (rows, out)
            }
        };
        ctx.progress.shard_rows = rows;
        Ok(emitted)
    }

    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot> {
        Ok(match (self, kind) {
            (AggregateOp::Groups { state, .. }, WriteKind::Full) => {
                let rows = state.snapshot()?;
                state.clear_delta();
                Snapshot {
                    schema: state.state_schema(),
                    rows,
                    full: true,
                    slice: None,
                }
            }
            (AggregateOp::Groups { state, .. }, WriteKind::Delta(slice)) => Snapshot {
                schema: state.state_schema(),
                rows: state.delta(slice)?,
                full: false,
                slice,
            },
            // Bounded by the watermark: written whole.
            (AggregateOp::Windows { state, .. }, _) => Snapshot {
                schema: state.spec().partial_schema.clone(),
                rows: state.snapshot()?,
                full: true,
                slice: None,
            },
        })
    }

    fn state_rows(&self) -> u64 {
        match self {
            AggregateOp::Groups { state, .. } => state.groups() as u64,
            AggregateOp::Windows { state, .. } => state.groups() as u64,
        }
    }

    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        commit: &Commit,
    ) -> Result<()> {
        match self {
            AggregateOp::Groups { state, .. } => {
                state.restore(full)?;
                for d in deltas {
                    state.restore(d)?;
                }
            }
            AggregateOp::Windows { state, tracker, .. } => {
                if !deltas.is_empty() {
                    return Err(DataFusionError::Internal(
                        "state deltas in the checkpoint of a windowed aggregate".into(),
                    ));
                }
                state.restore(full, commit.emitted_through)?;
                if let Some(t) = tracker {
                    t.restore(commit.watermark, commit.max_event);
                }
            }
        }
        Ok(())
    }

    fn describe(&self, p: &mut BatchProgress) {
        match self {
            AggregateOp::Groups { state, .. } => {
                p.state_groups += state.groups();
                p.state_bytes += state.size();
                p.shard_groups = state.shard_groups();
            }
            AggregateOp::Windows { state, tracker, .. } => {
                p.state_groups += state.groups();
                p.shard_groups = state.shard_groups();
                p.state_bytes += state.size();
                p.open_panes = Some(state.panes());
                if let Some(t) = tracker {
                    p.watermark = Some(t.watermark());
                }
            }
        }
    }

    fn time(&self) -> (i64, i64, Option<i64>) {
        match self {
            AggregateOp::Windows {
                state,
                tracker: Some(t),
                ..
            } => (t.watermark(), t.max_event(), state.emitted_through()),
            AggregateOp::Windows { state, .. } => {
                (NO_WATERMARK, NO_WATERMARK, state.emitted_through())
            }
            _ => (NO_WATERMARK, NO_WATERMARK, None),
        }
    }

    fn has_open_windows(&self) -> bool {
        matches!(self, AggregateOp::Windows { state, .. } if state.panes() > 0)
    }
}
