//! Where `sluice gen` puts records: a Kafka topic, one byte stream (stdout, a file, a
//! device), or a directory of rolling JSON-lines files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::GenOptions;
use crate::error::{Error, Result};
use crate::kafka;

/// A destination for generated records.
pub trait GenOutput {
    /// Takes record number `index` (no trailing newline). May block when the output is full.
    fn send(&mut self, index: u64, record: &[u8]) -> Result<()>;
    /// The wall clock in epoch ms, given every few hundred records: a Kafka output
    /// stamps records with it, so librdkafka does not read the clock per record.
    fn tick(&mut self, _wall_ms: i64) {}
    /// Flushes everything; for Kafka, waits until every record is acknowledged.
    fn finish(&mut self) -> Result<()>;
    /// Where the records go, for the summary line.
    fn describe(&self) -> String;
}

/// Opens the output `opts` asks for: Kafka unless `--output` is set.
pub fn open_output(opts: &GenOptions) -> Result<Box<dyn GenOutput>> {
    match &opts.output {
        None => Ok(Box::new(KafkaOutput::open(opts)?)),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(StreamOutput::new(
            Box::new(std::io::stdout().lock()),
            p.clone(),
        ))),
        Some(p) if p.exists() && !p.is_dir() => {
            let f = File::options()
                .write(true)
                .open(p)
                .map_err(|e| Error::io("cannot open", p, e))?;
            Ok(Box::new(StreamOutput::new(Box::new(f), p.clone())))
        }
        Some(p) => Ok(Box::new(DirOutput::open(p, opts.records_per_file)?)),
    }
}

const WRITE_BUFFER: usize = 1 << 20;

/// One newline-separated stream.
struct StreamOutput {
    w: BufWriter<Box<dyn Write>>,
    path: PathBuf,
}

impl StreamOutput {
    fn new(w: Box<dyn Write>, path: PathBuf) -> Self {
        Self {
            w: BufWriter::with_capacity(WRITE_BUFFER, w),
            path,
        }
    }
}

impl GenOutput for StreamOutput {
    fn send(&mut self, _index: u64, record: &[u8]) -> Result<()> {
        self.w
            .write_all(record)
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
    fn finish(&mut self) -> Result<()> {
        self.w
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// `DIR/part-00000.jsonl`, `part-00001.jsonl`, … with `per_file` records each, so the
/// file source reads them back in order.
struct DirOutput {
    dir: PathBuf,
    per_file: u64,
    current: Option<StreamOutput>,
}

impl DirOutput {
    fn open(dir: &Path, per_file: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            per_file: per_file.max(1),
            current: None,
        })
    }
}

impl GenOutput for DirOutput {
    fn send(&mut self, index: u64, record: &[u8]) -> Result<()> {
        if index.is_multiple_of(self.per_file) || self.current.is_none() {
            if let Some(mut done) = self.current.take() {
                done.finish()?;
            }
            let path = self
                .dir
                .join(format!("part-{:05}.jsonl", index / self.per_file));
            let f = File::create(&path).map_err(|e| Error::io("cannot create", &path, e))?;
            self.current = Some(StreamOutput::new(Box::new(f), path));
        }
        match &mut self.current {
            Some(out) => out.send(index, record),
            None => Ok(()),
        }
    }
    fn finish(&mut self) -> Result<()> {
        match &mut self.current {
            Some(out) => out.finish(),
            None => Ok(()),
        }
    }
    fn describe(&self) -> String {
        format!("{}/part-*.jsonl", self.dir.display())
    }
}

/// Counts delivery failures reported by librdkafka's delivery callback.
#[derive(Default)]
struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Producer settings, chosen by measurement (see the foundation issue's note): large
/// batches with a short linger, no compression by default (client and broker share two
/// cores, so CPU is the limit, not the network). `acks` is `1` (the leader) by default
/// in `sluice gen`; `all` waits for every in-sync replica.
pub fn producer_config(
    brokers: &str,
    compression: &str,
    linger_ms: u64,
    acks: &str,
) -> rdkafka::ClientConfig {
    let mut cfg = kafka::client_config(brokers);
    cfg.set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", compression)
        .set("message.timeout.ms", "30000")
        // Failures only: a report per delivered record cost ~10 % of the sending
        // thread (profiled); the tracker counts failures and flush() waits for the rest.
        .set("delivery.report.only.error", "true");
    cfg
}

/// Sends records round-robin over the topic's partitions (record `i` to partition
/// `i mod n`, so a seed also fixes which partition holds which record).
struct KafkaOutput {
    producer: BaseProducer<DeliveryTracker>,
    topic: String,
    partitions: u64,
    brokers: String,
    /// The record timestamp (create time), from [`GenOutput::tick`].
    now_ms: i64,
}

impl KafkaOutput {
    fn open(opts: &GenOptions) -> Result<Self> {
        let partitions = kafka::ensure_topic(&opts.broker, &opts.topic, opts.partitions)? as u64;
        let producer = producer_config(&opts.broker, &opts.compression, opts.linger_ms, &opts.acks)
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| Error::kafka("creating the producer (check --compression)", e))?;
        Ok(Self {
            producer,
            topic: opts.topic.clone(),
            partitions: partitions.max(1),
            brokers: opts.broker.clone(),
            now_ms: super::wall_ms(),
        })
    }
}

impl GenOutput for KafkaOutput {
    fn send(&mut self, index: u64, record: &[u8]) -> Result<()> {
        let partition = (index % self.partitions) as i32;
        let mut rec = BaseRecord::<(), [u8]>::to(&self.topic)
            .payload(record)
            .partition(partition)
            .timestamp(self.now_ms);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports until there is room.
                    self.producer.poll(Duration::from_millis(1));
                    rec = back;
                }
                Err((e, _)) => return Err(Error::kafka("sending a record", e)),
            }
        }
        if index.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn tick(&mut self, wall_ms: i64) {
        self.now_ms = wall_ms;
    }

    fn finish(&mut self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| Error::kafka("waiting for delivery acknowledgements", e))?;
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            return Err(Error::Delivery { failed, first });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "Kafka topic '{}' on {} ({} partitions)",
            self.topic, self.brokers, self.partitions
        )
    }
}
