//! Per-group aggregate state that can take rows back: what an aggregate over an
//! updating input (the changes of another GROUP BY) keeps.
//!
//! `count`, `sum` and `avg` are weighted sums (a `-1` row subtracts); `min`, `max` and
//! `count(DISTINCT …)` keep a multiset per group (value → how many rows hold it), since
//! taking back the current maximum needs the next one. The values are kept as arrow
//! row bytes, so every type orders and hashes the way Arrow does.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Float64Array, Int64Array, Int64Builder, ListBuilder,
    UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// One aggregate's retractable state over the groups of an updating aggregate.
pub trait RetractAcc: Send {
    /// Makes room for group ids below `n`.
    fn resize(&mut self, n: usize);
    /// Adds (`weights[row]` > 0) or takes back (< 0) the argument rows into `ids[row]`.
    fn update(&mut self, args: &[ArrayRef], weights: &[i64], ids: &[u32]) -> Result<()>;
    /// The values of `ids`.
    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef>;
    /// Fields of the checkpointed state.
    fn state_fields(&self, name: &str) -> Vec<Field>;
    /// The checkpointed state of `ids`.
    fn state(&self, ids: &[u32]) -> Result<Vec<ArrayRef>>;
    /// Loads checkpointed state into the (empty) slots `ids`.
    fn load(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()>;
    /// Empties a slot.
    fn clear(&mut self, id: u32);
    /// Bytes held.
    fn size(&self) -> usize;
}

/// The retractable state for `agg` (its arguments bound to `input`), or a planning
/// error naming it.
pub fn for_aggregate(agg: &AggregateFunctionExpr, input: &Schema) -> Result<Box<dyn RetractAcc>> {
    let name = agg.fun().name();
    let out = agg.field().data_type().clone();
    let arg = agg
        .expressions()
        .first()
        .map(|_| ())
        .ok_or_else(|| unsupported(agg.name()));
    Ok(match (name, agg.is_distinct(), &out) {
        ("count", false, _) => Box::new(Count::default()),
        ("count", true, _) => {
            arg?;
            Box::new(Multiset::new(agg, Pick::Distinct, input)?)
        }
        ("sum", false, DataType::Int64) => Box::new(Sum::new(DataType::Int64)),
        ("sum", false, DataType::Float64) => Box::new(Sum::new(DataType::Float64)),
        ("avg" | "mean", false, DataType::Float64) => Box::new(Sum::avg()),
        ("min", false, _) => Box::new(Multiset::new(agg, Pick::Min, input)?),
        ("max", false, _) => Box::new(Multiset::new(agg, Pick::Max, input)?),
        _ => return Err(unsupported(agg.name())),
    })
}

fn unsupported(name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{name} over an updating input (the changing result of another GROUP BY) is not supported; \
         Sluice takes rows back from count, sum and avg over integers and floats, min, max and count(DISTINCT …)"
    ))
}

fn arg0(args: &[ArrayRef]) -> Result<&ArrayRef> {
    args.first()
        .ok_or_else(|| DataFusionError::Internal("aggregate argument missing".into()))
}

/// `count(x)` / `count(*)`: weighted count of non-null rows.
#[derive(Default)]
struct Count {
    counts: Vec<i64>,
}

impl RetractAcc for Count {
    fn resize(&mut self, n: usize) {
        self.counts.resize(n, 0);
    }

    fn update(&mut self, args: &[ArrayRef], weights: &[i64], ids: &[u32]) -> Result<()> {
        let valid = args.first();
        for (row, (w, id)) in weights.iter().zip(ids).enumerate() {
            if valid.is_none_or(|a| a.is_valid(row)) {
                self.counts[*id as usize] += w;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| self.counts[*i as usize]),
        )))
    }

    fn state_fields(&self, name: &str) -> Vec<Field> {
        vec![Field::new(format!("{name}[count]"), DataType::Int64, false)]
    }

    fn state(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| self.counts[*i as usize]),
        ))])
    }

    fn load(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let c = arg0(states)?.as_primitive::<Int64Type>();
        for (v, id) in c.values().iter().zip(ids) {
            self.counts[*id as usize] = *v;
        }
        Ok(())
    }

    fn clear(&mut self, id: u32) {
        self.counts[id as usize] = 0;
    }

    fn size(&self) -> usize {
        self.counts.capacity() * 8
    }
}

/// `sum(x)` over Int64 or Float64, and `avg(x)` (a Float64 sum divided by the count):
/// the weighted sum and the number of non-null rows (null when none is left).
struct Sum {
    /// Int64 sums (exact) or Float64 sums, as the output type.
    ints: Vec<i64>,
    floats: Vec<f64>,
    rows: Vec<i64>,
    data_type: DataType,
    avg: bool,
}

impl Sum {
    fn new(data_type: DataType) -> Self {
        Self {
            ints: Vec::new(),
            floats: Vec::new(),
            rows: Vec::new(),
            data_type,
            avg: false,
        }
    }

    fn avg() -> Self {
        Self {
            avg: true,
            ..Self::new(DataType::Float64)
        }
    }

    fn is_int(&self) -> bool {
        self.data_type == DataType::Int64
    }
}

impl RetractAcc for Sum {
    fn resize(&mut self, n: usize) {
        if self.is_int() {
            self.ints.resize(n, 0);
        } else {
            self.floats.resize(n, 0.0);
        }
        self.rows.resize(n, 0);
    }

    fn update(&mut self, args: &[ArrayRef], weights: &[i64], ids: &[u32]) -> Result<()> {
        let a = cast(arg0(args)?, &self.data_type)?;
        if self.is_int() {
            let a = a.as_primitive::<Int64Type>();
            for ((v, w), id) in a.iter().zip(weights).zip(ids) {
                if let Some(v) = v {
                    let i = *id as usize;
                    self.ints[i] = self.ints[i].wrapping_add(v.wrapping_mul(*w));
                    self.rows[i] += w;
                }
            }
        } else {
            let a = a.as_primitive::<Float64Type>();
            for ((v, w), id) in a.iter().zip(weights).zip(ids) {
                if let Some(v) = v {
                    let i = *id as usize;
                    self.floats[i] += v * *w as f64;
                    self.rows[i] += w;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        let live = |i: &u32| self.rows[*i as usize] > 0;
        Ok(match (self.is_int(), self.avg) {
            (true, _) => Arc::new(
                ids.iter()
                    .map(|i| live(i).then(|| self.ints[*i as usize]))
                    .collect::<Int64Array>(),
            ),
            (false, false) => Arc::new(
                ids.iter()
                    .map(|i| live(i).then(|| self.floats[*i as usize]))
                    .collect::<Float64Array>(),
            ),
            (false, true) => Arc::new(
                ids.iter()
                    .map(|i| {
                        live(i).then(|| self.floats[*i as usize] / self.rows[*i as usize] as f64)
                    })
                    .collect::<Float64Array>(),
            ),
        })
    }

    fn state_fields(&self, name: &str) -> Vec<Field> {
        vec![
            Field::new(format!("{name}[sum]"), self.data_type.clone(), false),
            Field::new(format!("{name}[rows]"), DataType::Int64, false),
        ]
    }

    fn state(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let sums: ArrayRef = match self.is_int() {
            true => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| self.ints[*i as usize]),
            )),
            false => Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| self.floats[*i as usize]),
            )),
        };
        let rows = Int64Array::from_iter_values(ids.iter().map(|i| self.rows[*i as usize]));
        Ok(vec![sums, Arc::new(rows)])
    }

    fn load(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let rows = states
            .get(1)
            .ok_or_else(|| DataFusionError::Internal("sum state".into()))?
            .as_primitive::<Int64Type>();
        for (i, id) in ids.iter().enumerate() {
            let id = *id as usize;
            self.rows[id] = rows.value(i);
            if self.is_int() {
                self.ints[id] = arg0(states)?.as_primitive::<Int64Type>().value(i);
            } else {
                self.floats[id] = arg0(states)?.as_primitive::<Float64Type>().value(i);
            }
        }
        Ok(())
    }

    fn clear(&mut self, id: u32) {
        let i = id as usize;
        self.rows[i] = 0;
        if self.is_int() {
            self.ints[i] = 0;
        } else {
            self.floats[i] = 0.0;
        }
    }

    fn size(&self) -> usize {
        (self.ints.capacity() + self.floats.capacity() + self.rows.capacity()) * 8
    }
}

/// What a multiset answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pick {
    Min,
    Max,
    Distinct,
}

/// `min`, `max`, `count(DISTINCT …)`: per group, each value's row bytes → its rows.
struct Multiset {
    pick: Pick,
    converter: RowConverter,
    data_type: DataType,
    sets: Vec<BTreeMap<Box<[u8]>, i64>>,
    bytes: usize,
}

impl Multiset {
    fn new(agg: &AggregateFunctionExpr, pick: Pick, input: &Schema) -> Result<Self> {
        let input = agg
            .expressions()
            .first()
            .map(|e| e.data_type(input))
            .transpose()?;
        let data_type = match pick {
            Pick::Distinct => input.unwrap_or(DataType::Int64),
            _ => agg.field().data_type().clone(),
        };
        Ok(Self {
            pick,
            converter: RowConverter::new(vec![SortField::new(data_type.clone())])?,
            data_type,
            sets: Vec::new(),
            bytes: 0,
        })
    }
}

impl RetractAcc for Multiset {
    fn resize(&mut self, n: usize) {
        self.sets.resize_with(n, BTreeMap::new);
    }

    fn update(&mut self, args: &[ArrayRef], weights: &[i64], ids: &[u32]) -> Result<()> {
        let a = cast(arg0(args)?, &self.data_type)?;
        let rows = self.converter.convert_columns(&[Arc::clone(&a)])?;
        for (row, (w, id)) in weights.iter().zip(ids).enumerate() {
            if a.is_null(row) {
                continue;
            }
            let set = &mut self.sets[*id as usize];
            let key: Box<[u8]> = rows.row(row).as_ref().into();
            let len = key.len();
            let n = set.entry(key).or_insert_with(|| 0);
            if *n == 0 {
                self.bytes += len + 48;
            }
            *n += w;
            if *n == 0 {
                set.remove(rows.row(row).as_ref());
                self.bytes = self.bytes.saturating_sub(len + 48);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        if self.pick == Pick::Distinct {
            return Ok(Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| self.sets[*i as usize].len() as i64),
            )));
        }
        let parser = self.converter.parser();
        let mut picked = Vec::new();
        let mut at: Vec<Option<u32>> = Vec::with_capacity(ids.len());
        for id in ids {
            let set = &self.sets[*id as usize];
            let v = match self.pick {
                Pick::Min => set.keys().next(),
                _ => set.keys().next_back(),
            };
            at.push(v.map(|v| {
                picked.push(parser.parse(v));
                picked.len() as u32 - 1
            }));
        }
        let values = self.converter.convert_rows(picked)?;
        let values = values
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("min/max values".into()))?;
        Ok(take(&values, &UInt32Array::from(at), None)?)
    }

    fn state_fields(&self, name: &str) -> Vec<Field> {
        let item = |dt| Arc::new(Field::new("item", dt, true));
        vec![
            Field::new(
                format!("{name}[values]"),
                DataType::List(item(DataType::Binary)),
                false,
            ),
            Field::new(
                format!("{name}[rows]"),
                DataType::List(item(DataType::Int64)),
                false,
            ),
        ]
    }

    fn state(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let mut values = ListBuilder::new(BinaryBuilder::new());
        let mut rows = ListBuilder::new(Int64Builder::new());
        for id in ids {
            for (v, n) in &self.sets[*id as usize] {
                values.values().append_value(v);
                rows.values().append_value(*n);
            }
            values.append(true);
            rows.append(true);
        }
        Ok(vec![Arc::new(values.finish()), Arc::new(rows.finish())])
    }

    fn load(&mut self, states: &[ArrayRef], ids: &[u32]) -> Result<()> {
        let values = arg0(states)?.as_list::<i32>();
        let rows = states
            .get(1)
            .ok_or_else(|| DataFusionError::Internal("multiset state".into()))?
            .as_list::<i32>();
        for (i, id) in ids.iter().enumerate() {
            let v = values.value(i);
            let v = v.as_binary::<i32>();
            let n = rows.value(i);
            let n = n.as_primitive::<Int64Type>();
            let set = &mut self.sets[*id as usize];
            for (v, n) in v.iter().zip(n.values()) {
                if let Some(v) = v {
                    self.bytes += v.len() + 48;
                    set.insert(v.into(), *n);
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self, id: u32) {
        let set = std::mem::take(&mut self.sets[id as usize]);
        let freed: usize = set.keys().map(|k| k.len() + 48).sum();
        self.bytes = self.bytes.saturating_sub(freed);
    }

    fn size(&self) -> usize {
        self.sets.capacity() * 24 + self.bytes
    }
}
