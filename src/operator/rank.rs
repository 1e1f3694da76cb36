//! Top-N per key: `row_number()` / `rank()` / `dense_rank()` `OVER (PARTITION BY k
//! ORDER BY …)` filtered by `<= N` (N = 1: dedup, Flink's Deduplicate keeping the first
//! or last row by the order). The state keeps, per partition key, the best N rows in
//! order; a batch's rows that rank inside are inserted, rows pushed out are dropped.
//!
//! ```text
//!  key k: [r1, r2, r3]  + row x ranking 2nd  ─►  [r1, x, r2]   emits  -U r2@2 +U x@2
//!                                                               -U r3@3 +U r2@3
//! ```
//! The result's unique key is (partition key, rank): each position that changed emits
//! its old row (`-U`) and its new one (`+U`); a new position is `+I`, a position gone
//! (ties left the top with `rank()`) is `-D`. Rows are kept as arrow row bytes, so any
//! column type works.
//!
//! Over an updating input (the changing result of a GROUP BY) a row can be taken back:
//! the state then keeps every row of each key, not only the best N, so the next row
//! moves up when a ranked one leaves (Flink's retractable top-N does the same; its state
//! grows with the input's rows).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::{kind, BatchContext, Emit, Operator, Snapshot};
use crate::checkpoint::{Commit, WriteKind};
use crate::metrics::BatchProgress;
use crate::state::ttl::TouchClock;

/// Which rank function numbers the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankFunction {
    /// 1, 2, 3, … (ties in arrival order).
    RowNumber,
    /// Ties share a rank; the next rank skips (1, 1, 3).
    Rank,
    /// Ties share a rank; the next rank does not skip (1, 1, 2).
    DenseRank,
}

/// What a top-N computes.
#[derive(Debug, Clone)]
pub struct RankSpec {
    /// The numbering.
    pub function: RankFunction,
    /// PARTITION BY expressions over the input rows.
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// ORDER BY expressions over the input rows.
    pub order_by: Vec<PhysicalSortExpr>,
    /// Rows ranked above this are dropped.
    pub limit: u64,
    /// The input rows' schema.
    pub input_schema: SchemaRef,
    /// Input columns + the rank column.
    pub output_schema: SchemaRef,
    /// Whether the input carries a change column (rows can be taken back).
    pub updating: bool,
}

/// One kept row: its order key and the row itself, as row bytes.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    order: Box<[u8]>,
    row: Box<[u8]>,
}

/// The top-N operator.
pub struct RankOp {
    spec: RankSpec,
    emit: Emit,
    changes: SchemaRef,
    partition_rows: RowConverter,
    order_rows: RowConverter,
    input_rows: RowConverter,
    lists: hashbrown::HashMap<Box<[u8]>, Vec<Entry>>,
    /// Lists as they were before this batch, for the keys it touched.
    before: hashbrown::HashMap<Box<[u8]>, Vec<Entry>>,
    /// Keys changed since the last checkpoint delta.
    dirty: hashbrown::HashSet<Box<[u8]>>,
    /// Rows kept over all keys, and their bytes.
    entries: usize,
    bytes: usize,
    /// With a state TTL: when each key's list last changed, and the batch's time.
    clock: Option<TouchClock<Box<[u8]>>>,
    now: i64,
}

impl RankOp {
    /// Empty state for `spec`.
    pub fn new(spec: &RankSpec, emit: Emit, ttl_ms: Option<i64>) -> Result<Self> {
        let schema = &spec.input_schema;
        let types = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            exprs
                .map(|e| e.data_type(schema))
                .collect::<Result<Vec<DataType>>>()
        };
        let mut partition_fields: Vec<SortField> = types(&mut spec.partition_by.iter())?
            .into_iter()
            .map(SortField::new)
            .collect();
        if partition_fields.is_empty() {
            partition_fields.push(SortField::new(DataType::Null));
        }
        let order_fields = spec
            .order_by
            .iter()
            .map(|s| {
                Ok(SortField::new_with_options(
                    s.expr.data_type(schema)?,
                    s.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let input_fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            changes: super::with_change(&spec.output_schema),
            spec: spec.clone(),
            emit,
            partition_rows: RowConverter::new(partition_fields)?,
            order_rows: RowConverter::new(order_fields)?,
            input_rows: RowConverter::new(input_fields)?,
            lists: Default::default(),
            before: Default::default(),
            dirty: Default::default(),
            entries: 0,
            bytes: 0,
            clock: ttl_ms.map(TouchClock::new),
            now: 0,
        })
    }

    /// Drops the keys whose list the TTL expired (emitting changes: their ranked rows
    /// leave with `-D`). Returns the rows dropped.
    fn expire(&mut self, now: i64) -> u64 {
        self.now = now;
        let Some(c) = &mut self.clock else { return 0 };
        let mut dropped = 0;
        for key in c.expired(now) {
            self.touch(&key);
            if let Some(c) = &mut self.clock {
                c.forget(&key); // gone: touch() does not bring it back to life
            }
            if let Some(list) = self.lists.remove(&key) {
                dropped += list.len() as u64;
                self.entries -= list.len();
                let bytes: usize = list.iter().map(|e| e.order.len() + e.row.len() + 32).sum();
                self.bytes = self.bytes.saturating_sub(bytes);
            }
        }
        dropped
    }

    fn partition_keys(&self, b: &RecordBatch) -> Result<arrow::row::Rows> {
        let n = b.num_rows();
        let mut cols = self
            .spec
            .partition_by
            .iter()
            .map(|e| e.evaluate(b)?.into_array(n))
            .collect::<Result<Vec<ArrayRef>>>()?;
        if cols.is_empty() {
            cols.push(arrow::array::new_null_array(&DataType::Null, n));
        }
        Ok(self.partition_rows.convert_columns(&cols)?)
    }

    /// Merges a batch: appended rows, or rows with their change column.
    fn merge(&mut self, b: &RecordBatch) -> Result<()> {
        if !self.spec.updating {
            return self.insert(b, None);
        }
        let weights = super::weights(b)?;
        let rows = super::without_change(b)?;
        self.insert(&rows, Some(&weights))
    }

    /// Remembers `part`'s ranked rows as they were before this batch, and marks it for
    /// the next checkpoint delta.
    fn touch(&mut self, part: &[u8]) {
        if let Some(c) = &mut self.clock {
            c.touch(&Box::from(part), self.now);
        }
        if !self.before.contains_key(part) {
            let list = self.lists.get(part).map(Vec::as_slice).unwrap_or(&[]);
            let top = list[..kept(self.spec.function, list, self.spec.limit)].to_vec();
            self.before.insert(part.into(), top);
        }
        if !self.dirty.contains(part) {
            self.dirty.insert(part.into());
        }
    }

    /// Adds (weight +1, or no weights) and takes back (-1) the rows of `b`.
    fn insert(&mut self, b: &RecordBatch, weights: Option<&[i64]>) -> Result<()> {
        let n = b.num_rows();
        let parts = self.partition_keys(b)?;
        let order_cols = self
            .spec
            .order_by
            .iter()
            .map(|s| s.expr.evaluate(b)?.into_array(n))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let orders = self.order_rows.convert_columns(&order_cols)?;
        let rows = self.input_rows.convert_columns(b.columns())?;
        for r in 0..n {
            let (part, order, row) = (parts.row(r), orders.row(r), rows.row(r));
            let (part, order) = (part.as_ref(), order.as_ref());
            if weights.is_some_and(|w| w[r] < 0) {
                self.take_back(part, order, row.as_ref());
                continue;
            }
            let list = self.lists.get(part).map(Vec::as_slice).unwrap_or(&[]);
            // Without retractions a row that cannot rank inside the list changes nothing.
            let pos = list.partition_point(|e| e.order.as_ref() <= order);
            let full = list.len() as u64 >= self.spec.limit;
            let row_number = self.spec.function == RankFunction::RowNumber;
            if weights.is_none() && full && pos >= list.len() && row_number {
                continue;
            }
            self.touch(part);
            let entry = Entry {
                order: order.into(),
                row: row.as_ref().into(),
            };
            self.bytes += entry.order.len() + entry.row.len() + 32;
            self.entries += 1;
            let list = match self.lists.get_mut(part) {
                Some(l) => l,
                None => self.lists.entry(part.into()).or_default(),
            };
            list.insert(pos, entry);
            if weights.is_some() {
                continue; // every row stays: it may rank once a better one leaves
            }
            let keep = kept(self.spec.function, list, self.spec.limit);
            for e in list.drain(keep..) {
                self.entries -= 1;
                self.bytes = self.bytes.saturating_sub(e.order.len() + e.row.len() + 32);
            }
        }
        Ok(())
    }

    /// Takes one copy of a row back from its key's list (a row never added is ignored:
    /// an updating input only retracts what it emitted).
    fn take_back(&mut self, part: &[u8], order: &[u8], row: &[u8]) {
        let Some(list) = self.lists.get(part) else {
            return;
        };
        let from = list.partition_point(|e| e.order.as_ref() < order);
        let Some(at) = list[from..]
            .iter()
            .take_while(|e| e.order.as_ref() == order)
            .position(|e| e.row.as_ref() == row)
        else {
            return;
        };
        self.touch(part);
        let Some(list) = self.lists.get_mut(part) else {
            return;
        };
        let e = list.remove(from + at);
        self.entries -= 1;
        self.bytes = self.bytes.saturating_sub(e.order.len() + e.row.len() + 32);
        if list.is_empty() {
            self.lists.remove(part);
        }
    }

    /// Rows (with their ranks) as the output schema, in `kinds`' order.
    fn rows_of(&self, entries: &[(&Entry, u64)]) -> Result<(RecordBatch, usize)> {
        let parser = self.input_rows.parser();
        let cols = self
            .input_rows
            .convert_rows(entries.iter().map(|(e, _)| parser.parse(&e.row)))?;
        let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            entries.iter().map(|(_, r)| *r),
        ));
        let rank_type = self
            .spec
            .output_schema
            .fields()
            .last()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::UInt64);
        let mut all = cols;
        all.push(cast(&ranks, &rank_type)?);
        Ok((
            RecordBatch::try_new(Arc::clone(&self.spec.output_schema), all)?,
            entries.len(),
        ))
    }

    /// Every kept row with its rank.
    fn all_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut entries = Vec::new();
        let mut keys: Vec<&Box<[u8]>> = self.lists.keys().collect();
        keys.sort_unstable();
        for list in keys.into_iter().filter_map(|k| self.lists.get(k)) {
            let list = &list[..kept(self.spec.function, list, self.spec.limit)];
            let ranks = ranks(self.spec.function, list);
            entries.extend(list.iter().zip(ranks));
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![self.rows_of(&entries)?.0])
    }

    /// Each changed position of each touched key: `-U`/`+U`, `+I` or `-D`.
    fn changes(&mut self) -> Result<Vec<RecordBatch>> {
        // Keys in order: the output does not depend on the hash map's seed.
        let mut before: Vec<(Box<[u8]>, Vec<Entry>)> =
            std::mem::take(&mut self.before).into_iter().collect();
        before.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut entries: Vec<(&Entry, u64)> = Vec::new();
        let mut kinds = Vec::new();
        let empty = Vec::new();
        for (part, old) in &before {
            let new = self.lists.get(part).unwrap_or(&empty);
            let new = &new[..kept(self.spec.function, new, self.spec.limit)];
            let (old_ranks, new_ranks) = (
                ranks(self.spec.function, old),
                ranks(self.spec.function, new),
            );
            for i in 0..old.len().max(new.len()) {
                let o = old.get(i).map(|e| (e, old_ranks[i]));
                let n = new.get(i).map(|e| (e, new_ranks[i]));
                match (o, n) {
                    (Some(o), Some(n)) if o == n => {}
                    (Some(o), Some(n)) => {
                        entries.extend([o, n]);
                        kinds.extend([kind::UPDATE_BEFORE, kind::UPDATE_AFTER]);
                    }
                    (None, Some(n)) => {
                        entries.push(n);
                        kinds.push(kind::INSERT);
                    }
                    (Some(o), None) => {
                        entries.push(o);
                        kinds.push(kind::DELETE);
                    }
                    (None, None) => {}
                }
            }
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (b, _) = self.rows_of(&entries)?;
        Ok(vec![super::with_kinds(&b, kinds, &self.changes)?])
    }

    fn state_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Binary, false),
            Field::new("order", DataType::Binary, true),
            Field::new("row", DataType::Binary, true),
            Field::new("touched", DataType::Int64, true),
        ]))
    }

    /// The lists of `keys` as state rows (a key without rows: one row of nulls, so a
    /// delta can say it emptied).
    fn state_rows_of(
        &self,
        keys: &mut dyn Iterator<Item = &Box<[u8]>>,
    ) -> Result<Vec<RecordBatch>> {
        let (mut parts, mut orders, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut touched = Vec::new();
        for k in keys {
            let t = self.clock.as_ref().and_then(|c| c.last(k));
            match self.lists.get(k).filter(|l| !l.is_empty()) {
                Some(list) => {
                    for e in list {
                        parts.push(k.as_ref());
                        orders.push(Some(e.order.as_ref()));
                        rows.push(Some(e.row.as_ref()));
                        touched.push(t);
                    }
                }
                None => {
                    parts.push(k.as_ref());
                    orders.push(None);
                    rows.push(None);
                    touched.push(None);
                }
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(parts)),
            Arc::new(BinaryArray::from(orders)),
            Arc::new(BinaryArray::from(rows)),
            Arc::new(Int64Array::from(touched)),
        ];
        Ok(vec![RecordBatch::try_new(Self::state_schema(), cols)?])
    }
}

/// How many entries of an ordered list rank within `limit` (stops at the first that
/// does not: over an updating input a list holds every row of its key).
fn kept(function: RankFunction, list: &[Entry], limit: u64) -> usize {
    let (mut prev, mut dense) = (0, 0);
    for (i, e) in list.iter().enumerate() {
        let tie = i > 0 && list[i - 1].order == e.order;
        let r = match function {
            RankFunction::RowNumber => i as u64 + 1,
            RankFunction::Rank if tie => prev,
            RankFunction::Rank => i as u64 + 1,
            RankFunction::DenseRank => {
                dense += u64::from(!tie);
                dense
            }
        };
        if r > limit {
            return i;
        }
        prev = r;
    }
    list.len()
}

/// The rank of each entry of an ordered list.
fn ranks(function: RankFunction, list: &[Entry]) -> Vec<u64> {
    let mut out = Vec::with_capacity(list.len());
    let mut dense = 0;
    for (i, e) in list.iter().enumerate() {
        let tie = i > 0 && list[i - 1].order == e.order;
        let r = match function {
            RankFunction::RowNumber => i as u64 + 1,
            RankFunction::Rank if tie => out[i - 1],
            RankFunction::Rank => i as u64 + 1,
            RankFunction::DenseRank => {
                if !tie {
                    dense += 1;
                }
                dense
            }
        };
        out.push(r);
    }
    out
}

impl Operator for RankOp {
    fn process(
        &mut self,
        inputs: super::Inputs,
        ctx: &mut BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let input = super::only_input(inputs)?;
        ctx.expired += self.expire(ctx.now_ms);
        for b in input.iter().filter(|b| b.num_rows() > 0) {
            self.merge(b)?;
        }
        let out = match self.emit {
            Emit::All => {
                self.before.clear();
                self.all_rows()?
            }
            Emit::Changes => self.changes()?,
            Emit::Upserts | Emit::Closed => {
                return Err(DataFusionError::Internal(
                    "a top-N emits changes or all rows".into(),
                ))
            }
        };
        Ok(out)
    }

    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot> {
        let (full, slice) = kind.parts();
        let rows = match kind {
            WriteKind::Full => {
                self.dirty.clear();
                self.state_rows_of(&mut self.lists.keys())?
            }
            WriteKind::Delta(slice) => {
                let mut keys = std::mem::take(&mut self.dirty);
                if let Some(s) = slice {
                    let kg = |k: &[u8]| crate::state::key_group(super::bytes_hash(k));
                    keys.extend(self.lists.keys().filter(|k| s.covers(kg(k))).cloned());
                }
                self.state_rows_of(&mut keys.iter())?
            }
        };
        Ok(Snapshot {
            schema: Self::state_schema(),
            rows,
            full,
            slice,
        })
    }

    fn state_rows(&self) -> u64 {
        self.entries as u64
    }

    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        _: &Commit,
    ) -> Result<()> {
        let restored_at = crate::gen::wall_ms();
        for b in full.iter().chain(deltas.iter().flatten()) {
            let parts = b.column(0).as_binary::<i32>();
            let orders = b.column(1).as_binary::<i32>();
            let rows = b.column(2).as_binary::<i32>();
            // Checkpoints written before the TTL have no time column.
            let touched = b.columns().get(3).map(|c| c.as_primitive::<Int64Type>());
            let mut cleared = hashbrown::HashSet::new();
            for i in 0..b.num_rows() {
                let part: Box<[u8]> = parts.value(i).into();
                if cleared.insert(part.clone()) {
                    self.lists.insert(part.clone(), Vec::new());
                }
                if let Some(c) = &mut self.clock {
                    match touched.filter(|t| t.is_valid(i)) {
                        Some(t) => c.touch(&part, t.value(i)),
                        None if rows.is_valid(i) => c.touch(&part, restored_at),
                        None => c.forget(&part),
                    }
                }
                if rows.is_valid(i) && orders.is_valid(i) {
                    let list = self.lists.entry(part).or_default();
                    list.push(Entry {
                        order: orders.value(i).into(),
                        row: rows.value(i).into(),
                    });
                }
            }
        }
        self.lists.retain(|_, l| !l.is_empty());
        self.clock = self.clock.as_ref().map(|c| c.renamed(|k| Some(k.clone())));
        self.bytes = self
            .lists
            .values()
            .flatten()
            .map(|e| e.order.len() + e.row.len() + 32)
            .sum();
        self.entries = self.lists.values().map(Vec::len).sum();
        self.before.clear();
        self.dirty.clear();
        Ok(())
    }

    fn describe(&self, p: &mut BatchProgress) {
        p.state_groups += self.entries;
        p.state_bytes += self.bytes + self.lists.len() * 48;
    }
}

impl super::sharded::Keyed for RankOp {
    fn input_groups(&self, _input: usize, b: &RecordBatch) -> Result<Vec<u64>> {
        Ok(super::row_key_groups(&self.partition_keys(b)?))
    }

    fn state_groups(&self, b: &RecordBatch) -> Result<Vec<u64>> {
        Ok(super::binary_key_groups(b, 0))
    }
}
