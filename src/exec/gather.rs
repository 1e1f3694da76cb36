//! Gathering one batch from the source threads: decoded batches dealt round-robin over
//! the plan's input partitions, malformed records, the progress figures the sources
//! know, and (for the late-data file) the same rows with their partition and offset.

use std::time::Duration;

use arrow::array::RecordBatch;

use super::late::LateFinder;
use crate::decode::Malformed;
use crate::metrics::{BatchProgress, SourceProgress};
use crate::source::PartitionData;

/// One source's share of a batch, gathered from its source threads.
pub struct Gathered {
    /// Batches dealt round-robin over the plan's input partitions.
    pub input: Vec<Vec<RecordBatch>>,
    /// Records that did not decode.
    pub malformed: Vec<Malformed>,
    /// The same rows with partition and offset, when late rows are kept aside.
    pub with_origin: Vec<RecordBatch>,
}

/// Deals one source's decoded batches round-robin over the plan's input partitions and
/// adds its figures to `progress`: rows, offsets (into `source`), and the read and
/// decode times of the busiest of its `workers` threads (the busiest over all sources
/// is kept).
pub fn gather(
    data: Vec<PartitionData>,
    partitions: usize,
    workers: usize,
    late: Option<&LateFinder>,
    progress: &mut BatchProgress,
    source: &mut SourceProgress,
) -> anyhow::Result<Gathered> {
    let workers = workers.max(1);
    let mut busy = vec![(Duration::ZERO, Duration::ZERO); workers];
    for d in &data {
        let w = &mut busy[d.range.partition % workers];
        w.0 += d.read_time;
        w.1 += d.decode_time;
    }
    let total = |p: &[(&'static str, Duration)]| p.iter().map(|(_, d)| *d).sum::<Duration>();
    if let Some(&(read, decode)) = busy.iter().max_by_key(|(r, d)| *r + *d) {
        if read + decode >= total(&progress.source_phases) {
            progress.source_phases = vec![("read", read), ("decode", decode)];
        }
    }
    let mut input: Vec<Vec<RecordBatch>> = (0..partitions).map(|_| Vec::new()).collect();
    let mut malformed = Vec::new();
    let mut with_origin = Vec::new();
    let mut i = 0;
    for d in data {
        progress.input_rows += d.records;
        progress.screened_rows += d.screened;
        source.input_rows += d.records;
        source
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
    progress.malformed_rows += malformed.len() as u64;
    Ok(Gathered {
        input,
        malformed,
        with_origin,
    })
}
