//! A join side's kept rows, columnar: the batches they arrived in, each kept whole while
//! any of its rows is, and a row's [`Place`] in them.
//!
//! ```text
//!  insert a batch ─► batches[id] = the batch (no copy)      place = (id, row)
//!  probe          ─► interleave(places) ─► the rows as columns, ready to join
//!  a row leaves   ─► live[id] -= 1; at 0 the batch goes
//!  many dead rows ─► compact: the live rows copied into fresh batches, places renamed
//! ```
//! Keeping the input's own Arrow arrays costs no conversion on insert and holds the
//! rows at their columnar size; an earlier version held each row as its own
//! arrow-row allocation, which cost a malloc and a row conversion per kept row and
//! about twice the memory.

use arrow::array::{new_empty_array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};

/// Where a kept row is: batch id and row in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    batch: u32,
    row: u32,
}

/// Rows compacted into batches of at most this many.
pub const COMPACT_ROWS: usize = 16 * 1024;

/// The batches a side's kept rows live in.
pub struct Store {
    schema: SchemaRef,
    /// By id; `None`: free for reuse.
    batches: Vec<Option<RecordBatch>>,
    /// Live (kept) rows per batch.
    live: Vec<u32>,
    free: Vec<u32>,
    /// Rows of the batches held, and their bytes.
    held_rows: usize,
    held_bytes: usize,
    live_rows: usize,
}

impl Store {
    /// An empty store for rows of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            held_rows: 0,
            held_bytes: 0,
            live_rows: 0,
        }
    }

    /// Holds `batch`; its rows are not kept until [`Store::keep`] says so.
    pub fn add(&mut self, batch: RecordBatch) -> u32 {
        self.held_rows += batch.num_rows();
        self.held_bytes += batch.get_array_memory_size();
        match self.free.pop() {
            Some(id) => {
                self.batches[id as usize] = Some(batch);
                self.live[id as usize] = 0;
                id
            }
            None => {
                self.batches.push(Some(batch));
                self.live.push(0);
                (self.batches.len() - 1) as u32
            }
        }
    }

    /// Keeps row `row` of batch `id`; returns its place.
    pub fn keep(&mut self, id: u32, row: usize) -> Place {
        self.live[id as usize] += 1;
        self.live_rows += 1;
        Place {
            batch: id,
            row: row as u32,
        }
    }

    /// Drops a batch [`Store::add`]ed whose rows were none kept.
    pub fn release_unused(&mut self, id: u32) {
        if self.live.get(id as usize) == Some(&0) {
            self.drop_batch(id);
        }
    }

    /// The row at `p` leaves; its batch goes with its last row.
    pub fn release(&mut self, p: Place) {
        let Some(live) = self.live.get_mut(p.batch as usize) else {
            return;
        };
        *live = live.saturating_sub(1);
        self.live_rows = self.live_rows.saturating_sub(1);
        if *live == 0 {
            self.drop_batch(p.batch);
        }
    }

    fn drop_batch(&mut self, id: u32) {
        if let Some(b) = self.batches.get_mut(id as usize).and_then(Option::take) {
            self.held_rows -= b.num_rows();
            self.held_bytes = self.held_bytes.saturating_sub(b.get_array_memory_size());
            self.free.push(id);
        }
    }

    /// The rows at `places`, as the side's columns.
    pub fn gather(&self, places: &[Place]) -> Result<Vec<ArrayRef>> {
        if places.is_empty() {
            let fields = self.schema.fields().iter();
            return Ok(fields.map(|f| new_empty_array(f.data_type())).collect());
        }
        let held: Vec<(usize, &RecordBatch)> = self
            .batches
            .iter()
            .enumerate()
            .filter_map(|(id, b)| b.as_ref().map(|b| (id, b)))
            .collect();
        // Batch id → position among the held batches.
        let mut position = vec![usize::MAX; self.batches.len()];
        for (i, (id, _)) in held.iter().enumerate() {
            position[*id] = i;
        }
        let mut indices = Vec::with_capacity(places.len());
        for p in places {
            match position.get(p.batch as usize) {
                Some(&i) if i != usize::MAX => indices.push((i, p.row as usize)),
                _ => {
                    return Err(DataFusionError::Internal(
                        "a join row's batch left the state".into(),
                    ))
                }
            }
        }
        (0..self.schema.fields().len())
            .map(|c| {
                let cols: Vec<&dyn arrow::array::Array> =
                    held.iter().map(|(_, b)| b.column(c).as_ref()).collect();
                Ok(interleave(&cols, &indices)?)
            })
            .collect()
    }

    /// The row at `p` as a one-row batch (no copy).
    pub fn row(&self, p: Place) -> Option<RecordBatch> {
        self.batches
            .get(p.batch as usize)?
            .as_ref()
            .map(|b| b.slice(p.row as usize, 1))
    }

    /// Whether dead rows hold enough memory that [`Store::compact`] should run: more
    /// than half the rows held are dead.
    pub fn wants_compaction(&self) -> bool {
        self.held_rows > 2 * self.live_rows + COMPACT_ROWS
    }

    /// Copies the rows at `places` (every kept row, in the order given) into fresh
    /// batches and drops the old ones; returns the new places, in the same order.
    pub fn compact(&mut self, places: &[Place]) -> Result<Vec<Place>> {
        let mut fresh = Store::new(std::sync::Arc::clone(&self.schema));
        let mut renamed = Vec::with_capacity(places.len());
        for chunk in places.chunks(COMPACT_ROWS) {
            let cols = self.gather(chunk)?;
            let b = RecordBatch::try_new(std::sync::Arc::clone(&self.schema), cols)?;
            let id = fresh.add(b);
            renamed.extend((0..chunk.len()).map(|r| fresh.keep(id, r)));
        }
        *self = fresh;
        Ok(renamed)
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Bytes held by the batches.
    pub fn bytes(&self) -> usize {
        self.held_bytes
    }

    /// Kept rows.
    pub fn live_rows(&self) -> usize {
        self.live_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn values(cols: &[ArrayRef]) -> Vec<i64> {
        cols[0].as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn gathers_kept_rows_and_frees_a_batch_with_its_last_row() {
        let mut s = Store::new(batch(&[]).schema());
        let a = s.add(batch(&[1, 2, 3]));
        let b = s.add(batch(&[10, 20]));
        let (a0, a2, b1) = (s.keep(a, 0), s.keep(a, 2), s.keep(b, 1));
        assert_eq!(
            values(&s.gather(&[b1, a0, a2, a0]).unwrap()),
            vec![20, 1, 3, 1]
        );
        s.release(b1);
        assert_eq!(s.live_rows(), 2);
        assert!(s.row(b1).is_none(), "the batch went with its last kept row");
        assert!(s.gather(&[b1]).is_err());
        // Its id is reused.
        let c = s.add(batch(&[7]));
        assert_eq!(c, b);
        s.release_unused(c);
        assert_eq!(values(&s.gather(&[a2]).unwrap()), vec![3]);
        assert!(values(&Store::new(batch(&[]).schema()).gather(&[]).unwrap()).is_empty());
    }

    #[test]
    fn compaction_keeps_the_live_rows_in_order() {
        let mut s = Store::new(batch(&[]).schema());
        let all: Vec<i64> = (0..100_000).collect();
        let id = s.add(batch(&all));
        let kept: Vec<Place> = (0..all.len()).map(|r| s.keep(id, r)).collect();
        for p in kept.iter().filter(|p| p.row % 10 != 0) {
            s.release(*p);
        }
        assert!(s.wants_compaction());
        let live: Vec<Place> = kept.into_iter().filter(|p| p.row % 10 == 0).collect();
        let renamed = s.compact(&live).unwrap();
        assert!(!s.wants_compaction());
        assert_eq!(s.live_rows(), 10_000);
        let got = values(&s.gather(&renamed).unwrap());
        assert_eq!(got, (0..100_000).step_by(10).collect::<Vec<i64>>());
    }
}
