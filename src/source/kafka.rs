//! The Kafka source: every partition of a topic, assigned explicitly (no consumer-group
//! rebalancing, no group commits), one librdkafka client per partition on its own
//! worker thread — kafka.md measured one client for all partitions stopping at about
//! half the rate of one client per partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{check_options, NewPartition, PartitionReader, Source, SourceSettings};
use crate::error::{Error, Result};
use crate::kafka;
use crate::sql::TableDef;

/// How long a read waits for the next record it knows exists, from a broker that
/// answers, before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running source asks whether its topic gained partitions.
const PARTITION_CHECK: Duration = Duration::from_secs(5);
/// How long a read waits for a record it knows exists before it asks whether the
/// broker is there.
const QUIET_CHECK: Duration = Duration::from_secs(2);
/// How long one wait for a record lasts, so a stop is seen while the broker is away.
const POLL_SLICE: Duration = Duration::from_millis(500);
/// How long a read waits after an end-of-partition event before it takes the offsets
/// left in its range as holding no record.
const GAP_WAIT: Duration = Duration::from_secs(1);

/// Where reading starts when there is no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The oldest record each partition still holds.
    Earliest,
    /// Only records that arrive after the start.
    Latest,
}

/// All partitions of one topic.
pub struct KafkaSource {
    brokers: String,
    topic: String,
    partitions: usize,
    starting: StartingOffsets,
    /// Offsets and partition counts (`None` only once dropped: see `Drop`).
    meta: Option<BaseConsumer<kafka::ReaderContext>>,
    /// librdkafka settings from `kafka.*` table options, applied to every client.
    client_overrides: Vec<(String, String)>,
    /// When the partition count was last looked up.
    partitions_checked: Instant,
}

impl KafkaSource {
    /// Opens the topic `def` names; fails within seconds when the broker is unreachable
    /// or the topic is missing.
    pub fn open(def: &TableDef, settings: &SourceSettings) -> Result<Self> {
        let client_overrides = kafka::table_properties(def);
        let mut plain = def.clone();
        plain.options.retain(|k, _| !k.starts_with("kafka_"));
        check_options(
            &plain,
            &[
                "topic",
                "bootstrap_servers",
                "starting_offsets",
                "kafka.<librdkafka property>",
            ],
        )?;
        let brokers = settings
            .bootstrap_servers
            .clone()
            .or_else(|| def.options.get("bootstrap_servers").cloned())
            .unwrap_or_else(|| "localhost:9092".to_string());
        let topic = def
            .options
            .get("topic")
            .cloned()
            .unwrap_or_else(|| def.name.clone());
        let starting = match settings
            .starting_offsets
            .as_deref()
            .or(def.options.get("starting_offsets").map(String::as_str))
            .unwrap_or("earliest")
        {
            "earliest" => StartingOffsets::Earliest,
            "latest" => StartingOffsets::Latest,
            other => {
                return Err(Error::option(
                    "starting offsets",
                    format!("'{other}' is not valid; use 'earliest' or 'latest'"),
                ))
            }
        };
        let partitions =
            kafka::topic_partitions(&brokers, &client_overrides, &topic)?.ok_or_else(|| {
                Error::TopicMissing {
                    topic: topic.clone(),
                    brokers: brokers.clone(),
                }
            })?;
        let meta = kafka::with_properties(kafka::consumer_config(&brokers), &client_overrides)
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| Error::kafka("creating a metadata consumer", e))?;
        Ok(Self {
            brokers,
            topic,
            partitions,
            starting,
            meta: Some(meta),
            client_overrides,
            partitions_checked: Instant::now(),
        })
    }

    fn meta(&self) -> Result<&BaseConsumer<kafka::ReaderContext>> {
        self.meta
            .as_ref()
            .ok_or_else(|| Error::option("source", "the Kafka source was closed"))
    }

    fn reader(&self, partition: usize) -> Result<Box<dyn PartitionReader>> {
        let consumer = kafka::with_properties(
            kafka::consumer_config(&self.brokers),
            &self.client_overrides,
        )
        .create_with_context(kafka::ReaderContext)
        .map_err(|e| Error::kafka("creating a partition consumer", e))?;
        Ok(Box::new(KafkaPartitionReader {
            consumer,
            topic: self.topic.clone(),
            partition: partition as i32,
            position: None,
            cancel: Arc::new(AtomicBool::new(false)),
            outage: None,
        }))
    }

    fn watermarks(&self) -> Result<Vec<(i64, i64)>> {
        self.watermarks_of(0..self.partitions)
    }

    fn watermarks_of(&self, partitions: std::ops::Range<usize>) -> Result<Vec<(i64, i64)>> {
        let meta = self.meta()?;
        partitions
            .map(|p| {
                meta.fetch_watermarks(&self.topic, p as i32, kafka::METADATA_TIMEOUT)
                    .map_err(|e| {
                        Error::kafka(format!("reading the end offsets of {}/{p}", self.topic), e)
                    })
            })
            .collect()
    }
}

impl Drop for KafkaSource {
    /// The metadata client closes on a thread of its own, as the partition clients do
    /// (see `Fetcher`'s drop): closing waits for librdkafka's threads, and a run with
    /// several tables closed them one after another at the end.
    fn drop(&mut self) {
        if let Some(meta) = self.meta.take() {
            let _ = std::thread::Builder::new()
                .name("sluice-kafka-close".into())
                .spawn(move || drop(meta));
        }
    }
}

impl Source for KafkaSource {
    fn describe(&self) -> String {
        format!(
            "Kafka topic '{}' on {} ({} partitions)",
            self.topic, self.brokers, self.partitions
        )
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn start_offsets(&mut self) -> Result<Vec<i64>> {
        Ok(self
            .watermarks()?
            .into_iter()
            .map(|(lo, hi)| match self.starting {
                StartingOffsets::Earliest => lo,
                StartingOffsets::Latest => hi,
            })
            .collect())
    }

    fn available_ends(&mut self) -> Result<Vec<i64>> {
        Ok(self.watermarks()?.into_iter().map(|(_, hi)| hi).collect())
    }

    fn readers(&mut self) -> Result<Vec<Box<dyn PartitionReader>>> {
        (0..self.partitions).map(|p| self.reader(p)).collect()
    }

    fn earliest_offsets(&mut self) -> Result<Vec<i64>> {
        Ok(self.watermarks()?.into_iter().map(|(lo, _)| lo).collect())
    }

    fn new_partitions(&mut self) -> Result<Vec<NewPartition>> {
        if self.partitions_checked.elapsed() < PARTITION_CHECK {
            return Ok(Vec::new());
        }
        self.partitions_checked = Instant::now();
        let now = match self
            .meta()?
            .fetch_metadata(Some(&self.topic), kafka::METADATA_TIMEOUT)
        {
            Ok(m) => m
                .topics()
                .iter()
                .find(|t| t.name() == self.topic)
                .map_or(0, |t| t.partitions().len()),
            Err(e) if kafka::is_outage(&e) => return Ok(Vec::new()), // the ends say so
            Err(e) => return Err(Error::kafka(format!("looking up topic {}", self.topic), e)),
        };
        if now <= self.partitions {
            return Ok(Vec::new());
        }
        let added = self.partitions..now;
        let earliest = self.watermarks_of(added.clone())?;
        let new = added
            .zip(earliest)
            .map(|(partition, (earliest, _))| {
                Ok(NewPartition {
                    partition,
                    earliest,
                    reader: self.reader(partition)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.partitions = now;
        Ok(new)
    }
}

/// One partition's client. `position` is the next offset the client will deliver.
struct KafkaPartitionReader {
    consumer: BaseConsumer<kafka::ReaderContext>,
    topic: String,
    partition: i32,
    position: Option<i64>,
    /// Set when the run stops: a read waiting for the broker returns.
    cancel: Arc<AtomicBool>,
    /// Since when the broker has been out of reach, while it is.
    outage: Option<Instant>,
}

impl KafkaPartitionReader {
    /// Notes that the broker is out of reach (said once per outage).
    fn broker_gone(&mut self, e: &KafkaError, next: i64) {
        if self.outage.is_none() {
            tracing::warn!(
                "Kafka {}/{}: the broker is out of reach ({e}); waiting for it, reading goes on at offset {next}",
                self.topic,
                self.partition
            );
            self.outage = Some(Instant::now());
        }
    }

    /// Whether the broker answers a request for the partition's offsets now.
    fn broker_reachable(&mut self, next: i64) -> bool {
        match self
            .consumer
            .fetch_watermarks(&self.topic, self.partition, kafka::METADATA_TIMEOUT)
        {
            Err(e) if kafka::is_outage(&e) => {
                self.broker_gone(&e, next);
                false
            }
            _ => true,
        }
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn set_cancel(&mut self, cancel: Arc<AtomicBool>) {
        self.cancel = cancel;
    }

    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64> {
        if self.position != Some(start) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(start))
                .map_err(|e| Error::kafka("building an assignment", e))?;
            self.consumer.assign(&tpl).map_err(|e| {
                Error::kafka(format!("assigning {}/{}", self.topic, self.partition), e)
            })?;
            self.position = Some(start);
        }
        let mut next = start;
        let mut n = 0u64;
        // After an end-of-partition event, a short silence means the offsets left below
        // `end` hold no record (transaction markers, compaction). A stale event is
        // harmless: records that exist arrive well within the wait and clear it.
        let mut after_eof = false;
        // Since when nothing has arrived although records below `end` exist.
        let mut quiet: Option<Instant> = None;
        while next < end && n < max_records {
            let wait = if after_eof { GAP_WAIT } else { POLL_SLICE };
            // A non-blocking poll first: when records are queued (the busy case) it
            // skips the clock reads a timed wait costs on every message.
            let polled = match self.consumer.poll(Duration::ZERO) {
                None => self.consumer.poll(wait),
                ready => ready,
            };
            match polled {
                Some(Ok(m)) => {
                    after_eof = false;
                    if quiet.take().is_some() {
                        if let Some(since) = self.outage.take() {
                            tracing::warn!(
                                "Kafka {}/{}: the broker is back after {:.1} s; reading on",
                                self.topic,
                                self.partition,
                                since.elapsed().as_secs_f64()
                            );
                        }
                    }
                    if m.offset() < next {
                        continue; // already read (can follow a re-assignment)
                    }
                    f(m.offset(), m.payload().unwrap_or_default());
                    next = m.offset() + 1;
                    n += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => after_eof = true,
                Some(Err(e)) if kafka::is_outage(&e) => {
                    self.broker_gone(&e, next);
                    quiet.get_or_insert_with(Instant::now);
                }
                Some(Err(e)) => {
                    return Err(Error::kafka(
                        format!("reading {}/{}", self.topic, self.partition),
                        e,
                    ))
                }
                None if after_eof => {
                    next = end;
                    break;
                }
                None if self.cancel.load(Ordering::Relaxed) => break,
                None => {
                    let since = *quiet.get_or_insert_with(Instant::now);
                    let quiet_for = since.elapsed();
                    // A silence is looked into: a broker out of reach is waited for
                    // (librdkafka reconnects, the fetch goes on at its position, and
                    // the wait is said once); a broker that answers but does not
                    // deliver records it holds is an error.
                    if quiet_for < QUIET_CHECK {
                        continue;
                    }
                    if !self.broker_reachable(next) {
                        quiet = Some(Instant::now());
                    } else if quiet_for >= STALL_TIMEOUT {
                        return Err(Error::kafka(
                            format!(
                                "no record from {}/{} at offset {next} within {} s although the partition holds offsets up to {end}",
                                self.topic,
                                self.partition,
                                STALL_TIMEOUT.as_secs()
                            ),
                            KafkaError::NoMessageReceived,
                        ));
                    }
                }
            }
        }
        self.position = Some(next);
        Ok(next)
    }
}
