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
//! Edges that can retract carry a change column ([`CHANGE`], Int8, last) holding each
//! row's kind as Flink names them: `+I` insert, `-U` the row before an update, `+U` the
//! row after it, `-D` delete. Its weight is +1 for `+I`/`+U` and -1 for `-U`/`-D` (an
//! update is `-old, +new`). Filters and projections between operators pass it through.
//! Append-only edges have no change column.

pub mod aggregate;
pub mod join;
pub mod rank;
pub mod sharded;
pub mod updating;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int8Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use std::sync::Arc;

use crate::checkpoint::{Commit, Slice, WriteKind};
use crate::exec::watermark::NO_WATERMARK;
use crate::metrics::BatchProgress;

/// Name of the change column on edges that can retract.
pub const CHANGE: &str = "__sluice_op";

/// A row's kind of change (Flink's `RowKind` codes).
pub mod kind {
    /// `+I`: a new row.
    pub const INSERT: i8 = 0;
    /// `-U`: the row as it was before an update.
    pub const UPDATE_BEFORE: i8 = 1;
    /// `+U`: the row after an update.
    pub const UPDATE_AFTER: i8 = 2;
    /// `-D`: a row that is gone.
    pub const DELETE: i8 = 3;

    /// The weight of a change: +1 adds the row, -1 takes it back.
    pub fn weight(kind: i8) -> i64 {
        match kind {
            INSERT | UPDATE_AFTER => 1,
            _ => -1,
        }
    }

    /// How Flink prints it.
    pub fn name(kind: i8) -> &'static str {
        match kind {
            INSERT => "+I",
            UPDATE_BEFORE => "-U",
            UPDATE_AFTER => "+U",
            _ => "-D",
        }
    }
}

/// What an operator emits after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every row of its result (complete output mode).
    All,
    /// The new values of the groups the batch changed (update output mode).
    Upserts,
    /// Rows that are final: windows the watermark closed (append output mode).
    Closed,
    /// The change: `-old, +new` per changed group, with the change column (into another
    /// operator, or a changelog).
    Changes,
}

/// One batch's context for an operator.
pub struct BatchContext<'a> {
    /// The input is over: close every window.
    pub close_all: bool,
    /// Where the operator adds its figures.
    pub progress: &'a mut BatchProgress,
    /// Wall clock at the batch's start (epoch ms): the state TTL's time.
    pub now_ms: i64,
    /// Rows of state the TTL removed in this batch (the operator counts them).
    pub expired: u64,
    /// Per input, its watermark as the batch starts: rows arriving from this batch on
    /// are newer (older ones are late). From sources: the minimum over the query's
    /// sources of (largest event time − delay); from a windowed aggregate: its
    /// watermark (it emits only windows ending after it); `NO_WATERMARK` without one.
    /// Interval joins drop rows at or behind it and prune the other side by it.
    pub watermarks: Vec<i64>,
    /// Rows of state the watermark removed in this batch (the operator counts them).
    pub pruned: u64,
    /// Rows dropped as late in this batch (the operator counts them).
    pub late: u64,
    /// The late rows themselves, by input, where the operator keeps them (a join's
    /// sides), for the late-data file.
    pub late_rows: Vec<(usize, RecordBatch)>,
}

impl<'a> BatchContext<'a> {
    /// A context for one batch, counting from zero.
    pub fn new(
        close_all: bool,
        progress: &'a mut BatchProgress,
        now_ms: i64,
        watermarks: Vec<i64>,
    ) -> Self {
        Self {
            close_all,
            progress,
            now_ms,
            expired: 0,
            watermarks,
            pruned: 0,
            late: 0,
            late_rows: Vec::new(),
        }
    }

    /// Input `i`'s watermark (`NO_WATERMARK` when it has none).
    pub fn watermark(&self, i: usize) -> i64 {
        self.watermarks.get(i).copied().unwrap_or(NO_WATERMARK)
    }

    /// Adds the counts and late rows of another context (a shard's).
    pub fn add(&mut self, other: Tally) {
        let (counts, late_rows) = other;
        self.expired += counts.0;
        self.pruned += counts.1;
        self.late += counts.2;
        self.late_rows.extend(late_rows);
    }

    /// Its counts: (expired, pruned, late).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.expired, self.pruned, self.late)
    }

    /// Its counts and late rows, taken out (a shard's, for [`BatchContext::add`]).
    pub fn tally(&mut self) -> Tally {
        (self.counts(), std::mem::take(&mut self.late_rows))
    }
}

/// A context's counts (expired, pruned, late) and late rows by input.
pub type Tally = ((u64, u64, u64), Vec<(usize, RecordBatch)>);

/// What a checkpoint takes from an operator.
pub struct Snapshot {
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// The rows.
    pub rows: Vec<RecordBatch>,
    /// Whether they are the whole state (else: the groups changed since the last one,
    /// and those of `slice`).
    pub full: bool,
    /// The key-group slice the rows include whole.
    pub slice: Option<Slice>,
}

/// One batch's rows for an operator: per input (the fragment below it; a two-input
/// operator such as a join has two), the batches that fragment produced.
pub type Inputs = Vec<Vec<RecordBatch>>;

/// The rows of a one-input operator's only input.
pub fn only_input(inputs: Inputs) -> Result<Vec<RecordBatch>> {
    let n = inputs.len();
    let mut it = inputs.into_iter();
    match (it.next(), n) {
        (Some(rows), 1) => Ok(rows),
        _ => Err(DataFusionError::Internal(format!(
            "a one-input operator was given {n} inputs"
        ))),
    }
}

/// A stateful operator: change batches in, change batches out, state it can snapshot
/// and restore.
pub trait Operator: Send {
    /// Merges one batch's rows (one list per input, in the stage's input order) into
    /// the state and returns what it emits.
    fn process(&mut self, inputs: Inputs, ctx: &mut BatchContext) -> Result<Vec<RecordBatch>>;

    /// The state to checkpoint: the whole of it for [`WriteKind::Full`], else the
    /// groups changed since the previous call plus every group of the slice (an
    /// operator may always answer whole).
    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot>;

    /// Rows (groups, kept rows) its state holds.
    fn state_rows(&self) -> u64;

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

/// A stable hash of key bytes (FNV-1a), for key groups of keys kept as bytes.
pub fn bytes_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The key group of each of `keys` (row bytes of a key).
pub fn row_key_groups(keys: &arrow::row::Rows) -> Vec<u64> {
    keys.iter()
        .map(|k| crate::state::key_group(bytes_hash(k.as_ref())))
        .collect()
}

/// The key group of each key in column `column` of `b` (key bytes, as state rows keep
/// them).
pub fn binary_key_groups(b: &RecordBatch, column: usize) -> Vec<u64> {
    b.column(column)
        .as_binary::<i32>()
        .iter()
        .map(|k| crate::state::key_group(bytes_hash(k.unwrap_or_default())))
        .collect()
}

/// `schema` with the change column added last.
pub fn with_change(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(CHANGE, DataType::Int8, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with the change column `kinds` added last, in `schema` (= with_change).
pub fn with_kinds(batch: &RecordBatch, kinds: Vec<i8>, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols.push(Arc::new(Int8Array::from(kinds)));
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

/// A batch with a change column, without it (its rows' columns only).
pub fn without_change(batch: &RecordBatch) -> Result<RecordBatch> {
    Ok(batch.project(&(0..batch.num_columns().saturating_sub(1)).collect::<Vec<_>>())?)
}

/// The weight of each row of a batch with a change column.
pub fn weights(batch: &RecordBatch) -> Result<Vec<i64>> {
    let col = batch.column_by_name(CHANGE).ok_or_else(|| {
        DataFusionError::Internal("updating input without its change column".into())
    })?;
    Ok(col
        .as_primitive::<Int8Type>()
        .values()
        .iter()
        .map(|k| kind::weight(*k))
        .collect())
}

/// What sinks receive for rows of `top` (the top fragment's schema) in `mode`: with
/// a change column (an updating result) or in changelog mode, an `op` column first
/// (`+I`, `-U`, `+U`, `-D`) and the rows' columns; otherwise the rows as they are.
pub fn output_schema(top: &SchemaRef, mode: crate::exec::OutputMode) -> SchemaRef {
    let changes = has_change(top);
    if !changes && mode != crate::exec::OutputMode::Changelog {
        return Arc::clone(top);
    }
    let n = top.fields().len() - usize::from(changes);
    let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
    fields.extend(top.fields().iter().take(n).cloned());
    Arc::new(Schema::new_with_metadata(fields, top.metadata().clone()))
}

/// Whether rows of `schema` carry the change column.
pub fn has_change(schema: &SchemaRef) -> bool {
    schema.fields().last().is_some_and(|f| f.name() == CHANGE)
}

/// The top fragment's rows as sinks receive them (see [`output_schema`]); update mode
/// leaves out the `-U` rows (the `+U` that follows is the upsert).
pub fn output_rows(
    batches: Vec<RecordBatch>,
    out: &SchemaRef,
    mode: crate::exec::OutputMode,
) -> Result<Vec<RecordBatch>> {
    let mut rows = Vec::with_capacity(batches.len());
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let changes = has_change(&b.schema());
        if !changes && mode != crate::exec::OutputMode::Changelog {
            rows.push(b);
            continue;
        }
        let n = b.num_columns() - usize::from(changes);
        let kinds: Vec<i8> = match changes {
            true => b.column(n).as_primitive::<Int8Type>().values().to_vec(),
            false => vec![kind::INSERT; b.num_rows()],
        };
        let ops = StringArray::from_iter_values(kinds.iter().map(|k| kind::name(*k)));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(ops)];
        cols.extend(b.columns()[..n].iter().cloned());
        let mut batch = RecordBatch::try_new(Arc::clone(out), cols)?;
        if mode == crate::exec::OutputMode::Update {
            let keep =
                BooleanArray::from_iter(kinds.iter().map(|k| Some(*k != kind::UPDATE_BEFORE)));
            batch = arrow::compute::filter_record_batch(&batch, &keep)?;
        }
        rows.push(batch);
    }
    Ok(rows)
}
