//! Sinks: where each micro-batch's result rows go. A sink receives the rows of one
//! batch id at a time, in order; it must not reorder or drop batches.

pub mod console;

use arrow::array::RecordBatch;

use crate::error::Result;

/// A destination for result rows.
pub trait Sink: Send {
    /// Writes the result rows of micro-batch `batch_id`.
    fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()>;
}
