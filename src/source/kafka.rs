//! The Kafka source: every partition of a topic, assigned explicitly (no consumer-group
//! rebalancing, no group commits), one librdkafka client per partition on its own
//! worker thread — kafka.md measured one client for all partitions stopping at about
//! half the rate of one client per partition.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{check_options, PartitionReader, Source, SourceSettings};
use crate::error::{Error, Result};
use crate::kafka;
use crate::sql::TableDef;

/// How long a read waits for the next record it knows exists before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
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
    meta: Option<BaseConsumer>,
    /// librdkafka settings from `kafka.*` table options, applied to every client.
    client_overrides: Vec<(String, String)>,
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
            .create()
            .map_err(|e| Error::kafka("creating a metadata consumer", e))?;
        Ok(Self {
            brokers,
            topic,
            partitions,
            starting,
            meta: Some(meta),
            client_overrides,
        })
    }

    fn watermarks(&self) -> Result<Vec<(i64, i64)>> {
        let meta = self
            .meta
            .as_ref()
            .ok_or_else(|| Error::option("source", "the Kafka source was closed"))?;
        (0..self.partitions)
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
        (0..self.partitions)
            .map(|p| {
                let consumer = kafka::with_properties(
                    kafka::consumer_config(&self.brokers),
                    &self.client_overrides,
                )
                .create_with_context(kafka::ReaderContext)
                .map_err(|e| Error::kafka("creating a partition consumer", e))?;
                Ok(Box::new(KafkaPartitionReader {
                    consumer,
                    topic: self.topic.clone(),
                    partition: p as i32,
                    position: None,
                }) as Box<dyn PartitionReader>)
            })
            .collect()
    }
}

/// One partition's client. `position` is the next offset the client will deliver.
struct KafkaPartitionReader {
    consumer: BaseConsumer<kafka::ReaderContext>,
    topic: String,
    partition: i32,
    position: Option<i64>,
}

impl PartitionReader for KafkaPartitionReader {
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
        while next < end && n < max_records {
            let wait = if after_eof { GAP_WAIT } else { STALL_TIMEOUT };
            // A non-blocking poll first: when records are queued (the busy case) it
            // skips the clock reads a timed wait costs on every message.
            let polled = match self.consumer.poll(Duration::ZERO) {
                None => self.consumer.poll(wait),
                ready => ready,
            };
            match polled {
                Some(Ok(m)) => {
                    after_eof = false;
                    if m.offset() < next {
                        continue; // already read (can follow a re-assignment)
                    }
                    f(m.offset(), m.payload().unwrap_or_default());
                    next = m.offset() + 1;
                    n += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => after_eof = true,
                Some(Err(e)) => return Err(Error::kafka(format!("reading {}/{}", self.topic, self.partition), e)),
                None if after_eof => {
                    next = end;
                    break;
                }
                None => {
                    return Err(Error::kafka(
                        format!(
                            "no record from {}/{} at offset {next} within {} s although the partition holds offsets up to {end}",
                            self.topic,
                            self.partition,
                            STALL_TIMEOUT.as_secs()
                        ),
                        KafkaError::NoMessageReceived,
                    ))
                }
            }
        }
        self.position = Some(next);
        Ok(next)
    }
}
