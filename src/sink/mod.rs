//! Sinks: where each micro-batch's result rows go. A sink receives the rows of one
//! batch id at a time, in order. With a checkpoint, a batch may be written again after
//! a crash (same id, same rows): file sinks overwrite, so output is exactly once; the
//! console shows such a batch twice.

pub mod aside;
pub mod console;
pub mod file;
pub mod kafka;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use async_trait::async_trait;

use crate::error::Result;

/// `batches` as JSON lines (arrow-json), one line per row.
pub fn json_lines(batches: &[&RecordBatch]) -> std::result::Result<Vec<u8>, ArrowError> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner())
}

/// The rows of a [`json_lines`] buffer: JSON escapes line breaks inside strings, so
/// each line is one row.
pub fn json_rows(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|c| *c == b'\n').filter(|l| !l.is_empty())
}

/// A destination for result rows.
#[async_trait]
pub trait Sink: Send {
    /// Writes the result rows of micro-batch `batch_id`; done when it returns.
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()>;
}

/// Drops every batch: `explain --analyze` runs the query without writing results.
pub struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn write_batch(&mut self, _batch_id: u64, _batches: &[RecordBatch]) -> Result<()> {
        Ok(())
    }
}
