//! Aggregation state kept across micro-batches, built from DataFusion's own primitives
//! (design.md: "State merge with DataFusion primitives").
//!
//! ```text
//!  stage 1 partial aggregates (keys + state columns, DataFusion's Partial schema)
//!        │ exchange: hash(keys) mod shards
//!        ▼
//!  StateShard 0 … StateShard n-1   (merged in parallel, one thread per shard)
//!    GroupValues (keys → group id) + one GroupsAccumulator per aggregate, merge_batch
//!        │ emit: evaluate the groups to show (all, or the ones this batch touched)
//!        ▼
//!  keys + final values (the Aggregate's output schema)
//! ```
//! Every DataFusion aggregate works, because merging is the aggregate's own
//! `merge_batch`; aggregates without a `GroupsAccumulator` go through DataFusion's
//! `GroupsAccumulatorAdapter`. A shard's snapshot is the stock Partial schema, so it can
//! be checked against a plain batch query and written to a checkpoint.

pub mod session;
pub mod window;

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::error::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

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
    fn accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
        if agg.groups_accumulator_supported() {
            agg.create_groups_accumulator()
        } else {
            let agg = Arc::clone(agg);
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                agg.create_accumulator()
            })))
        }
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggregates.iter().map(Self::accumulator).collect()
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

/// The group keys of a shard: DataFusion's `GroupValues`, or the one group of an
/// aggregate without GROUP BY (`GroupValues` needs at least one key column).
enum GroupKeys {
    Columns(Box<dyn GroupValues>),
    Global { exists: bool },
}

impl GroupKeys {
    fn new(key_schema: &SchemaRef) -> Result<Self> {
        Ok(if key_schema.fields().is_empty() {
            GroupKeys::Global { exists: false }
        } else {
            GroupKeys::Columns(new_group_values(
                Arc::clone(key_schema),
                &GroupOrdering::None,
            )?)
        })
    }

    /// Group ids of `rows` rows with key columns `keys`, new keys added.
    fn intern(&mut self, keys: &[ArrayRef], rows: usize, ids: &mut Vec<usize>) -> Result<()> {
        match self {
            GroupKeys::Columns(g) => g.intern(keys, ids),
            GroupKeys::Global { exists } => {
                *exists |= rows > 0;
                ids.clear();
                ids.resize(rows, 0);
                Ok(())
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            GroupKeys::Columns(g) => g.len(),
            GroupKeys::Global { exists } => usize::from(*exists),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn size(&self) -> usize {
        match self {
            GroupKeys::Columns(g) => g.size(),
            GroupKeys::Global { .. } => 0,
        }
    }

    /// Every key, in group id order; the keys are gone afterwards.
    fn emit_all(&mut self) -> Result<Vec<ArrayRef>> {
        match self {
            GroupKeys::Columns(g) => g.emit(EmitTo::All),
            GroupKeys::Global { exists } => {
                *exists = false;
                Ok(Vec::new())
            }
        }
    }
}

/// One shard of the state: the groups whose key hashes to it.
pub struct StateShard {
    groups: GroupKeys,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    /// Group ids merged into since the last emit (for update mode).
    touched: Vec<bool>,
    ids: Vec<usize>,
}

impl StateShard {
    fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(Self {
            groups: GroupKeys::new(&spec.key_schema)?,
            accs: spec.accumulators()?,
            touched: Vec::new(),
            ids: Vec::new(),
        })
    }

    /// Merges a partial batch (keys + state columns) into this shard.
    fn merge(&mut self, spec: &AggregateSpec, cols: &[ArrayRef]) -> Result<()> {
        let (keys, states) = spec.split(cols);
        let rows = cols.first().map_or(0, |c| c.len());
        self.groups.intern(keys, rows, &mut self.ids)?;
        let n = self.groups.len();
        self.touched.resize(n, false);
        for &id in &self.ids {
            self.touched[id] = true;
        }
        for (acc, st) in self.accs.iter_mut().zip(states) {
            acc.merge_batch(st, &self.ids, n)?;
        }
        Ok(())
    }

    /// The shard's state as keys + state columns (the Partial schema). Taking the state
    /// out of DataFusion's accumulators empties them, so it is merged straight back.
    pub fn snapshot(&mut self, spec: &AggregateSpec) -> Result<Vec<ArrayRef>> {
        let n = self.groups.len();
        let mut cols = self.groups.emit_all()?;
        // A fresh key table: re-interning into an emptied one is not supported by every
        // GroupValues implementation.
        self.groups = GroupKeys::new(&spec.key_schema)?;
        let mut states = Vec::with_capacity(self.accs.len());
        for acc in &mut self.accs {
            states.push(acc.state(EmitTo::All)?);
        }
        self.groups.intern(&cols, n, &mut self.ids)?;
        debug_assert!(self.ids.iter().copied().eq(0..n));
        for (acc, st) in self.accs.iter_mut().zip(&states) {
            acc.merge_batch(st, &self.ids, n)?;
        }
        cols.extend(states.into_iter().flatten());
        Ok(cols)
    }

    /// Keys + final values of all groups, or only of those touched since the last emit.
    fn emit(&mut self, spec: &AggregateSpec, only_touched: bool) -> Result<Option<RecordBatch>> {
        if self.groups.is_empty() {
            return Ok(None);
        }
        let mut cols = self.snapshot(spec)?;
        if only_touched {
            let mask = BooleanArray::from(std::mem::take(&mut self.touched));
            cols = cols
                .iter()
                .map(|c| filter(c, &mask))
                .collect::<Result<_, _>>()?;
        }
        self.touched.clear();
        self.touched.resize(self.groups.len(), false);
        let rows = cols.first().map(|c| c.len()).unwrap_or(0);
        if rows == 0 {
            return Ok(None);
        }
        let ids: Vec<usize> = (0..rows).collect();
        let (keys, states) = spec.split(&cols);
        let mut out: Vec<ArrayRef> = keys.to_vec();
        for (agg, st) in spec.aggregates.iter().zip(states) {
            let mut acc = AggregateSpec::accumulator(agg)?;
            acc.merge_batch(st, &ids, rows)?;
            out.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&spec.output_schema),
            out,
        )?))
    }

    /// Memory held by this shard, in bytes.
    fn size(&self) -> usize {
        self.groups.size() + self.accs.iter().map(|a| a.size()).sum::<usize>()
    }
}

/// The state of one aggregation, sharded by hash of the group key.
pub struct ShardedState {
    spec: AggregateSpec,
    shards: Vec<StateShard>,
    hasher: RandomState,
}

impl ShardedState {
    /// Empty state with `shards` shards.
    pub fn new(spec: AggregateSpec, shards: usize) -> Result<Self> {
        let shards = (0..shards.max(1))
            .map(|_| StateShard::new(&spec))
            .collect::<Result<_>>()?;
        Ok(Self {
            spec,
            shards,
            hasher: RandomState::with_seed(0x51u64 << 32 | 0x1ce),
        })
    }

    /// What this state aggregates.
    pub fn spec(&self) -> &AggregateSpec {
        &self.spec
    }

    /// Groups held over all shards.
    pub fn groups(&self) -> usize {
        self.shards.iter().map(|s| s.groups.len()).sum()
    }

    /// Bytes held over all shards.
    pub fn size(&self) -> usize {
        self.shards.iter().map(StateShard::size).sum()
    }

    /// Groups held by each shard.
    pub fn shard_groups(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.groups.len()).collect()
    }

    /// Routes each partial batch's rows to their shard (the exchange), then merges the
    /// shards in parallel. Returns the rows routed to each shard.
    pub fn merge(&mut self, partials: &[RecordBatch]) -> Result<Vec<u64>> {
        let n = self.shards.len();
        let mut routed: Vec<Vec<Vec<ArrayRef>>> = (0..n).map(|_| Vec::new()).collect();
        let k = self.spec.key_schema.fields().len();
        let mut hashes = Vec::new();
        for b in partials.iter().filter(|b| b.num_rows() > 0) {
            if n == 1 || k == 0 {
                // One shard, or no keys: an aggregate without GROUP BY is one group.
                routed[0].push(b.columns().to_vec());
                continue;
            }
            hashes.clear();
            hashes.resize(b.num_rows(), 0);
            create_hashes(&b.columns()[..k], &self.hasher, &mut hashes)?;
            let mut idx: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
            for (row, h) in hashes.iter().enumerate() {
                idx[(*h % n as u64) as usize].push(row as u32);
            }
            for (shard, rows) in idx.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let rows = UInt32Array::from(rows);
                let cols = b
                    .columns()
                    .iter()
                    .map(|c| take(c, &rows, None))
                    .collect::<Result<_, _>>()?;
                routed[shard].push(cols);
            }
        }
        let counts = routed
            .iter()
            .map(|b| {
                b.iter()
                    .map(|cols| cols.first().map_or(0, |c| c.len() as u64))
                    .sum()
            })
            .collect();
        let spec = &self.spec;
        let merge_shard = |shard: &mut StateShard, batches: Vec<Vec<ArrayRef>>| -> Result<()> {
            batches.iter().try_for_each(|cols| shard.merge(spec, cols))
        };
        if n == 1 {
            merge_shard(&mut self.shards[0], routed.pop().unwrap_or_default())?;
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
                    Err(datafusion::error::DataFusionError::Execution(
                        "a state shard panicked".into(),
                    ))
                })
            })
        })?;
        Ok(counts)
    }

    /// Merges a snapshot back into empty state; nothing counts as changed afterwards.
    pub fn restore(&mut self, rows: &[RecordBatch]) -> Result<()> {
        let _ = self.merge(rows)?;
        for s in &mut self.shards {
            s.touched.iter_mut().for_each(|t| *t = false);
        }
        Ok(())
    }

    /// All groups as keys + state columns (the Partial schema). The state is kept.
    pub fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for shard in &mut self.shards {
            if shard.groups.is_empty() {
                continue;
            }
            let cols = shard.snapshot(&self.spec)?;
            out.push(RecordBatch::try_new(
                Arc::clone(&self.spec.partial_schema),
                cols,
            )?);
        }
        Ok(out)
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
