//! The Kafka sink: each batch's rows as JSON messages to a topic, exactly once.
//!
//! ```text
//!  batch N ─► begin transaction ─► one message per row (key column, header sluice.batch=N)
//!          ─► group offset "next batch = N + 1" in the same transaction ─► commit
//! ```
//! A transactional producer (one `transactional.id` per query, checkpoint location and
//! topic, so a restarted process fences its predecessor) makes a batch's messages
//! visible all at once, to `read_committed` readers. The group offset stored inside the
//! transaction says which batch was written last: when a restart replays the batch its
//! checkpoint logged but did not commit, and that batch already committed here (the
//! crash came between this commit and the checkpoint's), it is skipped, not written
//! twice. Only that replayed batch is ever skipped: a run that starts again from batch
//! 0 (no or a new checkpoint) writes everything.
//!
//! A broker that restarts or is out of reach mid-batch is waited out: the batch is tried
//! again on a new producer (whose `init_transactions` aborts the old one's open
//! transaction) with backoff, for up to `--write-retry`. A try whose commit reached the
//! broker although its answer was lost is found by reading the group offset again, and
//! not written twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::Sink;
use crate::error::{Error, Result};
use crate::kafka::ReaderContext;
use crate::sql::TableDef;
use crate::storage::Backoff;

/// How long a transaction step may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes each batch's rows to a Kafka topic in one transaction.
pub struct KafkaSink {
    topic: String,
    brokers: String,
    /// librdkafka settings from `kafka.*` table options.
    properties: Vec<(String, String)>,
    key: Option<usize>,
    /// Update mode over a result with deletes: the first column is the op; `-D` rows are
    /// tombstones, the others upserts of the row without its op.
    upsert: bool,
    /// The transactional id, and the group id of the "last batch written" offset.
    id: String,
    producer: ThreadedProducer<ReaderContext>,
    /// Reads and writes the "last batch written" offset of the sink's group.
    group: BaseConsumer<ReaderContext>,
    /// The last batch id written, once the transactions are initialised.
    written: Option<Option<u64>>,
    /// The batch this run replays from the checkpoint's log, if any.
    replay: Option<u64>,
}

impl KafkaSink {
    /// The sink `CREATE TABLE … WITH (connector = 'kafka', topic = 'T',
    /// bootstrap_servers = 'H:P', key = 'column')` declares. `identity` (the query and
    /// the checkpoint location) names the transactional id, so two different queries or
    /// checkpoints never fence each other; `replay` is the batch a restart replays.
    pub fn from_table(
        def: &TableDef,
        schema: SchemaRef,
        identity: &[&str],
        replay: Option<u64>,
    ) -> Result<Self> {
        let opt = |key: &str| format!("'{key}' of table {}", def.name);
        for key in def.options.keys() {
            let known = ["connector", "topic", "bootstrap_servers", "key", "format"];
            if !known.contains(&key.as_str()) && !key.starts_with("kafka_") {
                return Err(Error::option(
                    opt(key),
                    "unknown option for a Kafka sink; valid options: topic, bootstrap_servers, key, format, 'kafka.<librdkafka property>'",
                ));
            }
        }
        let properties = crate::kafka::table_properties(def);
        if let Some(f) = def.options.get("format").filter(|f| f.as_str() != "json") {
            return Err(Error::option(
                opt("format"),
                format!("'{f}' is not supported; the Kafka sink writes 'json'"),
            ));
        }
        let topic = def
            .options
            .get("topic")
            .cloned()
            .unwrap_or_else(|| def.name.clone());
        let brokers = def
            .options
            .get("bootstrap_servers")
            .cloned()
            .unwrap_or_else(|| "localhost:9092".into());
        let key = match def.options.get("key") {
            None => None,
            Some(k) => Some(schema.index_of(k).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                Error::option(
                    opt("key"),
                    format!(
                        "'{k}' is not a column of the result; columns: {}",
                        names.join(", ")
                    ),
                )
            })?),
        };
        if crate::kafka::topic_partitions(&brokers, &properties, &topic)?.is_none() {
            return Err(Error::TopicMissing { topic, brokers });
        }
        let mut parts = identity.to_vec();
        parts.push(&topic);
        let id = format!("sluice-{topic}-{}", crate::checkpoint::fingerprint(&parts));
        let (producer, group) = connect(&brokers, &properties, &id)?;
        Ok(Self {
            topic,
            brokers,
            properties,
            key,
            upsert: false,
            id,
            producer,
            group,
            written: None,
            replay,
        })
    }

    /// The group's position on partition 0 of the topic: one past the last batch id.
    fn position(&self, batch_id: Option<u64>) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        let offset = match batch_id {
            Some(b) => Offset::Offset(b as i64 + 1),
            None => Offset::Invalid,
        };
        tpl.add_partition_offset(&self.topic, 0, offset)
            .map_err(|e| Error::kafka("naming the sink's position", e))?;
        Ok(tpl)
    }

    /// Initialises the transactions (fencing an older instance) and reads which batch
    /// was committed last.
    fn start(&mut self) -> Result<Option<u64>> {
        if let Some(w) = self.written {
            return Ok(w);
        }
        self.producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(|e| Error::kafka(format!("starting transactions on {}", self.topic), e))?;
        let committed = self
            .group
            .committed_offsets(self.position(None)?, TXN_TIMEOUT)
            .map_err(|e| Error::kafka("reading the sink's last batch", e))?;
        let written = committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => Some(o as u64 - 1),
            _ => None,
        });
        self.written = Some(written);
        Ok(written)
    }

    /// Writes upserts keyed by the `key` column, and a tombstone (no payload) for a
    /// deleted row, from rows led by their op column.
    pub fn upserts(mut self) -> Result<Self> {
        if self.key.is_none() {
            return Err(Error::option(
                "Kafka sink",
                "update output mode writes upserts keyed by the result's key, and tombstones for deleted rows; \
                 add key = '<column>' to the sink's WITH (…), or use --output-mode changelog",
            ));
        }
        self.upsert = true;
        Ok(self)
    }

    /// Sends every row of `batches` as a JSON message.
    fn send_rows(&self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let id = batch_id.to_string();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let keys: Option<Arc<dyn Array>> = match self.key {
                Some(k) => Some(
                    arrow::compute::cast(b.column(k), &DataType::Utf8)
                        .map_err(|e| Error::option("sink key", e.to_string()))?,
                ),
                None => None,
            };
            let keys = keys
                .as_ref()
                .and_then(|k| k.as_any().downcast_ref::<StringArray>());
            // Upserts: the row without its op column; a delete is a tombstone.
            let (b, deletes) = match self.upsert {
                true => {
                    let ops = b.column(0).as_any().downcast_ref::<StringArray>();
                    let deletes: Vec<bool> = (0..b.num_rows())
                        .map(|r| ops.is_some_and(|o| o.value(r) == "-D"))
                        .collect();
                    let cols: Vec<usize> = (1..b.num_columns()).collect();
                    let b = b
                        .project(&cols)
                        .map_err(|e| Error::option("Kafka sink", e.to_string()))?;
                    (b, deletes)
                }
                false => (b.clone(), Vec::new()),
            };
            let text =
                super::json_lines(&[&b]).map_err(|e| Error::option("Kafka sink", e.to_string()))?;
            for (row, line) in super::json_rows(&text).enumerate() {
                let line: Option<&[u8]> = match deletes.get(row) {
                    Some(true) => None,
                    _ => Some(line),
                };
                let headers = OwnedHeaders::new().insert(Header {
                    key: "sluice.batch",
                    value: Some(id.as_str()),
                });
                let mut record = BaseRecord::<str, [u8]>::to(&self.topic).headers(headers);
                if let Some(line) = line {
                    record = record.payload(line);
                }
                if let Some(k) = keys.filter(|k| k.is_valid(row)) {
                    record = record.key(k.value(row));
                }
                // A full local queue is back-pressure: wait for deliveries, then retry.
                loop {
                    match self.producer.send(record) {
                        Ok(()) => break,
                        Err((e, r)) => {
                            if e.rdkafka_error_code()
                                != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            {
                                return Err(Error::kafka(format!("sending to {}", self.topic), e));
                            }
                            record = r;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes batch `batch_id` in one transaction, trying again on a new producer while
    /// the broker is out of reach or restarting (for up to `--write-retry`).
    fn write_blocking(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let started = Instant::now();
        // The retry window starts at the first failure (which may itself have taken
        // the transaction timeout).
        let mut backoff: Option<Backoff> = None;
        let mut tries = 0;
        loop {
            tries += 1;
            let e = match self.try_write(batch_id, batches, tries > 1) {
                Ok(()) if tries > 1 => {
                    tracing::warn!(
                        "Kafka sink topic '{}': batch {batch_id} written on try {tries}, after {:.1} s",
                        self.topic,
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let lookup =
                crate::kafka::topic_partitions(&self.brokers, &self.properties, &self.topic);
            if let Ok(None) = lookup {
                return Err(Error::SinkTopicGone {
                    topic: self.topic.clone(),
                    brokers: self.brokers.clone(),
                    batch_id,
                });
            }
            let wait = match e.is_transient_txn() {
                true => backoff.get_or_insert_with(Backoff::start).next_wait(),
                false => None,
            };
            let Some(wait) = wait else {
                if tries > 1 {
                    tracing::warn!(
                        "Kafka sink topic '{}': batch {batch_id} failed {tries} times in {:.0} s",
                        self.topic,
                        started.elapsed().as_secs_f64()
                    );
                }
                return Err(e);
            };
            tracing::warn!(
                "Kafka sink topic '{}': batch {batch_id} failed ({e}); retrying in {:.1} s on a new producer (for up to {:.0} s, then the run stops; the batch is not committed until it succeeds)",
                self.topic,
                wait.as_secs_f64(),
                crate::storage::retry_for().as_secs_f64()
            );
            std::thread::sleep(wait);
            // A new producer fences the old one and aborts its open transaction; the
            // group offset is read again, in case the failed try's commit went through.
            let (producer, group) = connect(&self.brokers, &self.properties, &self.id)?;
            self.producer = producer;
            self.group = group;
            self.written = None;
        }
    }

    /// One try at batch `batch_id`. Skipped when the group offset says it is written
    /// already: the batch a restart replays, or a batch tried again (`retry`) after a
    /// try whose commit went through.
    fn try_write(&mut self, batch_id: u64, batches: &[RecordBatch], retry: bool) -> Result<()> {
        let written = self.start()?;
        let again = retry || self.replay == Some(batch_id);
        if again && written.is_some_and(|w| batch_id <= w) {
            return Ok(()); // committed before: must not be written twice
        }
        let txn = |e| Error::kafka(format!("a transaction on {}", self.topic), e);
        self.producer.begin_transaction().map_err(txn)?;
        let result = self.send_rows(batch_id, batches).and_then(|()| {
            let meta = self
                .group
                .group_metadata()
                .ok_or_else(|| Error::option("Kafka sink", "no consumer group metadata"))?;
            self.producer
                .send_offsets_to_transaction(&self.position(Some(batch_id))?, &meta, TXN_TIMEOUT)
                .map_err(txn)?;
            self.producer.commit_transaction(TXN_TIMEOUT).map_err(txn)
        });
        if let Err(e) = result {
            if !e.is_transient_txn() {
                let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            }
            return Err(e);
        }
        self.written = Some(Some(batch_id));
        Ok(())
    }
}

/// The sink's transactional producer and the client of its group offset.
fn connect(
    brokers: &str,
    properties: &[(String, String)],
    id: &str,
) -> Result<(ThreadedProducer<ReaderContext>, BaseConsumer<ReaderContext>)> {
    let producer = crate::kafka::with_properties(crate::kafka::client_config(brokers), properties)
        .set("transactional.id", id)
        .set("linger.ms", "5")
        .create_with_context(ReaderContext)
        .map_err(|e| Error::kafka("creating the sink's producer", e))?;
    let group = crate::kafka::with_properties(crate::kafka::client_config(brokers), properties)
        .set("group.id", id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(ReaderContext)
        .map_err(|e| Error::kafka("creating the sink's group client", e))?;
    Ok((producer, group))
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        // librdkafka's transaction calls block; let the runtime move other tasks away.
        tokio::task::block_in_place(|| self.write_blocking(batch_id, batches))
    }
}
