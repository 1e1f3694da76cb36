//! Aggregation state kept across micro-batches, built from DataFusion's own primitives
//! (design.md: "State merge with DataFusion primitives").
//!
//! ```text
//!  stage 1 partial aggregates (keys + state columns, DataFusion's Partial schema)
//!        │ exchange: hash(keys) mod shards
//!        ▼
//!  StateShard 0 … StateShard n-1   (each owns a range of the 128 key groups; merged in
//!    KeyTable (keys → group id)      parallel, one thread per shard)
//!    + one GroupAcc per aggregate (per-group slots: merge, evaluate or export any ids)
//!        │ emit: evaluate the groups to show (all, or the ones this batch touched)
//!        ▼
//!  keys + final values (the Aggregate's output schema)
//! ```
//! Every DataFusion aggregate works: the common ones have columnar slots, the rest keep
//! DataFusion's own `Accumulator` per group and merge with its `merge_batch`. Merge,
//! update-mode emit and checkpoint deltas cost what the batch changed, not the state's
//! size. A shard's snapshot is the stock Partial schema, so it can be checked against a
//! plain batch query and written to a checkpoint.

pub mod accumulate;
pub mod keys;
pub mod retract;
pub mod session;
pub mod ttl;
pub mod window;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::checkpoint::Slice;
use accumulate::GroupAcc;
use keys::KeyTable;
use ttl::TouchClock;

/// What a stateful aggregation computes: its keys, its aggregates, and the schema of
/// what it emits.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// Schema of the group key columns (the first columns of a partial batch).
    pub key_schema: SchemaRef,
    /// The aggregates, in partial-batch order.
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Number of state columns of each aggregate in a partial batch.
    pub state_widths: Vec<usize>,
    /// Keys + final values, as the query above the aggregation expects them.
    pub output_schema: SchemaRef,
    /// Keys + state columns: DataFusion's Partial schema (what stage 1 produces).
    pub partial_schema: SchemaRef,
}

impl AggregateSpec {
    /// The partial schema with the last-update column a TTL'd state checkpoints.
    fn touched_schema(&self) -> SchemaRef {
        let mut fields: Vec<_> = self.partial_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(TOUCHED, DataType::Int64, true)));
        Arc::new(Schema::new(fields))
    }

    /// Columns of a partial batch: keys and every aggregate's state.
    fn partial_width(&self) -> usize {
        self.key_schema.fields().len() + self.state_widths.iter().sum::<usize>()
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn GroupAcc>>> {
        self.aggregates
            .iter()
            .map(accumulate::for_aggregate)
            .collect()
    }

    /// Splits a partial batch's columns into keys and each aggregate's state columns.
    fn split<'a>(&self, cols: &'a [ArrayRef]) -> (&'a [ArrayRef], Vec<&'a [ArrayRef]>) {
        let k = self.key_schema.fields().len();
        let mut at = k;
        let states = self
            .state_widths
            .iter()
            .map(|w| {
                let s = &cols[at..at + w];
                at += w;
                s
            })
            .collect();
        (&cols[..k], states)
    }
}

/// The checkpoint column of a TTL'd state: each group's last update (epoch ms); null
/// marks a group a delta deletes (it expired).
pub const TOUCHED: &str = "__sluice_touched";

/// Key groups a state is split into (design.md: "Operators own their state in key
/// groups"): key group = hash(key) mod this; shard (thread) `s` of `n` owns the key groups
/// `[s·K/n, (s+1)·K/n)`. Fixed, so a checkpoint's key groups mean the same on restore.
pub const KEY_GROUPS: u64 = 128;

/// The hasher of group keys (fixed seed: the same key hashes alike in every run).
pub fn key_hasher() -> RandomState {
    RandomState::with_seed(0x51u64 << 32 | 0x1ce)
}

/// The key group of a key hash.
pub fn key_group(hash: u64) -> u64 {
    hash % KEY_GROUPS
}

/// The shard of `shards` that owns the key group of `hash`.
fn shard_of(hash: u64, shards: usize) -> usize {
    shard_of_group(key_group(hash), shards)
}

/// The shard of `shards` that owns key group `kg`.
pub fn shard_of_group(kg: u64, shards: usize) -> usize {
    (kg as usize * shards) / KEY_GROUPS as usize
}

/// What a checkpoint delta writes: the ids marked in `dirty` (taken) and every live id
/// of `slice`, ascending.
pub(crate) fn delta_ids(keys: &KeyTable, dirty: &mut Marks, slice: Option<Slice>) -> Vec<u32> {
    if let Some(s) = slice {
        let ids = keys.live_ids_in(u64::from(s.from)..u64::from(s.to));
        dirty.mark(&ids, keys.capacity());
    }
    let mut ids = dirty.take();
    ids.sort_unstable();
    ids
}

/// A set of group ids in first-marked order, marked in O(1) and taken in O(marked).
#[derive(Default)]
pub(crate) struct Marks {
    list: Vec<u32>,
    set: Vec<bool>,
}

impl Marks {
    pub(crate) fn mark(&mut self, ids: &[u32], capacity: usize) {
        for id in ids {
            self.insert(*id, capacity);
        }
    }

    /// Marks `id` (below `capacity`); true when it was not marked yet. The set only
    /// grows, so marking costs what is marked, not the capacity.
    pub(crate) fn insert(&mut self, id: u32, capacity: usize) -> bool {
        if self.set.len() < capacity {
            self.set.resize(capacity, false);
        }
        let m = &mut self.set[id as usize];
        let new = !*m;
        if new {
            *m = true;
            self.list.push(id);
        }
        new
    }

    pub(crate) fn take(&mut self) -> Vec<u32> {
        for id in &self.list {
            self.set[*id as usize] = false;
        }
        std::mem::take(&mut self.list)
    }

    pub(crate) fn clear(&mut self) {
        let _ = self.take();
    }

    /// The marked ids, in the order they were first marked.
    pub(crate) fn ids(&self) -> &[u32] {
        &self.list
    }

    pub(crate) fn contains(&self, id: u32) -> bool {
        self.set.get(id as usize).copied().unwrap_or(false)
    }
}

/// One shard of the state: the groups whose key group it owns.
///
/// Work per batch follows the batch: merging touches the groups the partials name,
/// emitting changed groups reads only those, a delta for the checkpoint holds only the
/// groups changed since the last one.
pub struct StateShard {
    keys: KeyTable,
    accs: Vec<Box<dyn GroupAcc>>,
    /// Groups merged into since the last emit (update mode).
    touched: Marks,
    /// Groups changed since the last checkpoint delta.
    dirty: Marks,
    ids: Vec<u32>,
    /// Emitting changes: the values the touched groups had before this emit epoch
    /// (taken back by `-U` rows), and which groups they were.
    capture: bool,
    old: Vec<RecordBatch>,
    prior: Marks,
    /// With a TTL: each group's last update, and the batch's time (epoch ms).
    clock: Option<TouchClock<u32>>,
    now: i64,
    /// Emitting changes: the rows of groups the TTL removed this batch (`-D`).
    gone: Vec<RecordBatch>,
    /// Whether a checkpoint has read this shard (until then `dirty` means nothing: the
    /// first checkpoint is a full snapshot).
    snapshotted: bool,
}

impl StateShard {
    fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(Self {
            keys: KeyTable::new(&spec.key_schema)?,
            accs: spec.accumulators()?,
            touched: Marks::default(),
            dirty: Marks::default(),
            ids: Vec::new(),
            capture: false,
            old: Vec::new(),
            prior: Marks::default(),
            clock: None,
            now: 0,
            gone: Vec::new(),
            snapshotted: false,
        })
    }

    /// Merges a partial batch (keys + state columns, with the keys' hashes) into this
    /// shard. With `replace`, a group already present is emptied first: the rows are
    /// its whole state (a checkpoint delta), not an addition to it.
    fn merge(
        &mut self,
        spec: &AggregateSpec,
        cols: &[ArrayRef],
        hashes: &[u64],
        replace: bool,
    ) -> Result<()> {
        let (keys, states) = spec.split(cols);
        let rows = cols.first().map_or(0, |c| c.len());
        let before = self.keys.capacity();
        self.keys.intern(keys, hashes, rows, &mut self.ids)?;
        let n = self.keys.capacity();
        if replace {
            for id in self.ids.iter().filter(|id| (**id as usize) < before) {
                self.accs.iter_mut().for_each(|a| a.clear(*id));
            }
        } else if self.capture {
            self.capture_old(spec, before)?;
        }
        for acc in &mut self.accs {
            acc.resize(n);
        }
        self.touched.mark(&self.ids, n);
        self.dirty.mark(&self.ids, n);
        for (acc, st) in self.accs.iter_mut().zip(states) {
            acc.merge(st, &self.ids)?;
        }
        match cols.get(spec.partial_width()) {
            Some(t) if replace => self.restore_touched(t.as_primitive::<Int64Type>()),
            _ => {
                if let Some(c) = &mut self.clock {
                    self.ids.iter().for_each(|id| c.touch(id, self.now));
                }
            }
        }
        Ok(())
    }

    /// Restored rows' last updates; a null one deletes its group (a delta wrote that it
    /// expired).
    fn restore_touched(&mut self, touched: &Int64Array) {
        for (row, id) in self.ids.iter().enumerate() {
            if touched.is_null(row) {
                self.keys.remove(*id);
                self.accs.iter_mut().for_each(|a| a.clear(*id));
                if let Some(c) = &mut self.clock {
                    c.forget(id);
                }
            } else if let Some(c) = &mut self.clock {
                c.touch(id, touched.value(row));
            }
        }
    }

    /// Removes the groups not updated for the TTL (none without one); emitting changes,
    /// keeps their rows for `-D`. Returns how many went.
    fn expire(&mut self, spec: &AggregateSpec, now: i64) -> Result<usize> {
        self.now = now;
        if self.clock.is_none() {
            return Ok(0);
        }
        // Holes left by earlier batches, once their deletions are checkpointed.
        self.compact(spec)?;
        let Some(c) = &mut self.clock else {
            return Ok(0);
        };
        let mut ids = c.expired(now);
        ids.retain(|id| self.keys.is_live(*id));
        if ids.is_empty() {
            return Ok(0);
        }
        ids.sort_unstable();
        if self.capture {
            let b = self.values_of(spec, &ids)?;
            self.gone.push(b);
        }
        let n = self.keys.capacity();
        for id in &ids {
            self.keys.remove(*id);
            self.accs.iter_mut().for_each(|a| a.clear(*id));
            self.dirty.insert(*id, n);
        }
        Ok(ids.len())
    }

    /// Renumbers the live groups once removed ones outnumber them (so memory follows
    /// the live state): rebuilt from their own state rows. Waits while a delta still
    /// has to write a removed group.
    fn compact(&mut self, spec: &AggregateSpec) -> Result<()> {
        let holes = self.keys.capacity() - self.keys.len();
        if holes < 1024 || holes < self.keys.len() {
            return Ok(());
        }
        if self.snapshotted && self.dirty.ids().iter().any(|id| !self.keys.is_live(*id)) {
            return Ok(());
        }
        tracing::debug!(live = self.keys.len(), holes, "compacting a state shard");
        let live = self.keys.live_ids();
        let cols = self.state_of(&live)?;
        let hashes: Vec<u64> = live.iter().map(|id| self.keys.hash_of(*id)).collect();
        let mut fresh = StateShard::new(spec)?;
        fresh.merge(spec, &cols, &hashes, true)?;
        // Keys are distinct, so fresh ids are 0, 1, … in `live`'s order.
        let renumber: hashbrown::HashMap<u32, u32> = live
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let mut dirty = Marks::default();
        for id in self.dirty.ids() {
            if let Some(new) = renumber.get(id) {
                dirty.insert(*new, live.len());
            }
        }
        self.keys = fresh.keys;
        self.accs = fresh.accs;
        self.dirty = dirty;
        self.touched.clear();
        self.prior.clear();
        self.clock = self
            .clock
            .as_ref()
            .map(|c| c.renamed(|id| renumber.get(id).copied()));
        Ok(())
    }

    /// The current values of the groups among `self.ids` that existed before (ids below
    /// `before`) and were not touched yet since the last emit: what they must retract.
    fn capture_old(&mut self, spec: &AggregateSpec, before: usize) -> Result<()> {
        let mut olds: Vec<u32> = Vec::new();
        for id in &self.ids {
            if (*id as usize) < before
                && !self.touched.contains(*id)
                && self.prior.insert(*id, before)
            {
                olds.push(*id);
            }
        }
        if olds.is_empty() {
            return Ok(());
        }
        let b = self.values_of(spec, &olds)?;
        self.old.push(b);
        Ok(())
    }

    /// Keys + final values of `ids`, in the aggregate's output schema.
    fn values_of(&mut self, spec: &AggregateSpec, ids: &[u32]) -> Result<RecordBatch> {
        let mut out = self.keys.keys(ids)?;
        for acc in &mut self.accs {
            out.push(acc.evaluate(ids)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&spec.output_schema), out)?)
    }

    /// Keys + partial state of `ids` (the Partial schema's columns).
    fn state_of(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let mut cols = self.keys.keys(ids)?;
        for acc in &mut self.accs {
            cols.extend(acc.state(ids)?);
        }
        Ok(cols)
    }

    /// The shard's whole state as keys + state columns (the Partial schema).
    pub fn snapshot(&mut self) -> Result<Vec<ArrayRef>> {
        self.snapshotted = true;
        let ids = self.keys.live_ids();
        let mut cols = self.state_of(&ids)?;
        self.add_touched(&ids, &mut cols);
        Ok(cols)
    }

    /// Keys + final values of all groups, or only of those touched since the last emit.
    fn emit(&mut self, spec: &AggregateSpec, only_touched: bool) -> Result<Option<RecordBatch>> {
        let touched = self.touched.take();
        let ids = match only_touched {
            true => touched,
            false => self.keys.live_ids(),
        };
        if ids.is_empty() {
            return Ok(None);
        }
        self.values_of(spec, &ids).map(Some)
    }

    /// The change since the last emit: the touched groups' earlier values (`-U`), then
    /// their values now (`+U`, or `+I` for a new group), in `changes` (the output schema
    /// + the change column).
    fn emit_changes(
        &mut self,
        spec: &AggregateSpec,
        changes: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        use crate::operator::{kind, with_kinds};
        let mut out = Vec::new();
        for b in std::mem::take(&mut self.gone) {
            let kinds = vec![kind::DELETE; b.num_rows()];
            out.push(with_kinds(&b, kinds, changes)?);
        }
        for b in std::mem::take(&mut self.old) {
            let kinds = vec![kind::UPDATE_BEFORE; b.num_rows()];
            out.push(with_kinds(&b, kinds, changes)?);
        }
        let ids = self.touched.take();
        if !ids.is_empty() {
            let kinds = ids
                .iter()
                .map(|id| match self.prior.contains(*id) {
                    true => kind::UPDATE_AFTER,
                    false => kind::INSERT,
                })
                .collect();
            let b = self.values_of(spec, &ids)?;
            out.push(with_kinds(&b, kinds, changes)?);
        }
        self.prior.clear();
        Ok(out)
    }

    /// Keys + partial state of the groups changed since the last delta, and of every
    /// group of `slice`.
    /// With a TTL, the groups it removed too, and the last-update column.
    fn delta(&mut self, slice: Option<Slice>) -> Result<Option<Vec<ArrayRef>>> {
        self.snapshotted = true;
        let mut ids = delta_ids(&self.keys, &mut self.dirty, slice);
        match self.clock {
            None => ids.retain(|id| self.keys.is_live(*id)),
            // A removed group whose key came back under a new id: the new id's row
            // replaces it, so no deletion is written (it would delete the new one).
            Some(_) => ids.retain(|id| self.keys.is_live(*id) || !self.keys.key_is_live(*id)),
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let mut cols = self.state_of(&ids)?;
        self.add_touched(&ids, &mut cols);
        Ok(Some(cols))
    }

    /// With a TTL: the last-update column of `ids` (null for a removed group).
    fn add_touched(&self, ids: &[u32], cols: &mut Vec<ArrayRef>) {
        let Some(c) = &self.clock else { return };
        let times = ids.iter().map(|id| match self.keys.is_live(*id) {
            true => Some(c.last(id).unwrap_or(self.now)),
            false => None,
        });
        cols.push(Arc::new(Int64Array::from_iter(times)));
    }

    /// Memory held by this shard, in bytes.
    fn size(&self) -> usize {
        let clock = self.clock.as_ref().map_or(0, |c| c.size(4));
        self.keys.size() + self.accs.iter().map(|a| a.size()).sum::<usize>() + clock
    }
}

/// The state of one aggregation, split by key group over shards that merge in
/// parallel (one thread each).
pub struct ShardedState {
    spec: AggregateSpec,
    shards: Vec<StateShard>,
    hasher: RandomState,
}

/// One shard's share of a batch: key + state columns and the keys' hashes.
type Routed = Vec<(Vec<ArrayRef>, Vec<u64>)>;

impl ShardedState {
    /// Empty state with `shards` shards.
    pub fn new(spec: AggregateSpec, shards: usize) -> Result<Self> {
        let shards = (0..shards.clamp(1, KEY_GROUPS as usize))
            .map(|_| StateShard::new(&spec))
            .collect::<Result<_>>()?;
        Ok(Self {
            spec,
            shards,
            hasher: key_hasher(),
        })
    }

    /// What this state aggregates.
    pub fn spec(&self) -> &AggregateSpec {
        &self.spec
    }

    /// Keeps what changed groups held before, so [`ShardedState::emit_changes`] can
    /// take it back.
    pub fn with_retractions(mut self) -> Self {
        for s in &mut self.shards {
            s.capture = true;
        }
        self
    }

    /// Forgets groups not updated for `ttl_ms` (Flink's state TTL, processing time).
    pub fn with_ttl(mut self, ttl_ms: i64) -> Self {
        for s in &mut self.shards {
            s.clock = Some(TouchClock::new(ttl_ms));
        }
        self
    }

    /// Starts a batch at wall-clock `now` (epoch ms): removes the groups the TTL
    /// expired (emitting changes, their `-D` rows come first). Returns how many.
    pub fn expire(&mut self, now: i64) -> Result<usize> {
        let spec = &self.spec;
        let mut n = 0;
        for s in &mut self.shards {
            n += s.expire(spec, now)?;
        }
        Ok(n)
    }

    /// The schema of snapshots and deltas: the Partial schema, with a TTL plus each
    /// group's last update.
    pub fn state_schema(&self) -> SchemaRef {
        match self.shards.first().is_some_and(|s| s.clock.is_some()) {
            true => self.spec.touched_schema(),
            false => Arc::clone(&self.spec.partial_schema),
        }
    }

    /// The change since the last emit, with the change column: `-U` with the old row
    /// of groups that existed, then `+U` (or `+I`) with every changed group's new row.
    /// The state is kept.
    pub fn emit_changes(&mut self, changes: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for shard in &mut self.shards {
            out.extend(shard.emit_changes(&self.spec, changes)?);
        }
        Ok(out)
    }

    /// Groups held over all shards.
    pub fn groups(&self) -> usize {
        self.shards.iter().map(|s| s.keys.len()).sum()
    }

    /// Bytes held over all shards.
    pub fn size(&self) -> usize {
        self.shards.iter().map(StateShard::size).sum()
    }

    /// Groups held by each shard.
    pub fn shard_groups(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.keys.len()).collect()
    }

    /// The exchange: each partial row goes to the shard owning its key group.
    fn route(&self, partials: &[RecordBatch]) -> Result<Vec<Routed>> {
        let n = self.shards.len();
        let mut routed: Vec<Routed> = (0..n).map(|_| Vec::new()).collect();
        let k = self.spec.key_schema.fields().len();
        for b in partials.iter().filter(|b| b.num_rows() > 0) {
            let mut hashes = vec![0; b.num_rows()];
            if k > 0 {
                create_hashes(&b.columns()[..k], &self.hasher, &mut hashes)?;
            }
            if n == 1 || k == 0 {
                // One shard, or no keys: an aggregate without GROUP BY is one group.
                routed[0].push((b.columns().to_vec(), hashes));
                continue;
            }
            let mut idx: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
            for (row, h) in hashes.iter().enumerate() {
                idx[shard_of(*h, n)].push(row as u32);
            }
            for (shard, rows) in idx.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let shard_hashes = rows.iter().map(|r| hashes[*r as usize]).collect();
                let rows = UInt32Array::from(rows);
                let cols = b
                    .columns()
                    .iter()
                    .map(|c| take(c, &rows, None))
                    .collect::<Result<_, _>>()?;
                routed[shard].push((cols, shard_hashes));
            }
        }
        Ok(routed)
    }

    /// Routes each partial batch's rows to their shard (the exchange), then merges the
    /// shards in parallel. Returns the rows routed to each shard.
    pub fn merge(&mut self, partials: &[RecordBatch]) -> Result<Vec<u64>> {
        self.merge_with(partials, false)
    }

    fn merge_with(&mut self, partials: &[RecordBatch], replace: bool) -> Result<Vec<u64>> {
        let routed = self.route(partials)?;
        let counts = routed
            .iter()
            .map(|b| b.iter().map(|(_, h)| h.len() as u64).sum())
            .collect();
        let spec = &self.spec;
        let merge_shard = |shard: &mut StateShard, batches: Routed| -> Result<()> {
            batches
                .iter()
                .try_for_each(|(cols, hashes)| shard.merge(spec, cols, hashes, replace))
        };
        if self.shards.len() == 1 {
            let batches = routed.into_iter().next().unwrap_or_default();
            merge_shard(&mut self.shards[0], batches)?;
            return Ok(counts);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .shards
                .iter_mut()
                .zip(routed)
                .filter(|(_, b)| !b.is_empty())
                .map(|(shard, batches)| s.spawn(move || merge_shard(shard, batches)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataFusionError::Execution("a state shard panicked".into()))
                })
            })
        })?;
        Ok(counts)
    }

    /// Puts checkpointed rows (a snapshot, or a delta applied after it) back: each row
    /// is its group's whole state, replacing what the group held. Nothing counts as
    /// changed afterwards.
    /// Groups restored without a last update (a checkpoint taken without a TTL) count
    /// as updated now.
    pub fn restore(&mut self, rows: &[RecordBatch]) -> Result<()> {
        let now = crate::gen::wall_ms();
        self.shards.iter_mut().for_each(|s| s.now = now);
        let _ = self.merge_with(rows, true)?;
        for s in &mut self.shards {
            s.touched.clear();
            s.dirty.clear();
            s.old.clear();
            s.prior.clear();
            // Restored times arrive in any order: the clock keeps its buckets in order.
            s.clock = s.clock.as_ref().map(|c| c.renamed(|id| Some(*id)));
        }
        Ok(())
    }

    /// All groups as keys + state columns (the Partial schema). The state is kept.
    pub fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let schema = self.state_schema();
        let mut out = Vec::new();
        for shard in &mut self.shards {
            if shard.keys.is_empty() {
                continue;
            }
            let cols = shard.snapshot()?;
            out.push(RecordBatch::try_new(Arc::clone(&schema), cols)?);
        }
        Ok(out)
    }

    /// The groups changed since the last delta (or snapshot restore), and every group
    /// of `slice`, as keys + state columns: what an incremental checkpoint writes.
    pub fn delta(&mut self, slice: Option<Slice>) -> Result<Vec<RecordBatch>> {
        let schema = self.state_schema();
        let mut out = Vec::new();
        for shard in &mut self.shards {
            if let Some(cols) = shard.delta(slice)? {
                out.push(RecordBatch::try_new(Arc::clone(&schema), cols)?);
            }
        }
        Ok(out)
    }

    /// Drops every group (their results were final and emitted).
    pub fn clear(&mut self) -> Result<()> {
        for s in &mut self.shards {
            *s = StateShard::new(&self.spec)?;
        }
        Ok(())
    }

    /// Forgets which groups changed since the last delta (a full snapshot was taken).
    pub fn clear_delta(&mut self) {
        for s in &mut self.shards {
            s.dirty.clear();
            s.snapshotted = true;
        }
    }

    /// Keys + final values of every group (complete mode) or of the groups changed since
    /// the last emit (update mode). The state is kept either way.
    pub fn emit(&mut self, only_changed: bool) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for shard in &mut self.shards {
            if let Some(b) = shard.emit(&self.spec, only_changed)? {
                out.push(b);
            }
        }
        Ok(out)
    }
}
