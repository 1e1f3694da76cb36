//! Sources: where records come from, split into partitions with offsets that Sluice
//! tracks itself (design.md: Kafka offsets are Sluice's, not the consumer group's).
//!
//! ```text
//!   engine ──request [start, end) per partition──► worker threads (one per Kafka partition)
//!                                                   read payloads → decode (decode::JsonDecoder)
//!   engine ◄──PartitionData: Arrow batches, malformed records, next offset──┘
//! ```
//! A [`Source`] knows its partitions, where reading starts and how far data is
//! available. Each partition is read by one [`PartitionReader`], owned by one worker
//! thread of the [`Fetcher`], so reading and decoding run in parallel across partitions
//! and overlap the engine's execution of the previous batch. A micro-batch is exactly
//! the offset ranges it was given, so a replay of the same ranges rebuilds the same batch.

pub mod fetch;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod nexmark;
pub mod static_table;

pub use fetch::{Fetcher, PartitionData};

use crate::error::Result;
use crate::sql::TableDef;

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// Partition index (0-based, as the source numbers them).
    pub partition: usize,
    /// First offset to read.
    pub start: i64,
    /// Offset after the last one to read.
    pub end: i64,
}

/// Reads one partition. Lives on one worker thread.
pub trait PartitionReader: Send {
    /// Calls `f(offset, payload)` for each record from `start` in offset order until the
    /// offset reaches `end` or `max_records` records were read. Returns the offset after
    /// the last record read (`end` when the range was read completely).
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64>;

    /// Gives the reader the flag the engine sets when the run stops mid-fetch: a reader
    /// that can wait long (for a broker to come back) returns early when it is set.
    fn set_cancel(&mut self, _cancel: std::sync::Arc<std::sync::atomic::AtomicBool>) {}
}

/// A partition a source gained while it ran.
pub struct NewPartition {
    /// Its number (the next after the ones before).
    pub partition: usize,
    /// Its oldest offset.
    pub earliest: i64,
    /// Its reader.
    pub reader: Box<dyn PartitionReader>,
}

/// A partitioned source of JSON records.
pub trait Source: Send {
    /// What this source reads, for messages.
    fn describe(&self) -> String;
    /// Number of partitions.
    fn partitions(&self) -> usize;
    /// Where reading starts in each partition (earliest or latest, per the options).
    fn start_offsets(&mut self) -> Result<Vec<i64>>;
    /// How far data is available in each partition now (exclusive end offset).
    fn available_ends(&mut self) -> Result<Vec<i64>>;
    /// One reader per partition, in partition order; each moves to a worker thread.
    fn readers(&mut self) -> Result<Vec<Box<dyn PartitionReader>>>;
    /// Where each partition's oldest record is (what a partition the checkpoint does not
    /// know is read from).
    fn earliest_offsets(&mut self) -> Result<Vec<i64>> {
        self.start_offsets()
    }
    /// Partitions the source gained since it opened or last said so (a Kafka topic's
    /// partition count can grow): each one's number, reader and oldest offset, which is
    /// where it is read from (as Spark does). Sources whose partitions are fixed have none.
    fn new_partitions(&mut self) -> Result<Vec<NewPartition>> {
        Ok(Vec::new())
    }
    /// How many worker threads read the partitions (partition `p` goes to worker `p % n`).
    fn workers(&self) -> usize {
        self.partitions()
    }
}

/// Partition `p`'s share of `total` records dealt round-robin over `partitions`.
pub fn partition_share(total: u64, partitions: usize, p: usize) -> i64 {
    let n = partitions.max(1) as u64;
    (total / n + u64::from((p as u64) < total % n)) as i64
}

/// Settings that apply to every source, from the command line.
#[derive(Debug, Clone, Default)]
pub struct SourceSettings {
    /// Overrides the table's bootstrap servers.
    pub bootstrap_servers: Option<String>,
    /// Overrides the table's starting offsets (`earliest` or `latest`).
    pub starting_offsets: Option<String>,
    /// Engine parallelism, used to size worker pools of sources without natural partitions.
    pub target_partitions: usize,
}

/// Whether tables of `connector` are read as streams.
pub fn is_source(connector: &str) -> bool {
    matches!(connector, "kafka" | "generator" | "file" | "nexmark")
}

/// Opens the source a `CREATE TABLE … WITH (connector = …)` declares.
pub fn open(def: &TableDef, settings: &SourceSettings) -> Result<Box<dyn Source>> {
    match def.connector() {
        "kafka" => Ok(Box::new(kafka::KafkaSource::open(def, settings)?)),
        "generator" => Ok(Box::new(generator::GeneratorSource::open(def)?)),
        "file" => Ok(Box::new(file::FileSource::open(def, settings)?)),
        "nexmark" => Ok(Box::new(nexmark::NexmarkSource::open(def)?)),
        other => Err(crate::Error::option(
            format!("connector of table {}", def.name),
            format!(
                "unknown source connector '{other}'; use 'kafka', 'generator', 'file' or 'nexmark'"
            ),
        )),
    }
}

/// Checks that `def` has only options in `known`, naming the valid ones otherwise.
pub fn check_options(def: &TableDef, known: &[&str]) -> Result<()> {
    for key in def.options.keys() {
        let common = [
            "connector",
            "format",
            "event_time",
            "watermark_delay",
            "idle_timeout",
            "state_ttl",
        ];
        if !common.contains(&key.as_str()) && !known.contains(&key.as_str()) {
            return Err(crate::Error::option(
                format!("'{key}' of table {}", def.name),
                format!(
                    "unknown option for connector '{}'; valid options: {}",
                    def.connector(),
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(f) = def.options.get("format") {
        if f != "json" {
            return Err(crate::Error::option(
                format!("format of table {}", def.name),
                format!("'{f}' is not supported; only 'json' (one JSON object per record)"),
            ));
        }
    }
    Ok(())
}

/// Parses option `key` of `def` as a number, with `default` when absent.
pub fn num_option(def: &TableDef, key: &str, default: u64) -> Result<u64> {
    match def.options.get(key) {
        None => Ok(default),
        Some(v) => v.replace('_', "").parse().map_err(|_| {
            crate::Error::option(
                format!("'{key}' of table {}", def.name),
                format!("'{v}' is not a whole number"),
            )
        }),
    }
}
