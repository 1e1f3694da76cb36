//! Stateful operators of the dataflow (design.md, "Data flow"): what a query keeps
//! between batches, behind one trait.
//!
//! ```text
//!  fragment (DataFusion plan over the batch) ──► Operator::process ──► output rows
//!        ▲ input leaves: sources, or the output of the operators below
//!        │                                 state in key groups ──► snapshot / delta
//! ```
//! The micro-batch loop runs each stage's fragment, hands its rows to the stage's
//! operator, and puts what the operator emits where the next fragment reads it. An
//! operator owns its state: it merges the batch into it, emits per its [`Emit`], and
//! gives the checkpoint a full snapshot or the delta since the last one.
//!
//! Edges that can retract carry a weight column ([`WEIGHT`], Int64, last): `+1` adds a
//! row, `-1` takes one back (an update is `-old, +new`). Filters and projections between
//! operators pass it through. Append-only edges have no weight column.

pub mod aggregate;
pub mod updating;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;
use std::sync::Arc;

use crate::checkpoint::Commit;
use crate::exec::watermark::NO_WATERMARK;
use crate::metrics::BatchProgress;

/// Name of the weight column on edges that can retract.
pub const WEIGHT: &str = "__sluice_weight";

/// What an operator emits after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every row of its result (complete output mode).
    All,
    /// The new values of the groups the batch changed (update output mode).
    Upserts,
    /// Rows that are final: windows the watermark closed (append output mode).
    Closed,
    /// The change: `-old, +new` per changed group, with the weight column (into another
    /// operator).
    Changes,
}

/// One batch's context for an operator.
pub struct BatchContext<'a> {
    /// The input is over: close every window.
    pub close_all: bool,
    /// Where the operator adds its figures.
    pub progress: &'a mut BatchProgress,
}

/// What a checkpoint takes from an operator.
pub struct Snapshot {
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// The rows.
    pub rows: Vec<RecordBatch>,
    /// Whether they are the whole state (else: the groups changed since the last one).
    pub full: bool,
}

/// A stateful operator: change batches in, change batches out, state it can snapshot
/// and restore.
pub trait Operator: Send {
    /// Merges one batch's input (the rows of the fragment below) into the state and
    /// returns what it emits.
    fn process(
        &mut self,
        input: Vec<RecordBatch>,
        ctx: &mut BatchContext,
    ) -> Result<Vec<RecordBatch>>;

    /// The state to checkpoint: the whole of it with `full`, else the groups changed
    /// since the previous call (an operator may always answer whole).
    fn snapshot(&mut self, full: bool) -> Result<Snapshot>;

    /// Restores a full snapshot and the deltas written after it into empty state.
    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        commit: &Commit,
    ) -> Result<()>;

    /// Adds its state figures (groups, bytes, panes, watermark) to `p`.
    fn describe(&self, p: &mut BatchProgress);

    /// Watermark, largest event time and last emitted window, for the commit.
    fn time(&self) -> (i64, i64, Option<i64>) {
        (NO_WATERMARK, NO_WATERMARK, None)
    }

    /// Whether windows are still open.
    fn has_open_windows(&self) -> bool {
        false
    }
}

/// `schema` with the weight column added last.
pub fn with_weight(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(WEIGHT, DataType::Int64, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with a constant weight column added last, in `schema` (= with_weight).
pub fn weighted(batch: &RecordBatch, weight: i64, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols.push(Arc::new(Int64Array::from_value(weight, batch.num_rows())));
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}
