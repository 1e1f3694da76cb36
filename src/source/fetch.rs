//! The fetcher: worker threads that read and decode partitions on request.
//!
//! The engine calls [`Fetcher::request`] with the ranges of the next batch and later
//! [`Fetcher::collect`] to get them, so a batch can be fetched and decoded while the
//! previous one executes. Each worker owns the readers of its partitions and one
//! decoder; payloads are copied once, from the client's buffer into the decoder's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use super::{OffsetRange, PartitionReader};
use crate::decode::prefilter::Prefilter;
use crate::decode::{Decoded, JsonDecoder, Payloads};
use crate::error::{Error, Result};

/// Payloads decoded at a time: large enough for vectorized decoding, small enough to
/// keep the copy buffer in cache-friendly bounds.
pub const DECODE_CHUNK: usize = 16 * 1024;

/// What one partition contributed to a batch.
#[derive(Debug)]
pub struct PartitionData {
    /// The offsets actually read: `start` as requested, `end` the next offset to read.
    pub range: OffsetRange,
    /// Decoded rows in offset order, each row's offset, and the records that did not
    /// decode.
    pub decoded: Decoded,
    /// Records read (good, malformed and screened out).
    pub records: u64,
    /// Records the prefilter proved cannot match, so they were not decoded.
    pub screened: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Time the worker spent reading (waiting on the source, screening payloads).
    pub read_time: Duration,
    /// Time the worker spent decoding JSON into Arrow.
    pub decode_time: Duration,
}

struct Job {
    range: OffsetRange,
    max_records: u64,
    max_bytes: u64,
}

/// Worker threads reading partitions on request.
pub struct Fetcher {
    jobs: Vec<Sender<Job>>,
    /// The worker of each partition (index: partition).
    route: Vec<usize>,
    results: Receiver<Result<PartitionData>>,
    /// Kept to hand to workers started later (partitions a topic gains).
    results_tx: Sender<Result<PartitionData>>,
    schema: SchemaRef,
    prefilter: Option<Prefilter>,
    outstanding: usize,
    /// Set when the run stops mid-fetch: workers end their ranges at the next chunk.
    cancel: Arc<AtomicBool>,
}

impl Fetcher {
    /// Starts `workers` threads; reader `p` goes to worker `p % workers`. Payloads are
    /// decoded to `schema`.
    pub fn start(
        readers: Vec<Box<dyn PartitionReader>>,
        workers: usize,
        schema: SchemaRef,
        prefilter: Option<Prefilter>,
    ) -> Result<Self> {
        let workers = workers.clamp(1, readers.len().max(1));
        let (results_tx, results) = channel();
        let mut fetcher = Self {
            jobs: Vec::new(),
            route: Vec::new(),
            results,
            results_tx,
            schema,
            prefilter,
            outstanding: 0,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let mut per_worker: Vec<Vec<(usize, Box<dyn PartitionReader>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (p, r) in readers.into_iter().enumerate() {
            fetcher.route.push(p % workers);
            per_worker[p % workers].push((p, r));
        }
        for readers in per_worker {
            fetcher.spawn(readers)?;
        }
        Ok(fetcher)
    }

    /// Adds the reader of partition `partition` (the next one: partitions a topic gains
    /// are numbered on), on a thread of its own as Kafka partitions are.
    pub fn add(&mut self, partition: usize, reader: Box<dyn PartitionReader>) -> Result<()> {
        if partition != self.route.len() {
            return Err(Error::option(
                "source",
                format!(
                    "partition {partition} added out of order (next is {})",
                    self.route.len()
                ),
            ));
        }
        self.route.push(self.jobs.len());
        self.spawn(vec![(partition, reader)])
    }

    fn spawn(&mut self, mut readers: Vec<(usize, Box<dyn PartitionReader>)>) -> Result<()> {
        for (_, r) in &mut readers {
            r.set_cancel(Arc::clone(&self.cancel));
        }
        let (tx, rx) = channel::<Job>();
        let res_tx = self.results_tx.clone();
        let decoder = JsonDecoder::new(self.schema.clone());
        let prefilter = self.prefilter.clone();
        let cancel = Arc::clone(&self.cancel);
        std::thread::Builder::new()
            .name(format!("sluice-fetch-{}", self.jobs.len()))
            .spawn(move || worker(readers, decoder, prefilter, rx, res_tx, cancel))
            .map_err(|e| Error::io("cannot start a fetch thread", "", e))?;
        self.jobs.push(tx);
        Ok(())
    }

    /// Asks the workers to read `ranges`, at most `max_records[i]` records from range
    /// `i`, and about `max_bytes` payload bytes over all ranges (each range gets an
    /// equal share; `u64::MAX` reads the ranges whole, as a replay must).
    pub fn request(&mut self, ranges: &[(OffsetRange, u64)], max_bytes: u64) -> Result<()> {
        let share = match max_bytes {
            u64::MAX => u64::MAX,
            b => (b / ranges.len().max(1) as u64).max(1),
        };
        for &(range, max_records) in ranges {
            let worker = self.route.get(range.partition).copied().unwrap_or(0);
            self.jobs[worker]
                .send(Job {
                    range,
                    max_records,
                    max_bytes: share,
                })
                .map_err(|_| Error::option("source", "a fetch thread stopped unexpectedly"))?;
            self.outstanding += 1;
        }
        Ok(())
    }

    /// Number of worker threads (partition `p` is read by worker `p % workers()`, but
    /// for partitions added later, which have threads of their own).
    pub fn workers(&self) -> usize {
        self.jobs.len()
    }

    /// Waits for everything requested so far; results are in partition order. When
    /// `stop` turns true meanwhile, the workers are told to cut their ranges short and
    /// `None` is returned once they have: the batch is abandoned (nothing of it was
    /// logged or committed), and the fetcher cannot be used again.
    pub fn collect(&mut self, stop: &dyn Fn() -> bool) -> Result<Option<Vec<PartitionData>>> {
        let mut out = Vec::with_capacity(self.outstanding);
        let mut first_err = None;
        while self.outstanding > 0 {
            if stop() {
                self.cancel.store(true, Ordering::Relaxed);
            }
            let r = match self.results.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::option(
                        "source",
                        "a fetch thread stopped unexpectedly",
                    ))
                }
            };
            self.outstanding -= 1;
            match r {
                Ok(d) => out.push(d),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        out.sort_by_key(|d| d.range.partition);
        Ok(Some(out))
    }
}

impl Drop for Fetcher {
    /// Ends the workers without waiting for them. Closing the channels ends each
    /// worker, which closes its clients as it goes; closing a Kafka client waits out its
    /// fetch in flight (tens of ms), serially per table, and nothing the workers hold is
    /// needed after this (offsets are Sluice's own, never committed by the clients).
    /// Waiting took 0.2 s of the 1.5 s a bounded run of Nexmark q3 (two tables) spent.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed); // a range in flight ends at its next chunk
        self.jobs.clear();
    }
}

fn worker(
    mut readers: Vec<(usize, Box<dyn PartitionReader>)>,
    decoder: JsonDecoder,
    prefilter: Option<Prefilter>,
    jobs: Receiver<Job>,
    results: Sender<Result<PartitionData>>,
    cancel: Arc<AtomicBool>,
) {
    let mut payloads = Payloads::default();
    while let Ok(job) = jobs.recv() {
        let reader = readers.iter_mut().find(|(p, _)| *p == job.range.partition);
        let result = match reader {
            Some((_, r)) => read_partition(
                r.as_mut(),
                &decoder,
                prefilter.as_ref(),
                &job,
                &mut payloads,
                &cancel,
            ),
            None => Err(Error::option(
                "source",
                format!("no reader for partition {}", job.range.partition),
            )),
        };
        if results.send(result).is_err() {
            return;
        }
    }
}

fn read_partition(
    reader: &mut dyn PartitionReader,
    decoder: &JsonDecoder,
    prefilter: Option<&Prefilter>,
    job: &Job,
    payloads: &mut Payloads,
    cancel: &AtomicBool,
) -> Result<PartitionData> {
    let p = job.range.partition;
    let mut data = PartitionData {
        range: job.range,
        decoded: Decoded::default(),
        records: 0,
        screened: 0,
        bytes: 0,
        read_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    };
    payloads.clear();
    let mut next = job.range.start;
    while next < job.range.end
        && data.records < job.max_records
        && data.bytes < job.max_bytes
        && !cancel.load(Ordering::Relaxed)
    {
        let want = (job.max_records - data.records).min(DECODE_CHUNK as u64);
        let (mut read, mut bytes, mut screened) = (0u64, 0u64, 0u64);
        let read_started = Instant::now();
        next = reader.read(next, job.range.end, want, &mut |offset, payload| {
            read += 1;
            bytes += payload.len() as u64;
            match prefilter {
                Some(f) if !f.must_decode(payload) => screened += 1,
                _ => payloads.push(offset, payload),
            }
        })?;
        data.records += read;
        data.bytes += bytes;
        data.screened += screened;
        let decode_started = Instant::now();
        data.read_time += decode_started.duration_since(read_started);
        decoder.decode(p, payloads, &mut data.decoded);
        data.decode_time += decode_started.elapsed();
        if read == 0 {
            break; // the reader reached the end of what exists
        }
        payloads.clear();
    }
    data.range.end = next;
    Ok(data)
}
