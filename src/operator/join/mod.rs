//! Stream–stream joins (inner, left, right, full outer) on equality keys plus any
//! extra condition: a two-input operator that keeps each side's rows by join key.
//!
//! ```text
//!  Δleft  ──► probe right's state ──► Δleft ⋈ right      then insert Δleft
//!  Δright ──► probe left's state  ──► left' ⋈ Δright     then insert Δright
//!                                     (left' = left with Δleft in it)
//! ```
//! A batch's output is `Δleft ⋈ right + left' ⋈ Δright`, the change of the join's
//! result, with weights multiplied (a row taken back from an updating input takes its
//! joined rows back). Outer joins emit a row with nulls for the other side while it
//! matches nothing, and take that row back (`-D`) when its first match arrives; each
//! kept row counts its matches for this. An inner join of append-only inputs emits
//! append-only rows; outer joins and joins of updating inputs emit changes (`+I`/`-D`).
//!
//! State grows with both inputs unless `state_ttl` drops keys not updated for that
//! long (then a late match is missed, as in Flink), or the condition bounds the two
//! sides' event times ([`interval`]): then rows leave as the watermark passes them.

pub mod interval;
mod side;
mod store;

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{take, take_record_batch};
use arrow::datatypes::SchemaRef;
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::joins::utils::{build_join_schema, JoinFilter};

use super::{kind, BatchContext, Emit, Inputs, Operator, Snapshot};
use crate::checkpoint::{Commit, WriteKind};
use crate::exec::watermark::NO_WATERMARK;
use crate::metrics::BatchProgress;
use interval::Interval;
use side::{Delta, Side, SideTime};
use store::Place;

/// What a stream–stream join computes, as planned.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Inner, left, right or full.
    pub join_type: JoinType,
    /// Equality keys `(left, right)`, over each side's rows.
    pub on: Vec<(PhysicalExprRef, PhysicalExprRef)>,
    /// The rest of the ON condition.
    pub filter: Option<JoinFilter>,
    /// Columns of `left ++ right` the join outputs (all when `None`).
    pub projection: Option<Vec<usize>>,
    /// Whether null keys match each other.
    pub null_equality: NullEquality,
    /// Each side's rows (without a change column).
    pub schemas: [SchemaRef; 2],
    /// Whether each side's input carries a change column.
    pub updating: [bool; 2],
    /// What the join outputs (after the projection, without a change column).
    pub output_schema: SchemaRef,
    /// Bounds the condition puts on the sides' event times (an interval join).
    pub interval: Option<Interval>,
}

impl JoinSpec {
    /// Refuses joins a stream cannot run.
    pub fn check(&self) -> Result<()> {
        match self.join_type {
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {}
            JoinType::LeftSemi | JoinType::RightSemi | JoinType::LeftAnti | JoinType::RightAnti => {
            }
            other => {
                return Err(DataFusionError::Plan(format!(
                    "a {other} join of two streams is not supported; write it as an inner join"
                )))
            }
        }
        if self.on.is_empty() {
            return Err(DataFusionError::Plan(
                "a join of two streams needs an equality condition (ON a.k = b.k)".into(),
            ));
        }
        Ok(())
    }

    /// Whether side `s` keeps its unmatched rows (null-padded).
    fn preserves(&self, s: usize) -> bool {
        matches!(
            (self.join_type, s),
            (JoinType::Left, 0) | (JoinType::Right, 1) | (JoinType::Full, _)
        )
    }

    /// The side a semi or anti join outputs the rows of (with whether it is a semi
    /// join: rows with a match; anti: rows without one).
    fn filters(&self) -> Option<(usize, bool)> {
        match self.join_type {
            JoinType::LeftSemi => Some((0, true)),
            JoinType::RightSemi => Some((1, true)),
            JoinType::LeftAnti => Some((0, false)),
            JoinType::RightAnti => Some((1, false)),
            _ => None,
        }
    }

    /// Whether side `s`'s rows need their match counts: a preserved side, or the side
    /// a semi or anti join outputs.
    fn counts(&self, s: usize) -> bool {
        self.preserves(s) || self.filters().is_some_and(|(f, _)| f == s)
    }

    /// Whether side `s`'s rows are output while they match nothing (an outer join's
    /// preserved side, null-padded; an anti join's side). A semi join's side is output
    /// while it matches something instead.
    fn lonely_out(&self, s: usize) -> bool {
        self.preserves(s) || self.filters() == Some((s, false))
    }

    /// Whether its output can take rows back (an outer or anti join, or an updating
    /// input). A semi join of append-only inputs only adds rows: matches never go.
    pub fn emits_changes(&self) -> bool {
        let semi = matches!(self.join_type, JoinType::LeftSemi | JoinType::RightSemi);
        !(self.join_type == JoinType::Inner || semi) || self.updating.iter().any(|u| *u)
    }
}

/// The join operator.
pub struct JoinOp {
    spec: JoinSpec,
    emit: Emit,
    /// `left ++ right`, as the filter's column indices and the projection see it.
    joined: SchemaRef,
    out_schema: SchemaRef,
    sides: [Side; 2],
    /// Pairs that passed the ON condition, over the run.
    matched: u64,
    /// Each input's watermark in the last batch (interval joins).
    watermarks: [i64; 2],
}

/// Joined rows one batch emits, with their weights.
#[derive(Default)]
struct Emitted {
    batches: Vec<RecordBatch>,
    weights: Vec<i64>,
}

impl JoinOp {
    /// Empty state for `spec`, emitting per `emit` (changes, or final rows).
    pub fn new(spec: &JoinSpec, emit: Emit, ttl_ms: Option<i64>) -> Result<Self> {
        // Pairs and padded rows in `left ++ right`; semi and anti joins output one
        // side's columns of them, so both sides may be null there (as in a full join).
        let pairs_type = match spec.filters() {
            Some(_) => JoinType::Full,
            None => spec.join_type,
        };
        let (joined, _) = build_join_schema(&spec.schemas[0], &spec.schemas[1], &pairs_type);
        let out_schema = match emit {
            Emit::Changes => super::with_change(&spec.output_schema),
            _ => Arc::clone(&spec.output_schema),
        };
        let side = |s: usize| {
            let on = spec
                .on
                .iter()
                .map(|(l, r)| Arc::clone(if s == 0 { l } else { r }))
                .collect();
            let time = spec
                .interval
                .map(|i| SideTime::new(i.columns[s], i.keep_ms(s)));
            let schema = Arc::clone(&spec.schemas[s]);
            Side::new(on, schema, spec.null_equality, ttl_ms, time)
        };
        Ok(Self {
            sides: [side(0)?, side(1)?],
            spec: spec.clone(),
            emit,
            joined: Arc::new(joined),
            out_schema,
            matched: 0,
            watermarks: [NO_WATERMARK; 2],
        })
    }

    /// Joins a batch of side `d` with the other side's state, then keeps its rows.
    fn apply(&mut self, d: usize, b: &RecordBatch, now: i64, out: &mut Emitted) -> Result<()> {
        let o = 1 - d;
        let watermark = self.watermarks[d];
        let delta = self.sides[d].delta(b, self.spec.updating[d], watermark)?;
        let n = delta.batch.num_rows();
        // Candidates: (delta row, entry of the other side's list for its key, where
        // that row is).
        let (mut rows, mut entries, mut places) = (Vec::new(), Vec::new(), Vec::new());
        let mut other_weights = Vec::new();
        for r in 0..n {
            if delta.unmatchable[r] {
                continue;
            }
            if let Some(list) = self.sides[o].get(delta.keys.row(r).as_ref()) {
                for (j, e) in list.iter().enumerate() {
                    rows.push(r as u32);
                    entries.push(j);
                    places.push(e.at);
                    other_weights.push(e.weight);
                }
            }
        }
        let (pairs, passed) = self.candidates(d, &delta, &rows, &places)?;
        let mut delta_matches = vec![0i64; n];
        let mut pair_weights = Vec::new();
        let mut kept = Vec::new();
        let mut unpadded = Vec::new(); // other side's rows whose null-padded row changes
        for (k, (&r, &j)) in rows.iter().zip(&entries).enumerate() {
            if !passed[k] {
                continue;
            }
            let r = r as usize;
            let key = delta.keys.row(r);
            let w = delta.weights[r];
            let other_weight = other_weights[k];
            kept.push(k as u32);
            pair_weights.push(w * other_weight);
            delta_matches[r] += other_weight;
            if !self.spec.counts(o) {
                continue; // only a preserved (or semi / anti) side's rows count matches
            }
            let (before, after) = self.sides[o].add_matches(key.as_ref(), j, w, now);
            if (before == 0) != (after == 0) {
                // Its null-padded (or anti) row goes at its first match and comes back
                // when the last one goes; a semi join's row does the opposite.
                let lonely = if before == 0 { -1 } else { 1 };
                let sign = if self.spec.lonely_out(o) {
                    lonely
                } else {
                    -lonely
                };
                unpadded.push((places[k], sign * other_weight));
            }
        }
        self.matched += kept.len() as u64;
        if let Some(pairs) = pairs.filter(|_| self.spec.filters().is_none()) {
            let pairs = match kept.len() == pairs.num_rows() {
                true => pairs, // every candidate passed
                false => take_record_batch(&pairs, &UInt32Array::from(kept))?,
            };
            out.batches.push(pairs);
            out.weights.extend(pair_weights);
        }
        self.padded_others(o, unpadded, out)?;
        self.padded_deltas(d, &delta, &delta_matches, out)?;
        let merge = self.spec.updating[d];
        self.sides[d].keep(delta, &delta_matches, merge, now)
    }

    /// The candidate pairs as joined rows (`None` when there are none) and whether each
    /// passes the ON condition's non-equality part.
    fn candidates(
        &self,
        d: usize,
        delta: &Delta,
        rows: &[u32],
        places: &[Place],
    ) -> Result<(Option<RecordBatch>, Vec<bool>)> {
        if rows.is_empty() {
            return Ok((None, Vec::new()));
        }
        if self.spec.filter.is_none() && self.spec.filters().is_some() {
            // A semi or anti join outputs no pairs: without a condition to evaluate
            // over them, every candidate matches.
            return Ok((None, vec![true; rows.len()]));
        }
        let o = 1 - d;
        let picked = UInt32Array::from(rows.to_vec());
        let delta_cols = delta
            .batch
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &picked, None))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let other_cols = self.sides[o].gather(places)?;
        let (left, right) = match d {
            0 => (delta_cols, other_cols),
            _ => (other_cols, delta_cols),
        };
        let pairs = self.joined_batch(left, right)?;
        let passed = match &self.spec.filter {
            None => vec![true; rows.len()],
            Some(f) => filter_mask(f, &pairs, self.spec.schemas[0].fields().len())?,
        };
        Ok((Some(pairs), passed))
    }

    /// `left ++ right` columns as a batch of the joined schema.
    fn joined_batch(&self, left: Vec<ArrayRef>, right: Vec<ArrayRef>) -> Result<RecordBatch> {
        let mut cols = left;
        cols.extend(right);
        Ok(RecordBatch::try_new(Arc::clone(&self.joined), cols)?)
    }

    /// Rows of side `s` with nulls for the other side's columns.
    fn padded(&self, s: usize, cols: Vec<ArrayRef>) -> Result<RecordBatch> {
        let n = cols.first().map_or(0, |c| c.len());
        let nulls: Vec<ArrayRef> = self.spec.schemas[1 - s]
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        match s {
            0 => self.joined_batch(cols, nulls),
            _ => self.joined_batch(nulls, cols),
        }
    }

    /// The null-padded rows of kept rows of side `s` whose first match arrived (weight
    /// < 0) or whose last match left (> 0).
    fn padded_others(&self, s: usize, rows: Vec<(Place, i64)>, out: &mut Emitted) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let places: Vec<Place> = rows.iter().map(|(p, _)| *p).collect();
        let cols = self.sides[s].gather(&places)?;
        out.batches.push(self.padded(s, cols)?);
        out.weights.extend(rows.iter().map(|(_, w)| *w));
        Ok(())
    }

    /// The null-padded rows of a preserved (or anti) side's delta rows that match
    /// nothing; for a semi join's side, its delta rows that match something.
    fn padded_deltas(
        &self,
        d: usize,
        delta: &Delta,
        matches: &[i64],
        out: &mut Emitted,
    ) -> Result<()> {
        if !self.spec.counts(d) {
            return Ok(());
        }
        let lonely_out = self.spec.lonely_out(d);
        let lonely: Vec<u32> = (0..delta.batch.num_rows())
            .filter(|r| (matches[*r] == 0) == lonely_out)
            .map(|r| r as u32)
            .collect();
        if lonely.is_empty() {
            return Ok(());
        }
        out.weights
            .extend(lonely.iter().map(|r| delta.weights[*r as usize]));
        let rows = take_record_batch(&delta.batch, &UInt32Array::from(lonely))?;
        out.batches.push(self.padded(d, rows.columns().to_vec())?);
        Ok(())
    }

    /// What the batch emits: the joined rows projected, each repeated by its weight's
    /// size, with their kind (`+I` / `-D`) when the join emits changes. Batch by
    /// batch: an inner join's pairs (all of weight 1) go out without a copy.
    fn finish(&self, out: Emitted) -> Result<Vec<RecordBatch>> {
        let mut emitted = Vec::with_capacity(out.batches.len());
        let mut weights = out.weights.as_slice();
        for b in out.batches {
            let (these, rest) = weights.split_at(b.num_rows().min(weights.len()));
            weights = rest;
            if let Some(rows) = self.finish_batch(b, these)? {
                emitted.push(rows);
            }
        }
        Ok(emitted)
    }

    /// One batch of joined rows with their weights, as [`JoinOp::finish`] emits it.
    fn finish_batch(&self, all: RecordBatch, weights: &[i64]) -> Result<Option<RecordBatch>> {
        let mut all = all;
        let kinds = match weights.iter().all(|w| *w == 1) {
            true => vec![kind::INSERT; weights.len()],
            false => {
                let mut picked = Vec::with_capacity(weights.len());
                let mut kinds = Vec::with_capacity(weights.len());
                for (i, w) in weights.iter().enumerate() {
                    let k = if *w > 0 { kind::INSERT } else { kind::DELETE };
                    for _ in 0..w.unsigned_abs() {
                        picked.push(i as u32);
                        kinds.push(k);
                    }
                }
                all = take_record_batch(&all, &UInt32Array::from(picked))?;
                kinds
            }
        };
        if kinds.is_empty() {
            return Ok(None);
        }
        if let Some((s, _)) = self.spec.filters() {
            // A semi or anti join outputs one side's columns.
            let left_width = self.spec.schemas[0].fields().len();
            let cols: Vec<usize> = match s {
                0 => (0..left_width).collect(),
                _ => (left_width..all.num_columns()).collect(),
            };
            all = all.project(&cols)?;
        }
        let cols: Vec<ArrayRef> = match &self.spec.projection {
            Some(p) => p.iter().map(|i| Arc::clone(all.column(*i))).collect(),
            None => all.columns().to_vec(),
        };
        let rows = RecordBatch::try_new(Arc::clone(&self.spec.output_schema), cols)?;
        match self.emit {
            Emit::Changes => Ok(Some(super::with_kinds(&rows, kinds, &self.out_schema)?)),
            _ if kinds.iter().any(|k| *k != kind::INSERT) => Err(DataFusionError::Internal(
                "an append-only join emitted a retraction".into(),
            )),
            _ => Ok(Some(rows)),
        }
    }
}

/// Whether each joined row passes `filter` (a null result does not); the left side's
/// columns are the first `left_width` of `joined`.
fn filter_mask(filter: &JoinFilter, joined: &RecordBatch, left_width: usize) -> Result<Vec<bool>> {
    let cols: Vec<ArrayRef> = filter
        .column_indices()
        .iter()
        .map(|c| match c.side {
            JoinSide::Left => Arc::clone(joined.column(c.index)),
            _ => Arc::clone(joined.column(left_width + c.index)),
        })
        .collect();
    let rows = RecordBatchOptions::new().with_row_count(Some(joined.num_rows()));
    let intermediate = RecordBatch::try_new_with_options(Arc::clone(filter.schema()), cols, &rows)?;
    let n = intermediate.num_rows();
    let result = filter.expression().evaluate(&intermediate)?.into_array(n)?;
    let mask = result
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal("a join condition that is not boolean".into()))?;
    Ok((0..n).map(|i| mask.is_valid(i) && mask.value(i)).collect())
}

impl Operator for JoinOp {
    fn process(&mut self, inputs: Inputs, ctx: &mut BatchContext) -> Result<Vec<RecordBatch>> {
        let [left, right]: [Vec<RecordBatch>; 2] = inputs.try_into().map_err(|i: Inputs| {
            DataFusionError::Internal(format!("a join was given {} inputs", i.len()))
        })?;
        // A side's rows that the other input's watermark has passed can match none of
        // its rows to come (all newer).
        self.watermarks = [ctx.watermark(0), ctx.watermark(1)];
        for (i, s) in self.sides.iter_mut().enumerate() {
            ctx.expired += s.expire(ctx.now_ms);
            let other = self.watermarks[1 - i];
            if other != NO_WATERMARK {
                ctx.pruned += s.prune(other);
            }
        }
        let late_before: u64 = self.sides.iter().map(|s| s.late).sum();
        let mut out = Emitted::default();
        for b in left.iter().filter(|b| b.num_rows() > 0) {
            self.apply(0, b, ctx.now_ms, &mut out)?;
        }
        for b in right.iter().filter(|b| b.num_rows() > 0) {
            self.apply(1, b, ctx.now_ms, &mut out)?;
        }
        ctx.late += self.sides.iter().map(|s| s.late).sum::<u64>() - late_before;
        for (i, s) in self.sides.iter_mut().enumerate() {
            ctx.late_rows
                .extend(s.dropped.drain(..).map(|rows| (i, rows)));
        }
        self.finish(out)
    }

    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot> {
        let (full, slice) = kind.parts();
        let also = |k: &[u8]| {
            slice.is_some_and(|s| s.covers(crate::state::key_group(super::bytes_hash(k))))
        };
        let mut rows = Vec::new();
        for (i, s) in self.sides.iter_mut().enumerate() {
            rows.extend(s.state_rows(i as i8, full, also)?);
        }
        Ok(Snapshot {
            schema: Side::state_schema(),
            rows,
            full,
            slice,
        })
    }

    fn state_rows(&self) -> u64 {
        self.sides.iter().map(|s| s.entries() as u64).sum()
    }

    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        _: &Commit,
    ) -> Result<()> {
        let restored_at = crate::gen::wall_ms();
        let mut files: Vec<&[RecordBatch]> = vec![full];
        files.extend(deltas.iter().map(Vec::as_slice));
        for (i, s) in self.sides.iter_mut().enumerate() {
            s.restore(i as i8, &files, restored_at)?;
        }
        Ok(())
    }

    fn describe(&self, p: &mut BatchProgress) {
        p.join_sides.resize(2, Default::default());
        for (s, figures) in self.sides.iter().zip(p.join_sides.iter_mut()) {
            p.state_groups += s.entries();
            p.state_bytes += s.bytes();
            figures.add(&s.figures());
        }
        p.join_matches += self.matched;
        let watermark = self.watermarks[0].min(self.watermarks[1]);
        if self.spec.interval.is_some() && watermark != NO_WATERMARK {
            p.watermark.get_or_insert(watermark);
        }
    }
}

impl super::sharded::Keyed for JoinOp {
    fn input_groups(&self, input: usize, b: &RecordBatch) -> Result<Vec<u64>> {
        let side = self
            .sides
            .get(input)
            .ok_or_else(|| DataFusionError::Internal(format!("a join has no input {input}")))?;
        Ok(super::row_key_groups(&side.key_rows(b)?.0))
    }

    fn state_groups(&self, b: &RecordBatch) -> Result<Vec<u64>> {
        Ok(super::binary_key_groups(b, 1))
    }
}
