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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
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
use crate::kafka::SinkContext;
use crate::sql::TableDef;
use crate::storage::Backoff;

/// How long a transaction step may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one try at a batch may take in all before the sink gives it up: the
/// producer's request timeout (librdkafka ties it to the transaction timeout, 60 s by
/// default), plus a margin. A step normally fails within its own timeout while the
/// broker is away, but a request the broker dropped mid-flight has been seen to leave a
/// step waiting for minutes (a CI run); past this deadline the try's producer is left to
/// its thread and the batch goes on to a new producer, which fences the old one.
/// (Tests shorten it with `SLUICE_SINK_TRY_DEADLINE_MS`, to reach this path in seconds.)
const TRY_DEADLINE: Duration = Duration::from_secs(75);

/// [`TRY_DEADLINE`], or the test hook's value.
fn try_deadline() -> Duration {
    std::env::var("SLUICE_SINK_TRY_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(TRY_DEADLINE, Duration::from_millis)
}

/// Writes each batch's rows to a Kafka topic in one transaction.
pub struct KafkaSink {
    rows: Rows,
    brokers: String,
    /// librdkafka settings from `kafka.*` table options.
    properties: Vec<(String, String)>,
    /// The transactional id, and the group id of the "last batch written" offset.
    id: String,
    /// Shared with the thread of the try under way (see [`TRY_DEADLINE`]).
    conn: Arc<Conn>,
    /// The last batch id written, once the transactions are initialised.
    written: Option<Option<u64>>,
    /// The batch this run replays from the checkpoint's log, if any.
    replay: Option<u64>,
    /// [`try_deadline`], read once.
    deadline: Duration,
}

/// The sink's transactional producer and the client of its group offset.
struct Conn {
    producer: ThreadedProducer<SinkContext>,
    /// Reads and writes the "last batch written" offset of the sink's group.
    group: BaseConsumer<SinkContext>,
    /// Set when the sink gave this producer up past the deadline: the try still under
    /// way on it stops at its next step instead of writing on beside the new producer.
    abandoned: AtomicBool,
}

/// How a batch's rows become messages on the topic.
#[derive(Clone)]
struct Rows {
    topic: String,
    key: Option<usize>,
    /// Update mode over a result with deletes: the first column is the op; `-D` rows are
    /// tombstones, the others upserts of the row without its op.
    upsert: bool,
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
        let conn = Arc::new(Conn::connect(&brokers, &properties, &id)?);
        Ok(Self {
            rows: Rows {
                topic,
                key,
                upsert: false,
            },
            brokers,
            properties,
            id,
            conn,
            written: None,
            replay,
            deadline: try_deadline(),
        })
    }

    /// Writes upserts keyed by the `key` column, and a tombstone (no payload) for a
    /// deleted row, from rows led by their op column.
    pub fn upserts(mut self) -> Result<Self> {
        if self.rows.key.is_none() {
            return Err(Error::option(
                "Kafka sink",
                "update output mode writes upserts keyed by the result's key, and tombstones for deleted rows; \
                 add key = '<column>' to the sink's WITH (…), or use --output-mode changelog",
            ));
        }
        self.rows.upsert = true;
        Ok(self)
    }

    /// Writes batch `batch_id` in one transaction, trying again on a new producer while
    /// the broker is out of reach or restarting (for up to `--write-retry`).
    fn write_blocking(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let started = Instant::now();
        let topic = self.rows.topic.clone();
        // The retry window starts at the first failure (which may itself have taken
        // the transaction timeout).
        let mut backoff: Option<Backoff> = None;
        let mut tries = 0;
        // Whether a producer given up on may still be finishing its `init_transactions`:
        // that fences the producer after it, so a fenced error is then our own doing.
        let mut gave_up = false;
        loop {
            tries += 1;
            let e = match self.try_in_time(batch_id, batches, tries > 1) {
                Ok(()) if tries > 1 => {
                    tracing::warn!(
                        "Kafka sink topic '{topic}': batch {batch_id} written on try {tries}, after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            gave_up |= matches!(e, Error::SinkStalled { .. });
            let lookup = crate::kafka::topic_partitions(&self.brokers, &self.properties, &topic);
            if let Ok(None) = lookup {
                return Err(Error::SinkTopicGone {
                    topic,
                    brokers: self.brokers.clone(),
                    batch_id,
                });
            }
            let wait = match e.is_transient_txn() || (gave_up && e.is_fenced()) {
                true => backoff.get_or_insert_with(Backoff::start).next_wait(),
                false => None,
            };
            let Some(wait) = wait else {
                if tries > 1 {
                    tracing::warn!(
                        "Kafka sink topic '{topic}': batch {batch_id} failed {tries} times in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Err(e);
            };
            tracing::warn!(
                "Kafka sink topic '{topic}': batch {batch_id} failed ({e}); retrying in {:.1} s on a new producer (for up to {:.0} s, then the run stops; the batch is not committed until it succeeds)",
                wait.as_secs_f64(),
                crate::storage::retry_for().as_secs_f64()
            );
            std::thread::sleep(wait);
            // A new producer fences the old one and aborts its open transaction; the
            // group offset is read again, in case the failed try's commit went through.
            // The old one is closed on a thread of its own, so that closing it (which
            // may wait on the broker) does not hold the batch up.
            let new = Arc::new(Conn::connect(&self.brokers, &self.properties, &self.id)?);
            let old = std::mem::replace(&mut self.conn, new);
            std::thread::spawn(move || drop(old));
            self.written = None;
        }
    }

    /// One try at batch `batch_id` ([`Conn::try_write`]) on a thread of its own, given
    /// up after [`TRY_DEADLINE`]: a librdkafka call stuck past its own timeout then
    /// holds only that thread and the producer this sink replaces.
    fn try_in_time(&mut self, batch_id: u64, batches: &[RecordBatch], retry: bool) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        let conn = Arc::clone(&self.conn);
        let rows = self.rows.clone();
        let batches = batches.to_vec();
        let known = self.written;
        let again = retry || self.replay == Some(batch_id);
        std::thread::Builder::new()
            .name("sluice-kafka-sink".into())
            .spawn(move || {
                let _ = tx.send(conn.try_write(&rows, known, again, batch_id, &batches));
            })
            .map_err(|e| Error::option("Kafka sink", format!("starting its thread: {e}")))?;
        match rx.recv_timeout(self.deadline) {
            Ok(written) => {
                self.written = Some(written?);
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => {
                self.conn.abandoned.store(true, Ordering::Relaxed);
                Err(Error::SinkStalled {
                    topic: self.rows.topic.clone(),
                    brokers: self.brokers.clone(),
                    batch_id,
                    seconds: self.deadline.as_secs_f64().ceil() as u64,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::option(
                "Kafka sink",
                format!("the thread writing batch {batch_id} ended without an answer"),
            )),
        }
    }
}

impl Conn {
    /// A new transactional producer with id `id`, and the client of its group offset.
    fn connect(brokers: &str, properties: &[(String, String)], id: &str) -> Result<Self> {
        let config =
            || crate::kafka::with_properties(crate::kafka::client_config(brokers), properties);
        let producer = config()
            .set("transactional.id", id)
            .set("linger.ms", "5")
            .create_with_context(SinkContext)
            .map_err(|e| Error::kafka("creating the sink's producer", e))?;
        let group = config()
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create_with_context(SinkContext)
            .map_err(|e| Error::kafka("creating the sink's group client", e))?;
        Ok(Self {
            producer,
            group,
            abandoned: AtomicBool::new(false),
        })
    }

    /// Initialises the transactions (fencing an older instance) and reads which batch
    /// was committed last.
    fn start(&self, topic: &str) -> Result<Option<u64>> {
        self.producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(|e| Error::kafka(format!("starting transactions on {topic}"), e))?;
        let committed = self
            .group
            .committed_offsets(position(topic, None)?, TXN_TIMEOUT)
            .map_err(|e| Error::kafka("reading the sink's last batch", e))?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => Some(o as u64 - 1),
            _ => None,
        }))
    }

    /// One try at batch `batch_id`; returns the last batch written after it. `known` is
    /// that of the try before on this producer, if any. Skipped when the group offset
    /// says the batch is written already and it is written `again`: the batch a restart
    /// replays, or one tried again after a try whose commit went through.
    fn try_write(
        &self,
        rows: &Rows,
        known: Option<Option<u64>>,
        again: bool,
        batch_id: u64,
        batches: &[RecordBatch],
    ) -> Result<Option<u64>> {
        let written = match known {
            Some(w) => w,
            None => self.start(&rows.topic)?,
        };
        self.go_on()?;
        if again && written.is_some_and(|w| batch_id <= w) {
            return Ok(written); // committed before: must not be written twice
        }
        let txn = |e| Error::kafka(format!("a transaction on {}", rows.topic), e);
        self.producer.begin_transaction().map_err(txn)?;
        let result = rows.send(&self.producer, batch_id, batches).and_then(|()| {
            self.go_on()?;
            let meta = self
                .group
                .group_metadata()
                .ok_or_else(|| Error::option("Kafka sink", "no consumer group metadata"))?;
            self.producer
                .send_offsets_to_transaction(
                    &position(&rows.topic, Some(batch_id))?,
                    &meta,
                    TXN_TIMEOUT,
                )
                .map_err(txn)?;
            self.go_on()?;
            self.producer.commit_transaction(TXN_TIMEOUT).map_err(txn)
        });
        if let Err(e) = result {
            if !e.is_transient_txn() {
                let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            }
            return Err(e);
        }
        Ok(Some(batch_id))
    }
}

impl Conn {
    /// Errs once the sink has given this producer up (nobody waits for the answer).
    fn go_on(&self) -> Result<()> {
        match self.abandoned.load(Ordering::Relaxed) {
            true => Err(Error::option("Kafka sink", "a try given up on")),
            false => Ok(()),
        }
    }
}

/// The group's position on partition 0 of `topic`: one past the last batch id.
fn position(topic: &str, batch_id: Option<u64>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    let offset = match batch_id {
        Some(b) => Offset::Offset(b as i64 + 1),
        None => Offset::Invalid,
    };
    tpl.add_partition_offset(topic, 0, offset)
        .map_err(|e| Error::kafka("naming the sink's position", e))?;
    Ok(tpl)
}

impl Rows {
    /// Sends every row of `batches` as a JSON message.
    fn send(
        &self,
        producer: &ThreadedProducer<SinkContext>,
        batch_id: u64,
        batches: &[RecordBatch],
    ) -> Result<()> {
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
                    match producer.send(record) {
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
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        // librdkafka's transaction calls block; let the runtime move other tasks away.
        tokio::task::block_in_place(|| self.write_blocking(batch_id, batches))
    }
}
