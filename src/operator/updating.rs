//! The aggregate over an updating input: its rows carry weights (the `-old, +new`
//! changes of another GROUP BY, filtered and projected on the way), so every row is
//! added or taken back ([`crate::state::retract`]). A group whose rows all left is
//! deleted: it emits only `-old`.
//!
//! There is no stage 1 here: partial aggregates cannot take rows back, so the group
//! keys and aggregate arguments are evaluated on the input rows and applied directly.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::{kind, BatchContext, Emit, Operator, Snapshot};
use crate::checkpoint::{Commit, WriteKind};
use crate::metrics::BatchProgress;
use crate::state::keys::KeyTable;
use crate::state::retract::{self, RetractAcc};
use crate::state::Marks;

/// What an aggregate over an updating input computes.
#[derive(Debug, Clone)]
pub struct UpdatingSpec {
    /// The GROUP BY expressions over the input rows.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Schema of the group key columns.
    pub key_schema: SchemaRef,
    /// The aggregates, with their FILTER clauses.
    pub aggregates: Vec<(Arc<AggregateFunctionExpr>, Option<Arc<dyn PhysicalExpr>>)>,
    /// The input rows' schema (without the weight column).
    pub input_schema: SchemaRef,
    /// Keys + values, as the query above expects them.
    pub output_schema: SchemaRef,
}

impl UpdatingSpec {
    /// Checks every aggregate can take rows back (a planning error names the one that
    /// cannot).
    pub fn check(&self) -> Result<()> {
        for (agg, _) in &self.aggregates {
            retract::for_aggregate(agg, &self.input_schema)?;
        }
        Ok(())
    }
}

/// GROUP BY over rows that come and go.
pub struct UpdatingAggregateOp {
    spec: UpdatingSpec,
    emit: Emit,
    changes: SchemaRef,
    keys: KeyTable,
    /// Rows (sum of weights) per group: zero means the group is gone.
    rows: Vec<i64>,
    accs: Vec<Box<dyn RetractAcc>>,
    touched: Marks,
    dirty: Marks,
    /// Values of touched groups before this batch (emitting changes), and which groups
    /// they were, in the same order.
    old: Vec<RecordBatch>,
    prior: Marks,
    hasher: RandomState,
    ids: Vec<u32>,
}

impl UpdatingAggregateOp {
    /// Empty state for `spec`.
    pub fn new(spec: &UpdatingSpec, emit: Emit) -> Result<Self> {
        let accs = spec
            .aggregates
            .iter()
            .map(|(a, _)| retract::for_aggregate(a, &spec.input_schema))
            .collect::<Result<_>>()?;
        Ok(Self {
            changes: super::with_change(&spec.output_schema),
            keys: KeyTable::new(&spec.key_schema)?,
            spec: spec.clone(),
            emit,
            rows: Vec::new(),
            accs,
            touched: Marks::default(),
            dirty: Marks::default(),
            old: Vec::new(),
            prior: Marks::default(),
            hasher: crate::state::key_hasher(),
            ids: Vec::new(),
        })
    }

    /// Schema of the checkpointed state: keys, rows per group, each aggregate's state.
    fn state_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .spec
            .key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("__sluice_rows", DataType::Int64, false));
        for ((agg, _), acc) in self.spec.aggregates.iter().zip(&self.accs) {
            fields.extend(acc.state_fields(agg.name()));
        }
        Arc::new(Schema::new(fields))
    }

    fn resize(&mut self) {
        let n = self.keys.capacity();
        self.rows.resize(n, 0);
        for a in &mut self.accs {
            a.resize(n);
        }
    }

    fn apply(&mut self, b: &RecordBatch) -> Result<()> {
        let n = b.num_rows();
        let weight = super::weights(b)?;
        let keys = self.keys_of(b)?;
        let mut hashes = vec![0; n];
        if !keys.is_empty() {
            create_hashes(&keys, &self.hasher, &mut hashes)?;
        }
        let before = self.keys.capacity();
        let mut ids = std::mem::take(&mut self.ids);
        self.keys.intern(&keys, &hashes, n, &mut ids)?;
        self.resize();
        if self.emit == Emit::Changes {
            let mut olds = Vec::new();
            for id in &ids {
                let existed = (*id as usize) < before && self.keys.is_live(*id);
                if existed && !self.touched.contains(*id) && self.prior.insert(*id, before) {
                    olds.push(*id);
                }
            }
            if !olds.is_empty() {
                let old = self.values_of(&olds)?;
                self.old.push(old);
            }
        }
        for (w, id) in weight.iter().zip(&ids) {
            self.rows[*id as usize] += w;
        }
        for (i, (agg, filter)) in self.spec.aggregates.iter().enumerate() {
            let args = agg
                .expressions()
                .iter()
                .map(|e| e.evaluate(b)?.into_array(n))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let w: std::borrow::Cow<[i64]> = match filter {
                None => std::borrow::Cow::Borrowed(&weight),
                Some(f) => {
                    let keep = f.evaluate(b)?.into_array(n)?;
                    let keep: &BooleanArray = keep.as_boolean();
                    weight
                        .iter()
                        .enumerate()
                        .map(|(r, w)| {
                            if keep.is_valid(r) && keep.value(r) {
                                *w
                            } else {
                                0
                            }
                        })
                        .collect::<Vec<i64>>()
                        .into()
                }
            };
            self.accs[i].update(&args, &w, &ids)?;
        }
        let cap = self.keys.capacity();
        self.touched.mark(&ids, cap);
        self.dirty.mark(&ids, cap);
        self.ids = ids;
        Ok(())
    }

    fn values_of(&mut self, ids: &[u32]) -> Result<RecordBatch> {
        let mut cols = self.keys.keys(ids)?;
        for a in &mut self.accs {
            cols.push(a.evaluate(ids)?);
        }
        Ok(RecordBatch::try_new(
            Arc::clone(&self.spec.output_schema),
            cols,
        )?)
    }

    /// Deletes the touched groups with no rows left; returns the touched groups that live.
    fn settle(&mut self) -> Vec<u32> {
        let mut live = Vec::new();
        for id in self.touched.take() {
            if self.rows[id as usize] > 0 {
                live.push(id);
            } else if self.keys.is_live(id) {
                self.keys.remove(id);
                self.accs.iter_mut().for_each(|a| a.clear(id));
            }
        }
        live
    }

    fn state_of(&self, ids: &[u32]) -> Result<RecordBatch> {
        let mut cols = self.keys.keys(ids)?;
        cols.push(Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| self.rows[*i as usize].max(0)),
        )));
        for a in &self.accs {
            cols.extend(a.state(ids)?);
        }
        Ok(RecordBatch::try_new(self.state_schema(), cols)?)
    }

    fn load(&mut self, b: &RecordBatch) -> Result<()> {
        let k = self.spec.key_schema.fields().len();
        let n = b.num_rows();
        let keys: Vec<ArrayRef> = b.columns()[..k].to_vec();
        let mut hashes = vec![0; n];
        if k > 0 {
            create_hashes(&keys, &self.hasher, &mut hashes)?;
        }
        let before = self.keys.capacity();
        let mut ids = Vec::new();
        self.keys.intern(&keys, &hashes, n, &mut ids)?;
        self.resize();
        for id in ids.iter().filter(|id| (**id as usize) < before) {
            self.accs.iter_mut().for_each(|a| a.clear(*id));
        }
        let rows = b.column(k).as_primitive::<Int64Type>();
        let mut at = k + 1;
        for (i, acc) in self.accs.iter_mut().enumerate() {
            let width = acc.state_fields(self.spec.aggregates[i].0.name()).len();
            acc.load(&b.columns()[at..at + width], &ids)?;
            at += width;
        }
        for (r, id) in rows.values().iter().zip(&ids) {
            self.rows[*id as usize] = *r;
            if *r == 0 {
                self.keys.remove(*id);
                self.accs.iter_mut().for_each(|a| a.clear(*id));
            }
        }
        Ok(())
    }
}

impl Operator for UpdatingAggregateOp {
    fn process(
        &mut self,
        inputs: super::Inputs,
        _ctx: &mut BatchContext,
    ) -> Result<Vec<RecordBatch>> {
        let input = super::only_input(inputs)?;
        for b in input.iter().filter(|b| b.num_rows() > 0) {
            self.apply(b)?;
        }
        let live = self.settle();
        let mut out = Vec::new();
        match self.emit {
            Emit::Changes => {
                // An old row is `-U` when its group lives on, `-D` when it is gone.
                let mut at = 0;
                for b in std::mem::take(&mut self.old) {
                    let kinds = self.prior.ids()[at..at + b.num_rows()]
                        .iter()
                        .map(|id| match self.keys.is_live(*id) {
                            true => kind::UPDATE_BEFORE,
                            false => kind::DELETE,
                        })
                        .collect();
                    at += b.num_rows();
                    out.push(super::with_kinds(&b, kinds, &self.changes)?);
                }
                if !live.is_empty() {
                    let kinds = live
                        .iter()
                        .map(|id| match self.prior.contains(*id) {
                            true => kind::UPDATE_AFTER,
                            false => kind::INSERT,
                        })
                        .collect();
                    let b = self.values_of(&live)?;
                    out.push(super::with_kinds(&b, kinds, &self.changes)?);
                }
                self.prior.clear();
            }
            Emit::All => {
                let ids = self.keys.live_ids();
                if !ids.is_empty() {
                    out.push(self.values_of(&ids)?);
                }
            }
            Emit::Upserts | Emit::Closed => {
                return Err(DataFusionError::Internal(
                    "an aggregate over an updating input emits changes or all rows".into(),
                ))
            }
        }
        Ok(out)
    }

    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot> {
        let (full, slice) = kind.parts();
        let ids = match kind {
            WriteKind::Full => {
                self.dirty.clear();
                self.keys.live_ids()
            }
            WriteKind::Delta(slice) => crate::state::delta_ids(&self.keys, &mut self.dirty, slice),
        };
        let rows = match ids.is_empty() {
            true => Vec::new(),
            false => vec![self.state_of(&ids)?],
        };
        Ok(Snapshot {
            schema: self.state_schema(),
            rows,
            full,
            slice,
        })
    }

    fn state_rows(&self) -> u64 {
        self.keys.len() as u64
    }

    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        _: &Commit,
    ) -> Result<()> {
        for b in full.iter().chain(deltas.iter().flatten()) {
            self.load(b)?;
        }
        self.touched.clear();
        self.dirty.clear();
        self.old.clear();
        self.prior.clear();
        Ok(())
    }

    fn describe(&self, p: &mut BatchProgress) {
        p.state_groups += self.keys.len();
        p.state_bytes += self.keys.size()
            + self.rows.capacity() * 8
            + self.accs.iter().map(|a| a.size()).sum::<usize>();
    }
}

impl super::sharded::Keyed for UpdatingAggregateOp {
    fn input_groups(&self, _input: usize, b: &RecordBatch) -> Result<Vec<u64>> {
        self.groups_of(&self.keys_of(b)?, b.num_rows())
    }

    fn state_groups(&self, b: &RecordBatch) -> Result<Vec<u64>> {
        let k = self.spec.key_schema.fields().len();
        self.groups_of(&b.columns()[..k], b.num_rows())
    }
}

impl UpdatingAggregateOp {
    /// The GROUP BY columns of input rows.
    fn keys_of(&self, b: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = b.num_rows();
        self.spec
            .group_exprs
            .iter()
            .map(|e| e.evaluate(b)?.into_array(n))
            .collect()
    }

    /// The key group of each of `n` rows with key columns `keys`.
    fn groups_of(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u64>> {
        let mut hashes = vec![0; n];
        if !keys.is_empty() {
            create_hashes(keys, &self.hasher, &mut hashes)?;
        }
        Ok(hashes.into_iter().map(crate::state::key_group).collect())
    }
}
