//! State of a windowed aggregation: one [`ShardedState`] per pane, closed by the
//! watermark.
//!
//! ```text
//!  partial rows ──split by pane start──► pane 14:42:50 ─┐  tumble: a pane is a window
//!                                        pane 14:42:55 ─┤  hop: a window is assembled
//!                                        pane 14:43:00 ─┘  from its panes at emit time
//! ```
//! Append mode emits a window once, when the watermark reaches its end, then frees
//! the panes no open window needs: state stays bounded by the watermark delay.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::TimestampMillisecondType;
use datafusion::error::{DataFusionError, Result};

use super::{AggregateSpec, ShardedState};
use crate::exec::window::{window_array, WindowKind};

/// Which key column is the window, and what kind of window it is.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    /// The window's kind and sizes.
    pub kind: WindowKind,
    /// Index of the `{start, end}` column among the group keys.
    pub key_index: usize,
}

/// Panes of one windowed aggregation.
pub struct WindowedState {
    spec: AggregateSpec,
    window: WindowSpec,
    shards: usize,
    panes: BTreeMap<i64, ShardedState>,
    /// Windows starting at or before this were emitted (append mode) and are closed.
    emitted_through: Option<i64>,
    /// Session windows: the partial rows of sessions still open (see `state::session`).
    sessions: Vec<RecordBatch>,
}

impl WindowedState {
    /// Empty state; each pane is sharded `shards` ways.
    pub fn new(spec: AggregateSpec, window: WindowSpec, shards: usize) -> Self {
        Self {
            spec,
            window,
            shards,
            panes: BTreeMap::new(),
            emitted_through: None,
            sessions: Vec::new(),
        }
    }

    /// What this state aggregates.
    pub fn spec(&self) -> &AggregateSpec {
        &self.spec
    }

    /// The last window start emitted in append mode.
    pub fn emitted_through(&self) -> Option<i64> {
        self.emitted_through
    }

    /// Every pane's groups as keys + state columns (the Partial schema; the window
    /// column holds each pane). The state is kept.
    pub fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        if self.is_session() {
            return Ok(self.sessions.clone());
        }
        let mut out = Vec::new();
        for pane in self.panes.values_mut() {
            out.extend(pane.snapshot()?);
        }
        Ok(out)
    }

    /// Merges a snapshot back into empty state.
    pub fn restore(&mut self, rows: &[RecordBatch], emitted_through: Option<i64>) -> Result<()> {
        let _ = self.merge(rows)?;
        for pane in self.panes.values_mut() {
            pane.restore(&[])?;
        }
        self.emitted_through = emitted_through;
        Ok(())
    }

    fn is_session(&self) -> bool {
        matches!(self.window.kind, WindowKind::Session { .. })
    }

    fn session_rows(&self) -> usize {
        self.sessions.iter().map(RecordBatch::num_rows).sum()
    }

    /// Open panes (session windows: open per-event mini-sessions).
    pub fn panes(&self) -> usize {
        if self.is_session() {
            return self.session_rows();
        }
        self.panes.len()
    }

    /// Groups over all panes.
    pub fn groups(&self) -> usize {
        if self.is_session() {
            return self.session_rows();
        }
        self.panes.values().map(ShardedState::groups).sum()
    }

    /// Bytes over all panes.
    pub fn size(&self) -> usize {
        if self.is_session() {
            return self
                .sessions
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum();
        }
        self.panes.values().map(ShardedState::size).sum()
    }

    fn pane_starts(&self, b: &RecordBatch) -> Result<TimestampMillisecondArray> {
        let col = b
            .column(self.window.key_index)
            .as_struct_opt()
            .ok_or_else(|| {
                DataFusionError::Internal("the window key is not a {start, end} struct".into())
            })?;
        Ok(col
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .clone())
    }

    /// Groups held by each shard, over all panes.
    pub fn shard_groups(&self) -> Vec<usize> {
        let mut out = vec![0; self.shards.max(1)];
        if self.is_session() {
            out[0] = self.session_rows(); // sessions are kept unsharded
            return out;
        }
        for pane in self.panes.values() {
            for (o, g) in out.iter_mut().zip(pane.shard_groups()) {
                *o += g;
            }
        }
        out
    }

    /// Routes partial rows to their panes and merges them. Returns the rows routed to
    /// each shard, over all panes.
    pub fn merge(&mut self, partials: &[RecordBatch]) -> Result<Vec<u64>> {
        if self.is_session() {
            let mut counts = vec![0; self.shards.max(1)];
            for b in partials.iter().filter(|b| b.num_rows() > 0) {
                counts[0] += b.num_rows() as u64;
                self.sessions.push(b.clone());
            }
            return Ok(counts);
        }
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut routed: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
        for b in partials.iter().filter(|b| b.num_rows() > 0) {
            by_pane.clear();
            let starts = self.pane_starts(b)?;
            for (row, s) in starts.iter().enumerate() {
                // Rows without event time never reach here (the watermark step drops them).
                if let Some(s) = s {
                    by_pane.entry(s).or_default().push(row as u32);
                }
            }
            if by_pane.len() == 1
                && by_pane
                    .values()
                    .next()
                    .is_some_and(|r| r.len() == b.num_rows())
            {
                let pane = *by_pane.keys().next().unwrap_or(&0);
                routed.entry(pane).or_default().push(b.clone());
                continue;
            }
            for (pane, rows) in &by_pane {
                let idx = UInt32Array::from(rows.clone());
                let cols = b
                    .columns()
                    .iter()
                    .map(|c| take(c, &idx, None))
                    .collect::<Result<Vec<_>, _>>()?;
                routed
                    .entry(*pane)
                    .or_default()
                    .push(RecordBatch::try_new(b.schema(), cols)?);
            }
        }
        let mut counts = vec![0; self.shards.max(1)];
        for (pane, batches) in routed {
            let state = match self.panes.entry(pane) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(ShardedState::new(self.spec.clone(), self.shards)?)
                }
            };
            for (c, n) in counts.iter_mut().zip(state.merge(&batches)?) {
                *c += n;
            }
        }
        Ok(counts)
    }

    /// Append mode: the windows whose end the watermark has reached and that were not
    /// emitted yet, then frees the panes no open window needs.
    pub fn emit_closed(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        if self.is_session() {
            let (closed, open) = super::session::close_sessions(
                &self.spec,
                self.window.key_index,
                &self.sessions,
                watermark,
            )?;
            self.sessions = open;
            return Ok(closed);
        }
        let kind = self.window.kind;
        let (slide, size) = (kind.slide(), kind.size());
        // Window starts with end <= watermark, not emitted before, that have a pane.
        let mut starts: Vec<i64> = self
            .panes
            .keys()
            .flat_map(|p| kind.windows_of_pane(*p).collect::<Vec<_>>())
            .filter(|s| {
                s.saturating_add(size) <= watermark && self.emitted_through.is_none_or(|e| *s > e)
            })
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let mut out = Vec::new();
        for s in &starts {
            out.extend(self.assemble(*s)?);
        }
        if let Some(last) = starts.last() {
            self.emitted_through = Some(*last);
        }
        // A pane is needed until the last window holding it closes.
        self.panes
            .retain(|p, _| crate::exec::window::floor(*p, slide).saturating_add(size) > watermark);
        Ok(out)
    }

    /// Update mode (tumbling windows): the window groups changed since the last emit;
    /// then drops windows the watermark closed.
    pub fn emit_changed(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for state in self.panes.values_mut() {
            out.extend(state.emit(true)?);
        }
        let size = self.window.kind.size();
        self.panes.retain(|p, _| p.saturating_add(size) > watermark);
        Ok(out)
    }

    /// Complete mode: every window in state (state is never dropped).
    pub fn emit_all(&mut self) -> Result<Vec<RecordBatch>> {
        let kind = self.window.kind;
        let mut starts: Vec<i64> = self
            .panes
            .keys()
            .flat_map(|p| kind.windows_of_pane(*p).collect::<Vec<_>>())
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let mut out = Vec::new();
        for s in starts {
            out.extend(self.assemble(s)?);
        }
        Ok(out)
    }

    /// Keys + final values of the window starting at `start`: its panes' states merged
    /// with the window column rewritten to the window.
    fn assemble(&mut self, start: i64) -> Result<Vec<RecordBatch>> {
        let kind = self.window.kind;
        if let WindowKind::Tumble { .. } = kind {
            return match self.panes.get_mut(&start) {
                Some(p) => p.emit(false),
                None => Ok(Vec::new()),
            };
        }
        let pane = kind.pane();
        let mut parts = Vec::new();
        let mut p = start;
        while p < start + kind.size() {
            if let Some(state) = self.panes.get_mut(&p) {
                for b in state.snapshot()? {
                    parts.push(self.with_window(&b, start)?);
                }
            }
            p += pane;
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let mut window = ShardedState::new(self.spec.clone(), 1)?;
        let _ = window.merge(&parts)?;
        window.emit(false)
    }

    /// `b` with its window column set to the window starting at `start`.
    fn with_window(&self, b: &RecordBatch, start: i64) -> Result<RecordBatch> {
        let starts = TimestampMillisecondArray::from(vec![start; b.num_rows()]);
        let w: ArrayRef = window_array(&starts, self.window.kind.size())?;
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols[self.window.key_index] = w;
        Ok(RecordBatch::try_new(b.schema(), cols)?)
    }
}
