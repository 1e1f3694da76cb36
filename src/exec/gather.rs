//! Gathering one batch from the source threads: decoded batches dealt round-robin over
//! the plan's input partitions, malformed records, the progress figures the sources
//! know, and (for the late-data file) the same rows with their partition and offset.

use std::time::Duration;

use arrow::array::RecordBatch;

use super::late::LateFinder;
use crate::decode::Malformed;
use crate::metrics::BatchProgress;
use crate::source::PartitionData;

/// One batch's decoded input, gathered from the source threads.
pub struct Gathered {
    /// Batches dealt round-robin over the plan's input partitions.
    pub input: Vec<Vec<RecordBatch>>,
    /// Records that did not decode.
    pub malformed: Vec<Malformed>,
    /// The same rows with partition and offset, when late rows are kept aside.
    pub with_origin: Vec<RecordBatch>,
    /// Rows, offsets and source-thread times of the batch.
    pub progress: BatchProgress,
}

/// Deals the decoded batches round-robin over the plan's input partitions; the source
/// threads' read and decode times are those of the busiest of `workers` threads.
pub fn gather(
    batch_id: u64,
    data: Vec<PartitionData>,
    partitions: usize,
    workers: usize,
    late: Option<&LateFinder>,
) -> anyhow::Result<Gathered> {
    let mut progress = BatchProgress {
        batch_id,
        ..Default::default()
    };
    let workers = workers.max(1);
    let mut busy = vec![(Duration::ZERO, Duration::ZERO); workers];
    for d in &data {
        let w = &mut busy[d.range.partition % workers];
        w.0 += d.read_time;
        w.1 += d.decode_time;
    }
    if let Some(&(read, decode)) = busy.iter().max_by_key(|(r, d)| *r + *d) {
        progress.source_phases = vec![("read", read), ("decode", decode)];
    }
    let mut input: Vec<Vec<RecordBatch>> = (0..partitions).map(|_| Vec::new()).collect();
    let mut malformed = Vec::new();
    let mut with_origin = Vec::new();
    let mut i = 0;
    for d in data {
        progress.input_rows += d.records;
        progress.screened_rows += d.screened;
        progress
            .offsets
            .push((d.range.partition, d.range.start, d.range.end));
        let decoded = d.decoded;
        if let Some(f) = late {
            for (b, offsets) in decoded.batches.iter().zip(&decoded.offsets) {
                with_origin.push(f.with_origin(b, d.range.partition, offsets)?);
            }
        }
        for b in decoded.batches {
            input[i % partitions].push(b);
            i += 1;
        }
        malformed.extend(decoded.malformed);
    }
    Ok(Gathered {
        input,
        malformed,
        with_origin,
        progress,
    })
}
