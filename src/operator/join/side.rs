//! One input's state of a stream–stream join: its rows by join key, each with its
//! weight and how many rows of the other side it matches (outer joins emit a
//! null-padded row while that count is zero).
//!
//! ```text
//!  key bytes ──► [ (row bytes, weight, matches), … ]      in arrival order
//!  dirty keys ──► the next checkpoint delta writes their whole list
//! ```
//! Keys and rows are arrow row bytes, so any column type works; the key group of a key
//! is a stable hash of its bytes. In an interval join ([`super::interval`]) each row
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
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExprRef;

use crate::exec::watermark::NO_WATERMARK;
use crate::state::ttl::TouchClock;

/// A row that never leaves by the watermark.
const NEVER: i64 = i64::MAX;

/// One kept row.
#[derive(Clone)]
pub struct Stored {
    /// The row, as row bytes of the side's columns.
    pub row: Box<[u8]>,
    /// How many times it is there (an updating input may add a row twice or take it
    /// back).
    pub weight: i64,
    /// The weights of the other side's rows it matches, summed.
    pub matches: i64,
    /// The watermark at or past which it can match nothing more ([`NEVER`] outside
    /// interval joins).
    pub expires: i64,
}

impl Stored {
    fn bytes(&self) -> usize {
        self.row.len() + 40
    }
}

/// A side's rows by join key.
pub struct Side {
    /// Join key expressions over the side's rows.
    pub on: Vec<PhysicalExprRef>,
    keys: RowConverter,
    /// Converts rows to bytes and back.
    pub rows: RowConverter,
    /// Kept rows by key.
    pub table: hashbrown::HashMap<Box<[u8]>, Vec<Stored>>,
    /// Keys changed since the last checkpoint delta.
    dirty: hashbrown::HashSet<Box<[u8]>>,
    entries: usize,
    bytes: usize,
    /// With a state TTL: when each key last changed.
    clock: Option<TouchClock<Box<[u8]>>>,
    null_equality: NullEquality,
    /// In an interval join: this side's event time and when its rows leave.
    time: Option<SideTime>,
    /// Rows dropped as late (at or behind the watermark), over the run.
    pub late: u64,
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
            on,
            table: Default::default(),
            dirty: Default::default(),
            entries: 0,
            bytes: 0,
            clock: ttl_ms.map(TouchClock::new),
            null_equality,
            time,
            late: 0,
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
        let (b, times) = self.without_late(b, watermark)?;
        let (batch, weights) = match updating {
            true => (
                b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>())?,
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
        Ok(Delta {
            batch,
            weights,
            keys,
            unmatchable,
            expires,
        })
    }

    /// `b` without the rows an interval join takes as late (event time at or behind the
    /// watermark: rows to come are all newer, so the other side pruned on that basis),
    /// and the kept rows' event times (interval joins only).
    fn without_late(
        &mut self,
        b: &RecordBatch,
        watermark: i64,
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
            let mut freed = 0;
            list.retain(|e| {
                let keep = e.expires > watermark;
                if !keep {
                    freed += e.bytes();
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
            self.entries -= gone;
            self.bytes = self.bytes.saturating_sub(freed);
            self.dirty.insert(key);
        }
        dropped
    }

    /// Marks `key` changed now (for the next delta and the TTL).
    fn touch(&mut self, key: &[u8], now: i64) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.into());
        }
        if let Some(c) = &mut self.clock {
            c.touch(&Box::from(key), now);
        }
    }

    /// Adds row `row` (bytes) with `weight` under `key`; `merge`: an identical kept row
    /// takes the weight (an updating input), else it is kept as a row of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: &[u8],
        row: &[u8],
        weight: i64,
        matches: i64,
        merge: bool,
        now: i64,
        expires: i64,
    ) {
        self.touch(key, now);
        if let Some(t) = self.time.as_mut().filter(|_| expires != NEVER) {
            t.queue.push(Reverse((expires, key.into())));
        }
        let list = match self.table.get_mut(key) {
            Some(l) => l,
            None => {
                self.count_key(key, 1);
                self.table.entry(key.into()).or_default()
            }
        };
        if merge {
            if let Some(at) = list.iter().position(|e| e.row.as_ref() == row) {
                list[at].weight += weight;
                if list[at].weight == 0 {
                    let e = list.remove(at);
                    self.entries -= 1;
                    self.bytes = self.bytes.saturating_sub(e.bytes());
                    if list.is_empty() {
                        self.table.remove(key);
                        self.count_key(key, -1);
                    }
                }
                return;
            }
        }
        let e = Stored {
            row: row.into(),
            weight,
            matches,
            expires,
        };
        self.entries += 1;
        self.bytes += e.bytes();
        list.push(e);
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
                self.entries -= list.len();
                let bytes: usize = list.iter().map(Stored::bytes).sum();
                self.bytes = self.bytes.saturating_sub(bytes);
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
        self.entries
    }

    /// Bytes held, roughly.
    pub fn bytes(&self) -> usize {
        let clock = self.clock.as_ref().map_or(0, |c| c.size(16));
        let queue = self.time.as_ref().map_or(0, |t| t.queue.len() * 40);
        self.bytes + self.table.len() * 48 + clock + queue
    }

    /// Its figures for progress and explain.
    pub fn figures(&self) -> crate::metrics::SideFigures {
        crate::metrics::SideFigures {
            rows: self.entries,
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
        let mut out = StateRows::default();
        for k in &keys {
            let t = self.clock.as_ref().and_then(|c| c.last(k));
            match self.table.get(k).filter(|l| !l.is_empty()) {
                Some(list) => list.iter().for_each(|e| out.push(side, k, Some(e), t)),
                None => out.push(side, k, None, None),
            }
        }
        out.finish()
    }

    /// Restores checkpointed rows of this side: `files` in order (a full snapshot,
    /// then deltas); in each, a key's rows replace what an earlier file held for it.
    pub fn restore(&mut self, side: i8, files: &[&[RecordBatch]], restored_at: i64) {
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
                        self.table.insert(key.clone(), Vec::new());
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
                        self.table.entry(key).or_default().push(Stored {
                            row: rows.value(i).into(),
                            weight: weights.value(i),
                            matches: matches.value(i),
                            expires,
                        });
                    }
                }
            }
        }
        self.table.retain(|_, l| !l.is_empty());
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
        self.entries = self.table.values().map(Vec::len).sum();
        self.bytes = self.table.values().flatten().map(Stored::bytes).sum();
        self.group_keys.iter_mut().for_each(|n| *n = 0);
        for k in self.table.keys() {
            count_in_group(&mut self.group_keys, k, 1);
        }
        self.dirty.clear();
    }
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
    fn push(&mut self, side: i8, key: &[u8], e: Option<&Stored>, touched: Option<i64>) {
        self.sides.push(side);
        self.keys.push(key.to_vec());
        self.rows.push(e.map(|e| e.row.to_vec()));
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
