//! Per-group aggregate state that can be read for any set of groups.
//!
//! DataFusion's `GroupsAccumulator` merges fast but evaluates only all groups (or the
//! first n) and empties itself doing it, so a batch that touches 1 % of the groups
//! would pay for all of them. [`GroupAcc`] keeps one slot per group id and evaluates
//! (or exports the partial state of) exactly the ids asked for. `count`, `sum`, `avg`,
//! `min` and `max` over primitive types are columnar `Vec`s here; every other aggregate
//! keeps one DataFusion `Accumulator` per group, so every aggregate DataFusion has still
//! works (the merge is its own `merge_batch`).
//!
//! The partial state is DataFusion's Partial schema for the aggregate: what stage 1
//! produces and what a checkpoint stores.

use std::sync::Arc;

use arrow::array::{
    new_empty_array, ArrayRef, ArrowPrimitiveType, AsArray, Float64Array, Int64Array,
    PrimitiveArray, UInt32Array, UInt64Array,
};
use arrow::compute::take;
use arrow::datatypes::*;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// One aggregate's state over the groups of a shard, by group id.
pub trait GroupAcc: Send {
    /// Makes room for group ids below `n`.
    fn resize(&mut self, n: usize);
    /// Merges partial-state rows (this aggregate's state columns) into groups `ids[row]`.
    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()>;
    /// The final values of `ids`, in that order.
    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef>;
    /// The partial-state columns of `ids`, in that order.
    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>>;
    /// Empties group `id`'s slot (a removed group, or one restored from a newer delta).
    fn clear(&mut self, id: u32);
    /// Bytes held.
    fn size(&self) -> usize;
}

/// The state kept for `agg`: columnar where the aggregate is one of the common ones
/// over a primitive type, one DataFusion `Accumulator` per group otherwise.
pub fn for_aggregate(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupAcc>> {
    let out = agg.field().data_type().clone();
    let states: Vec<DataType> = agg
        .state_fields()?
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let plain = !agg.is_distinct();
    let name = agg.fun().name();
    let native: Option<Box<dyn GroupAcc>> = match (name, states.as_slice()) {
        ("count", [DataType::Int64]) if plain => Some(Box::new(Count::default())),
        ("avg" | "mean", [DataType::UInt64, DataType::Float64])
            if plain && out == DataType::Float64 =>
        {
            Some(Box::new(Avg::default()))
        }
        ("sum", [s]) if plain && *s == out => sum_of(&out),
        ("min", [s]) if plain && *s == out => min_max_of::<false>(&out),
        ("max", [s]) if plain && *s == out => min_max_of::<true>(&out),
        _ => None,
    };
    Ok(match native {
        Some(n) => n,
        None => Box::new(PerGroup::new(Arc::clone(agg), out, states)),
    })
}

fn sum_of(dt: &DataType) -> Option<Box<dyn GroupAcc>> {
    Some(match dt {
        DataType::Int64 => Box::new(Sum::<Int64Type>::new(dt)),
        DataType::UInt64 => Box::new(Sum::<UInt64Type>::new(dt)),
        DataType::Float64 => Box::new(Sum::<Float64Type>::new(dt)),
        DataType::Decimal128(_, _) => Box::new(Sum::<Decimal128Type>::new(dt)),
        _ => return None,
    })
}

fn min_max_of<const MAX: bool>(dt: &DataType) -> Option<Box<dyn GroupAcc>> {
    macro_rules! mm {
        ($t:ty) => {
            Box::new(MinMax::<$t, MAX>::new(dt)) as Box<dyn GroupAcc>
        };
    }
    Some(match dt {
        DataType::Int8 => mm!(Int8Type),
        DataType::Int16 => mm!(Int16Type),
        DataType::Int32 => mm!(Int32Type),
        DataType::Int64 => mm!(Int64Type),
        DataType::UInt8 => mm!(UInt8Type),
        DataType::UInt16 => mm!(UInt16Type),
        DataType::UInt32 => mm!(UInt32Type),
        DataType::UInt64 => mm!(UInt64Type),
        DataType::Float32 => mm!(Float32Type),
        DataType::Float64 => mm!(Float64Type),
        DataType::Date32 => mm!(Date32Type),
        DataType::Date64 => mm!(Date64Type),
        DataType::Decimal128(_, _) => mm!(Decimal128Type),
        DataType::Timestamp(TimeUnit::Second, _) => mm!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => mm!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => mm!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => mm!(TimestampNanosecondType),
        _ => return None,
    })
}

fn gather<'a, T: Copy>(v: &'a [T], ids: &'a [u32]) -> impl Iterator<Item = T> + 'a {
    ids.iter().map(move |i| v[*i as usize])
}

fn state_col<'a>(states: &'a [ArrayRef], i: usize) -> Result<&'a ArrayRef> {
    states
        .get(i)
        .ok_or_else(|| DataFusionError::Internal("partial state column missing".into()))
}

/// `count(…)`: the partial state is the count itself.
#[derive(Default)]
struct Count {
    counts: Vec<i64>,
}

impl GroupAcc for Count {
    fn resize(&mut self, n: usize) {
        self.counts.resize(n, 0);
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let c = state_col(states, 0)?.as_primitive::<Int64Type>();
        for (v, id) in c.iter().zip(ids) {
            self.counts[*id as usize] += v.unwrap_or(0);
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(gather(
            &self.counts,
            ids,
        ))))
    }

    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(ids)?])
    }

    fn clear(&mut self, id: u32) {
        self.counts[id as usize] = 0;
    }

    fn size(&self) -> usize {
        self.counts.capacity() * 8
    }
}

/// `sum(…)`: a running sum, null while no value was added.
struct Sum<T: ArrowPrimitiveType> {
    sums: Vec<T::Native>,
    seen: Vec<bool>,
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> Sum<T> {
    fn new(dt: &DataType) -> Self {
        Self {
            sums: Vec::new(),
            seen: Vec::new(),
            data_type: dt.clone(),
        }
    }
}

impl<T: ArrowPrimitiveType> GroupAcc for Sum<T> {
    fn resize(&mut self, n: usize) {
        self.sums.resize(n, T::Native::default());
        self.seen.resize(n, false);
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let s = state_col(states, 0)?.as_primitive::<T>();
        for (v, id) in s.iter().zip(ids) {
            if let Some(v) = v {
                let slot = &mut self.sums[*id as usize];
                *slot = slot.add_wrapping(v);
                self.seen[*id as usize] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        let a: PrimitiveArray<T> = ids
            .iter()
            .map(|i| self.seen[*i as usize].then(|| self.sums[*i as usize]))
            .collect();
        Ok(Arc::new(a.with_data_type(self.data_type.clone())))
    }

    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(ids)?])
    }

    fn clear(&mut self, id: u32) {
        self.sums[id as usize] = T::Native::default();
        self.seen[id as usize] = false;
    }

    fn size(&self) -> usize {
        self.sums.capacity() * std::mem::size_of::<T::Native>() + self.seen.capacity()
    }
}

/// `avg(…)` over a non-decimal number: DataFusion's partial state (count, sum).
#[derive(Default)]
struct Avg {
    counts: Vec<u64>,
    sums: Vec<f64>,
}

impl GroupAcc for Avg {
    fn resize(&mut self, n: usize) {
        self.counts.resize(n, 0);
        self.sums.resize(n, 0.0);
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let c = state_col(states, 0)?.as_primitive::<UInt64Type>();
        let s = state_col(states, 1)?.as_primitive::<Float64Type>();
        for ((c, s), id) in c.iter().zip(s.iter()).zip(ids) {
            self.counts[*id as usize] += c.unwrap_or(0);
            self.sums[*id as usize] += s.unwrap_or(0.0);
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        let a: Float64Array = ids
            .iter()
            .map(|i| {
                let (c, s) = (self.counts[*i as usize], self.sums[*i as usize]);
                (c > 0).then(|| s / c as f64)
            })
            .collect();
        Ok(Arc::new(a))
    }

    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let c = UInt64Array::from_iter_values(gather(&self.counts, ids));
        let s = Float64Array::from_iter_values(gather(&self.sums, ids));
        Ok(vec![Arc::new(c), Arc::new(s)])
    }

    fn clear(&mut self, id: u32) {
        self.counts[id as usize] = 0;
        self.sums[id as usize] = 0.0;
    }

    fn size(&self) -> usize {
        self.counts.capacity() * 16
    }
}

/// `min(…)` / `max(…)` (`MAX`) over a primitive type.
struct MinMax<T: ArrowPrimitiveType, const MAX: bool> {
    values: Vec<T::Native>,
    seen: Vec<bool>,
    data_type: DataType,
}

impl<T: ArrowPrimitiveType, const MAX: bool> MinMax<T, MAX> {
    fn new(dt: &DataType) -> Self {
        Self {
            values: Vec::new(),
            seen: Vec::new(),
            data_type: dt.clone(),
        }
    }
}

impl<T: ArrowPrimitiveType, const MAX: bool> GroupAcc for MinMax<T, MAX> {
    fn resize(&mut self, n: usize) {
        self.values.resize(n, T::Native::default());
        self.seen.resize(n, false);
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let s = state_col(states, 0)?.as_primitive::<T>();
        for (v, id) in s.iter().zip(ids) {
            let Some(v) = v else { continue };
            let i = *id as usize;
            let better = match MAX {
                true => v.is_gt(self.values[i]),
                false => v.is_lt(self.values[i]),
            };
            if !self.seen[i] || better {
                self.values[i] = v;
                self.seen[i] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        let a: PrimitiveArray<T> = ids
            .iter()
            .map(|i| self.seen[*i as usize].then(|| self.values[*i as usize]))
            .collect();
        Ok(Arc::new(a.with_data_type(self.data_type.clone())))
    }

    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(ids)?])
    }

    fn clear(&mut self, id: u32) {
        self.seen[id as usize] = false;
    }

    fn size(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T::Native>() + self.seen.capacity()
    }
}

/// Any other aggregate: one DataFusion `Accumulator` per group, merged with its own
/// `merge_batch` (rows of one group at a time).
struct PerGroup {
    agg: Arc<AggregateFunctionExpr>,
    accs: Vec<Option<Box<dyn Accumulator>>>,
    output: DataType,
    states: Vec<DataType>,
    /// (group id, row) pairs of the batch being merged, reused.
    order: Vec<(u32, u32)>,
    /// Bytes the accumulators report, kept up to date as they change.
    bytes: usize,
}

impl PerGroup {
    fn new(agg: Arc<AggregateFunctionExpr>, output: DataType, states: Vec<DataType>) -> Self {
        Self {
            agg,
            accs: Vec::new(),
            output,
            states,
            order: Vec::new(),
            bytes: 0,
        }
    }

    fn slot(&mut self, id: u32) -> Result<&mut Box<dyn Accumulator>> {
        let slot = &mut self.accs[id as usize];
        if slot.is_none() {
            *slot = Some(self.agg.create_accumulator()?);
        }
        slot.as_mut()
            .ok_or_else(|| DataFusionError::Internal("accumulator slot".into()))
    }
}

fn to_array(values: Vec<ScalarValue>, dt: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(new_empty_array(dt));
    }
    ScalarValue::iter_to_array(values)
}

impl GroupAcc for PerGroup {
    fn resize(&mut self, n: usize) {
        self.accs.resize_with(n, || None);
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(ids.iter().enumerate().map(|(r, id)| (*id, r as u32)));
        order.sort_unstable();
        let mut at = 0;
        while at < order.len() {
            let id = order[at].0;
            let end = at + order[at..].partition_point(|(g, _)| *g == id);
            let rows = UInt32Array::from_iter_values(order[at..end].iter().map(|(_, r)| *r));
            let cols = states
                .iter()
                .map(|c| take(c, &rows, None))
                .collect::<Result<Vec<_>, _>>()?;
            let acc = self.slot(id)?;
            let before = acc.size();
            acc.merge_batch(&cols)?;
            let after = acc.size();
            self.bytes = (self.bytes + after).saturating_sub(before);
            at = end;
        }
        self.order = order;
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        let mut values = Vec::with_capacity(ids.len());
        for id in ids {
            values.push(self.slot(*id)?.evaluate()?);
        }
        to_array(values, &self.output)
    }

    fn state(&mut self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let mut cols: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(ids.len()); self.states.len()];
        for id in ids {
            // `Accumulator::state` consumes the state: the group gets it merged back.
            let state = self.slot(*id)?.state()?;
            let arrays = state
                .iter()
                .map(ScalarValue::to_array)
                .collect::<Result<Vec<_>>>()?;
            let mut fresh = self.agg.create_accumulator()?;
            fresh.merge_batch(&arrays)?;
            self.accs[*id as usize] = Some(fresh);
            for (col, v) in cols.iter_mut().zip(state) {
                col.push(v);
            }
        }
        cols.into_iter()
            .zip(&self.states)
            .map(|(c, dt)| to_array(c, dt))
            .collect()
    }

    fn clear(&mut self, id: u32) {
        if let Some(a) = self.accs[id as usize].take() {
            self.bytes = self.bytes.saturating_sub(a.size());
        }
    }

    fn size(&self) -> usize {
        self.accs.capacity() * 16 + self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn sum_is_null_until_a_value_arrives_and_counts_add() {
        let mut s = Sum::<Int64Type>::new(&DataType::Int64);
        s.resize(3);
        let part: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), None, Some(5)]));
        s.merge(&[part], &[0, 1, 0]).unwrap();
        let out = s.evaluate(&[1, 0, 2]).unwrap();
        let out = out.as_primitive::<Int64Type>();
        assert!(out.is_null(0) && out.is_null(2));
        assert_eq!(out.value(1), 7);
    }
}
