//! One input's state of a stream–stream join: its rows by join key, each with its
//! weight and how many rows of the other side it matches (outer joins emit a
//! null-padded row while that count is zero).
//!
//! ```text
//!  key bytes ──► [ (place, weight, matches), … ]      in arrival order
//!                   └─► the row, columnar, in the batch it came in ([`super::store`])
//!  dirty keys ──► the next checkpoint delta writes their whole list
//! ```
//! Keys are arrow row bytes, so any column type works; the key group of a key is a
//! stable hash of its bytes. Checkpoints hold rows as row bytes too. In an interval join ([`super::interval`]) each row
//! also has the watermark past which it can match nothing more; a queue ordered by it
//! says which keys to prune when the watermark moves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::TimestampMillisecondArray;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, Int8Array, RecordBatch,
};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{
    DataType, Field, Int64Type, Int8Type, Schema, SchemaRef, TimestampMillisecondType,
};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::NullEquality;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExprRef;

use super::store::{Place, Store};
use crate::exec::watermark::NO_WATERMARK;
use crate::state::ttl::TouchClock;

/// A row that never leaves by the watermark.
const NEVER: i64 = i64::MAX;

/// One kept row.
#[derive(Clone)]
pub struct Stored {
    /// Where the row is in the side's [`Store`].
    pub at: Place,
    /// How many times it is there (an updating input may add a row twice or take it
    /// back).
    pub weight: i64,
    /// The weights of the other side's rows it matches, summed.
    pub matches: i64,
    /// The watermark at or past which it can match nothing more ([`NEVER`] outside
    /// interval joins).
    pub expires: i64,
    /// A hash of the row's bytes (updating inputs, which take rows back by value).
    print: u64,
}

/// Bytes a kept row costs besides its columns.
const ENTRY_BYTES: usize = std::mem::size_of::<Stored>();

/// A side's rows by join key.
pub struct Side {
    /// Join key expressions over the side's rows.
    pub on: Vec<PhysicalExprRef>,
    keys: RowConverter,
    /// Converts rows to bytes and back (checkpoints, and rows taken back by value).
    rows: RowConverter,
    /// The kept rows' columns.
    store: Store,
    /// Kept rows by key.
    table: hashbrown::HashMap<Box<[u8]>, Vec<Stored>>,
    /// Keys changed since the last checkpoint delta.
    dirty: hashbrown::HashSet<Box<[u8]>>,
    /// With a state TTL: when each key last changed.
    clock: Option<TouchClock<Box<[u8]>>>,
    null_equality: NullEquality,
    /// In an interval join: this side's event time and when its rows leave.
    time: Option<SideTime>,
    /// Rows dropped as late (at or behind the watermark), over the run.
    pub late: u64,
    /// The rows dropped as late since they were last taken (for the late-data file).
    pub dropped: Vec<RecordBatch>,
    /// Keys kept per key group.
    group_keys: Vec<u32>,
}

/// An interval join side's event time: column `column`; a row can match until the
/// watermark reaches its event time plus `keep_ms` (forever when `None`).
pub struct SideTime {
    column: usize,
    keep_ms: Option<i64>,
    /// (expiry, key) of kept rows that expire, soonest first.
    queue: BinaryHeap<Reverse<(i64, Box<[u8]>)>>,
}

impl SideTime {
    /// The time of a side whose event time is column `column`.
    pub fn new(column: usize, keep_ms: Option<i64>) -> Self {
        Self {
            column,
            keep_ms,
            queue: BinaryHeap::new(),
        }
    }
}

/// One batch's rows of a side, ready to probe and insert.
pub struct Delta {
    /// The rows without the change column.
    pub batch: RecordBatch,
    /// Each row's weight.
    pub weights: Vec<i64>,
    /// Each row's join key.
    pub keys: Rows,
    /// Whether a row's key can match nothing (a null under SQL equality, or a null
    /// event time in an interval join).
    pub unmatchable: Vec<bool>,
    /// When each row leaves state ([`NEVER`] outside interval joins).
    pub expires: Vec<i64>,
    /// Each row's bytes and their hash (an updating input, whose rows are taken back
    /// by value).
    values: Option<(Rows, Vec<u64>)>,
}

impl Side {
    /// Empty state for rows of `schema` keyed by `on`.
    pub fn new(
        on: Vec<PhysicalExprRef>,
        schema: SchemaRef,
        null_equality: NullEquality,
        ttl_ms: Option<i64>,
        time: Option<SideTime>,
    ) -> Result<Self> {
        let key_fields = on
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let row_fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            keys: RowConverter::new(key_fields)?,
            rows: RowConverter::new(row_fields)?,
            store: Store::new(schema),
            on,
            table: Default::default(),
            dirty: Default::default(),
            clock: ttl_ms.map(TouchClock::new),
            null_equality,
            time,
            late: 0,
            dropped: Vec::new(),
            group_keys: vec![0; crate::state::KEY_GROUPS as usize],
        })
    }

    /// The join keys of `b`'s rows (the side's columns, maybe a change column after).
    pub fn key_rows(&self, b: &RecordBatch) -> Result<(Rows, Vec<bool>)> {
        let n = b.num_rows();
        let cols = self
            .on
            .iter()
            .map(|e| e.evaluate(b)?.into_array(n))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let unmatchable = match self.null_equality {
            NullEquality::NullEqualsNull => vec![false; n],
            NullEquality::NullEqualsNothing => {
                (0..n).map(|r| cols.iter().any(|c| c.is_null(r))).collect()
            }
        };
        Ok((self.keys.convert_columns(&cols)?, unmatchable))
    }

    /// A batch of this side's input as a delta (`updating`: it ends with the change
    /// column). In an interval join, rows at or behind `watermark` are dropped as late
    /// and counted.
    pub fn delta(&mut self, b: &RecordBatch, updating: bool, watermark: i64) -> Result<Delta> {
        let (b, times) = self.without_late(b, watermark, updating)?;
        let (batch, weights) = match updating {
            true => (
                super::super::without_change(&b)?,
                super::super::weights(&b)?,
            ),
            false => (b.clone(), vec![1; b.num_rows()]),
        };
        let (keys, mut unmatchable) = self.key_rows(&batch)?;
        let mut expires = vec![NEVER; batch.num_rows()];
        if let (Some(t), Some(times)) = (&self.time, times) {
            for (r, at) in times.iter().enumerate() {
                match (at, t.keep_ms) {
                    (None, _) => unmatchable[r] = true, // no time: the condition fails
                    (Some(at), Some(keep)) => expires[r] = at.saturating_add(keep),
                    (Some(_), None) => {}
                }
            }
        }
        let values = match updating {
            true => {
                let rows = self.rows.convert_columns(batch.columns())?;
                let prints = rows
                    .iter()
                    .map(|r| super::super::bytes_hash(r.as_ref()))
                    .collect();
                Some((rows, prints))
            }
            false => None,
        };
        Ok(Delta {
            batch,
            weights,
            keys,
            unmatchable,
            expires,
            values,
        })
    }

    /// The kept rows of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[Stored]> {
        self.table.get(key).map(Vec::as_slice)
    }

    /// The kept rows at `places`, as the side's columns.
    pub fn gather(&self, places: &[Place]) -> Result<Vec<ArrayRef>> {
        self.store.gather(places)
    }

    /// `b` without the rows an interval join takes as late (event time at or behind the
    /// watermark: rows to come are all newer, so the other side pruned on that basis),
    /// and the kept rows' event times (interval joins only). The late rows go to
    /// [`Side::dropped`] (without the change column of an `updating` input).
    fn without_late(
        &mut self,
        b: &RecordBatch,
        watermark: i64,
        updating: bool,
    ) -> Result<(RecordBatch, Option<TimestampMillisecondArray>)> {
        let Some(t) = self.time.as_ref() else {
            return Ok((b.clone(), None));
        };
        let times = crate::exec::window::event_time_ms(b.column(t.column))?;
        if watermark == NO_WATERMARK {
            return Ok((b.clone(), Some(times)));
        }
        let on_time: BooleanArray = times
            .iter()
            .map(|at| Some(at.is_none_or(|at| at > watermark)))
            .collect();
        let late = on_time.false_count();
        if late == 0 {
            return Ok((b.clone(), Some(times)));
        }
        self.late += late as u64;
        let dropped = filter_record_batch(b, &arrow::compute::not(&on_time)?)?;
        self.dropped.push(match updating {
            true => super::super::without_change(&dropped)?,
            false => dropped,
        });
        let kept = filter(&times, &on_time)?
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        Ok((filter_record_batch(b, &on_time)?, Some(kept)))
    }

    /// Drops the rows the watermark has passed (interval joins); returns how many.
    pub fn prune(&mut self, watermark: i64) -> u64 {
        let Some(t) = self.time.as_mut() else {
            return 0;
        };
        let mut keys = Vec::new();
        while let Some(Reverse((at, _))) = t.queue.peek() {
            if *at > watermark {
                break;
            }
            if let Some(Reverse((_, key))) = t.queue.pop() {
                keys.push(key);
            }
        }
        let mut dropped = 0;
        for key in keys {
            let Some(list) = self.table.get_mut(&key) else {
                continue;
            };
            let before = list.len();
            let store = &mut self.store;
            list.retain(|e| {
                let keep = e.expires > watermark;
                if !keep {
                    store.release(e.at);
                }
                keep
            });
            let gone = before - list.len();
            if gone == 0 {
                continue;
            }
            if list.is_empty() {
                self.table.remove(&key);
                self.count_key(&key, -1);
            }
            dropped += gone as u64;
            self.dirty.insert(key);
        }
        dropped
    }

    /// Copies the kept rows into fresh batches when dead rows hold most of the
    /// batches' memory.
    fn compact_if_sparse(&mut self) -> Result<()> {
        if !self.store.wants_compaction() {
            return Ok(());
        }
        let places: Vec<Place> = self.table.values().flatten().map(|e| e.at).collect();
        let renamed = self.store.compact(&places)?;
        for (e, at) in self.table.values_mut().flatten().zip(renamed) {
            e.at = at;
        }
        Ok(())
    }

    /// Marks `key` changed now (for the next delta and the TTL).
    fn touch(&mut self, key: &[u8], now: i64) {
        self.dirty.get_or_insert_with(key, |k| k.into());
        if let Some(c) = &mut self.clock {
            c.touch(&Box::from(key), now);
        }
    }

    /// Keeps the delta's rows that can match (`matches`: each row's match count);
    /// `merge`: a kept row equal to a delta row takes its weight (an updating input),
    /// else each row is kept as a row of its own.
    pub fn keep(&mut self, delta: Delta, matches: &[i64], merge: bool, now: i64) -> Result<()> {
        let id = self.store.add(delta.batch.clone());
        for r in 0..delta.batch.num_rows() {
            if delta.unmatchable[r] {
                continue; // it can never match: nothing to keep
            }
            let key = delta.keys.row(r);
            let key = key.as_ref();
            let (w, expires) = (delta.weights[r], delta.expires[r]);
            let print = delta.values.as_ref().map_or(0, |(_, p)| p[r]);
            self.touch(key, now);
            if merge && self.merge(key, &delta, r, print)? {
                continue;
            }
            if let Some(t) = self.time.as_mut().filter(|_| expires != NEVER) {
                t.queue.push(Reverse((expires, key.into())));
            }
            let e = Stored {
                at: self.store.keep(id, r),
                weight: w,
                matches: matches[r],
                expires,
                print,
            };
            match self.table.get_mut(key) {
                Some(list) => list.push(e),
                None => {
                    self.count_key(key, 1);
                    self.table.insert(key.into(), vec![e]);
                }
            }
        }
        self.store.release_unused(id);
        self.compact_if_sparse()
    }

    /// Adds delta row `r`'s weight to a kept row of `key` equal to it, if there is one
    /// (dropping it at weight 0); returns whether there was.
    fn merge(&mut self, key: &[u8], delta: &Delta, r: usize, print: u64) -> Result<bool> {
        let Some((values, _)) = &delta.values else {
            return Ok(false);
        };
        let Some(list) = self.table.get(key) else {
            return Ok(false);
        };
        let mut found = None;
        for (at, e) in list.iter().enumerate().filter(|(_, e)| e.print == print) {
            let Some(kept) = self.store.row(e.at) else {
                continue;
            };
            if self.rows.convert_columns(kept.columns())?.row(0) == values.row(r) {
                found = Some(at);
                break;
            }
        }
        let Some(at) = found else { return Ok(false) };
        let Some(list) = self.table.get_mut(key) else {
            return Ok(false);
        };
        list[at].weight += delta.weights[r];
        if list[at].weight == 0 {
            let e = list.remove(at);
            self.store.release(e.at);
            if list.is_empty() {
                self.table.remove(key);
                self.count_key(key, -1);
            }
        }
        Ok(true)
    }

    /// Adds `by` to the match count of entry `at` of `key`'s list; returns the entry's
    /// count before and after.
    pub fn add_matches(&mut self, key: &[u8], at: usize, by: i64, now: i64) -> (i64, i64) {
        let Some(e) = self.table.get_mut(key).and_then(|l| l.get_mut(at)) else {
            return (0, 0);
        };
        let before = e.matches;
        e.matches += by;
        let after = e.matches;
        self.touch(key, now);
        (before, after)
    }

    /// Drops the keys the TTL expired; returns the rows dropped.
    pub fn expire(&mut self, now: i64) -> u64 {
        let Some(c) = &mut self.clock else { return 0 };
        let expired = c.expired(now);
        let mut dropped = 0;
        for key in expired {
            if let Some(list) = self.table.remove(&key) {
                self.count_key(&key, -1);
                dropped += list.len() as u64;
                list.iter().for_each(|e| self.store.release(e.at));
                self.dirty.insert(key);
            }
        }
        dropped
    }

    /// Counts a key coming (`by` 1) or going (-1) in its key group.
    fn count_key(&mut self, key: &[u8], by: i32) {
        count_in_group(&mut self.group_keys, key, by);
    }

    /// Rows kept.
    pub fn entries(&self) -> usize {
        self.store.live_rows()
    }

    /// Bytes held, roughly.
    pub fn bytes(&self) -> usize {
        let clock = self.clock.as_ref().map_or(0, |c| c.size(16));
        let queue = self.time.as_ref().map_or(0, |t| t.queue.len() * 40);
        let entries = self.entries() * ENTRY_BYTES;
        self.store.bytes() + entries + self.table.len() * 48 + clock + queue
    }

    /// Its figures for progress and explain.
    pub fn figures(&self) -> crate::metrics::SideFigures {
        crate::metrics::SideFigures {
            rows: self.entries(),
            bytes: self.bytes(),
            keys: self.table.len(),
            key_groups: self.group_keys.iter().filter(|n| **n > 0).count(),
            late: self.late,
        }
    }

    /// The schema of checkpointed rows: the side (0 left, 1 right), the key, a row
    /// (null: the key's list is empty), its weight and match count, and the key's last
    /// update (for the TTL) and when the row leaves by the watermark (interval joins).
    pub fn state_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("side", DataType::Int8, false),
            Field::new("key", DataType::Binary, false),
            Field::new("row", DataType::Binary, true),
            Field::new("weight", DataType::Int64, true),
            Field::new("matches", DataType::Int64, true),
            Field::new("touched", DataType::Int64, true),
            Field::new("expires", DataType::Int64, true),
        ]))
    }

    /// State rows for the whole side (`full`), or its changed keys and those of the
    /// key groups `also` selects.
    pub fn state_rows(
        &mut self,
        side: i8,
        full: bool,
        also: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<RecordBatch>> {
        let keys: Vec<Box<[u8]>> = match full {
            true => {
                self.dirty.clear();
                self.table.keys().cloned().collect()
            }
            false => {
                let mut keys = std::mem::take(&mut self.dirty);
                keys.extend(self.table.keys().filter(|k| also(k)).cloned());
                keys.into_iter().collect()
            }
        };
        // The rows' bytes, converted from their columns in one go.
        let places: Vec<Place> = keys
            .iter()
            .filter_map(|k| self.table.get(k))
            .flatten()
            .map(|e| e.at)
            .collect();
        let cols = self.store.gather(&places)?;
        let bytes = self.rows.convert_columns(&cols)?;
        let mut bytes = bytes.iter();
        let mut out = StateRows::default();
        for k in &keys {
            let t = self.clock.as_ref().and_then(|c| c.last(k));
            match self.table.get(k).filter(|l| !l.is_empty()) {
                Some(list) => {
                    for e in list {
                        let row = bytes.next().ok_or_else(|| {
                            DataFusionError::Internal("a join row went missing".into())
                        })?;
                        out.push(side, k, Some((row.as_ref(), e)), t);
                    }
                }
                None => out.push(side, k, None, None),
            }
        }
        out.finish()
    }

    /// Restores checkpointed rows of this side: `files` in order (a full snapshot,
    /// then deltas); in each, a key's rows replace what an earlier file held for it.
    pub fn restore(&mut self, side: i8, files: &[&[RecordBatch]], restored_at: i64) -> Result<()> {
        // Per key, its rows.
        let mut by_key: hashbrown::HashMap<Box<[u8]>, Vec<Restored<'_>>> = Default::default();
        for file in files {
            let mut cleared = hashbrown::HashSet::new();
            for b in file.iter() {
                let sides = b.column(0).as_primitive::<Int8Type>();
                let keys = b.column(1).as_binary::<i32>();
                let rows = b.column(2).as_binary::<i32>();
                let weights = b.column(3).as_primitive::<Int64Type>();
                let matches = b.column(4).as_primitive::<Int64Type>();
                let touched = b.column(5).as_primitive::<Int64Type>();
                let expires = b.column(6).as_primitive::<Int64Type>();
                for i in (0..b.num_rows()).filter(|i| sides.value(*i) == side) {
                    let key: Box<[u8]> = keys.value(i).into();
                    if cleared.insert(key.clone()) {
                        by_key.insert(key.clone(), Vec::new());
                    }
                    if let Some(c) = &mut self.clock {
                        match (touched.is_valid(i), rows.is_valid(i)) {
                            (true, _) => c.touch(&key, touched.value(i)),
                            (false, true) => c.touch(&key, restored_at),
                            (false, false) => c.forget(&key),
                        }
                    }
                    if rows.is_valid(i) {
                        let expires = match expires.is_valid(i) {
                            true => expires.value(i),
                            false => NEVER,
                        };
                        by_key.entry(key).or_default().push(Restored {
                            row: rows.value(i),
                            weight: weights.value(i),
                            matches: matches.value(i),
                            expires,
                        });
                    }
                }
            }
        }
        by_key.retain(|_, l| !l.is_empty());
        self.table.clear();
        self.store = Store::new(Arc::clone(self.store.schema()));
        let parser = self.rows.parser();
        let all: Vec<(&[u8], &Restored<'_>)> = by_key
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |r| (k.as_ref(), r)))
            .collect();
        for chunk in all.chunks(super::store::COMPACT_ROWS) {
            let cols = self
                .rows
                .convert_rows(chunk.iter().map(|(_, r)| parser.parse(r.row)))?;
            let id = self
                .store
                .add(RecordBatch::try_new(Arc::clone(self.store.schema()), cols)?);
            for (i, (key, r)) in chunk.iter().enumerate() {
                let e = Stored {
                    at: self.store.keep(id, i),
                    weight: r.weight,
                    matches: r.matches,
                    expires: r.expires,
                    print: super::super::bytes_hash(r.row), // (only an updating side reads it)
                };
                match self.table.get_mut(*key) {
                    Some(list) => list.push(e),
                    None => {
                        self.table.insert((*key).into(), vec![e]);
                    }
                }
            }
        }
        if let Some(t) = self.time.as_mut() {
            t.queue = self
                .table
                .iter()
                .flat_map(|(k, l)| l.iter().map(move |e| (e.expires, k)))
                .filter(|(at, _)| *at != NEVER)
                .map(|(at, k)| Reverse((at, k.clone())))
                .collect();
        }
        self.clock = self.clock.as_ref().map(|c| c.renamed(|k| Some(k.clone())));
        self.group_keys.iter_mut().for_each(|n| *n = 0);
        for k in self.table.keys() {
            count_in_group(&mut self.group_keys, k, 1);
        }
        self.dirty.clear();
        Ok(())
    }
}

/// A checkpointed row being restored.
struct Restored<'a> {
    row: &'a [u8],
    weight: i64,
    matches: i64,
    expires: i64,
}

/// Adds `by` to the count of `key`'s key group in `counts`.
fn count_in_group(counts: &mut [u32], key: &[u8], by: i32) {
    let g = crate::state::key_group(super::super::bytes_hash(key)) as usize;
    if let Some(n) = counts.get_mut(g) {
        *n = n.saturating_add_signed(by);
    }
}

/// Columns of checkpointed rows being built.
#[derive(Default)]
struct StateRows {
    sides: Vec<i8>,
    keys: Vec<Vec<u8>>,
    rows: Vec<Option<Vec<u8>>>,
    weights: Vec<Option<i64>>,
    matches: Vec<Option<i64>>,
    touched: Vec<Option<i64>>,
    expires: Vec<Option<i64>>,
}

impl StateRows {
    fn push(&mut self, side: i8, key: &[u8], e: Option<(&[u8], &Stored)>, touched: Option<i64>) {
        self.sides.push(side);
        self.keys.push(key.to_vec());
        self.rows.push(e.map(|(row, _)| row.to_vec()));
        let e = e.map(|(_, e)| e);
        self.weights.push(e.map(|e| e.weight));
        self.matches.push(e.map(|e| e.matches));
        self.touched.push(touched);
        self.expires
            .push(e.map(|e| e.expires).filter(|at| *at != NEVER));
    }

    fn finish(self) -> Result<Option<RecordBatch>> {
        if self.sides.is_empty() {
            return Ok(None);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(self.sides)),
            Arc::new(BinaryArray::from_iter_values(self.keys)),
            Arc::new(BinaryArray::from_iter(self.rows)),
            Arc::new(Int64Array::from(self.weights)),
            Arc::new(Int64Array::from(self.matches)),
            Arc::new(Int64Array::from(self.touched)),
            Arc::new(Int64Array::from(self.expires)),
        ];
        Ok(Some(RecordBatch::try_new(Side::state_schema(), cols)?))
    }
}
