//! The Kafka ceilings Sluice is measured against (../shared/kafka.md): a bare librdkafka
//! producer sending pre-made records, and a bare consumer with one client per partition,
//! each on its own thread, touching every payload.
//!
//! ```text
//! cargo run --release --example kafka_bare -- produce --topic t --records 3000000
//! cargo run --release --example kafka_bare -- consume --topic t
//! ```
//! Each prints one line `bare-<mode>: N records in S s (R rec/s)`.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice::gen::{RecordMaker, RecordSpec};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let broker = arg(&args, "--broker", "127.0.0.1:9092");
    let topic = arg(&args, "--topic", "logs");
    match mode {
        "produce" => {
            let n: u64 = arg(&args, "--records", "1000000").parse()?;
            let partitions: usize = arg(&args, "--partitions", "2").parse()?;
            let compression = arg(&args, "--compression", "none");
            let linger: u64 = arg(&args, "--linger-ms", "20").parse()?;
            let acks = arg(&args, "--acks", "1");
            produce(&broker, &topic, n, partitions, &compression, linger, &acks)
        }
        "consume" => consume(&broker, &topic),
        _ => anyhow::bail!("usage: kafka_bare produce|consume [--broker B] [--topic T] [--records N] [--partitions P]"),
    }
}

fn produce(
    broker: &str,
    topic: &str,
    n: u64,
    partitions: usize,
    compression: &str,
    linger: u64,
    acks: &str,
) -> anyhow::Result<()> {
    let parts = sluice::kafka::ensure_topic(broker, topic, partitions)? as u64;
    // Pre-make a ring of distinct records (cache-friendly) so the timed loop only sends.
    let premade = n.min(65_536);
    let mut maker = RecordMaker::new(&RecordSpec {
        seed: 1,
        term: Some("crash".into()),
        term_rate: 100,
        max_disorder_ms: 1000,
    });
    let mut data = Vec::with_capacity(premade as usize * 260);
    let mut ends = vec![0];
    let now = sluice::gen::wall_ms();
    for _ in 0..premade {
        maker.append(now, &mut data);
        ends.push(data.len());
    }
    let producer: BaseProducer =
        sluice::gen::output::producer_config(broker, compression, linger, acks).create()?;
    let start = Instant::now();
    for i in 0..n as usize {
        let k = i % premade as usize;
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(&data[ends[k]..ends[k + 1]])
            .partition((i as u64 % parts) as i32);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(1));
                    rec = back;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    report("produce", n, start.elapsed());
    Ok(())
}

fn consume(broker: &str, topic: &str) -> anyhow::Result<()> {
    let parts = sluice::kafka::topic_partitions(broker, &[], topic)?
        .ok_or_else(|| anyhow::anyhow!("topic {topic} missing"))?;
    let start = Instant::now();
    let handles: Vec<_> = (0..parts as i32)
        .map(|p| {
            let (broker, topic) = (broker.to_string(), topic.to_string());
            std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
                let mut cfg = sluice::kafka::consumer_config(&broker);
                // KAFKA_BARE_SET="key=value,key=value" tries other client settings.
                for kv in std::env::var("KAFKA_BARE_SET")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                {
                    if let Some((k, v)) = kv.split_once('=') {
                        cfg.set(k, v);
                    }
                }
                let c: BaseConsumer = cfg.create()?;
                let (lo, hi) = c.fetch_watermarks(&topic, p, Duration::from_secs(5))?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                c.assign(&tpl)?;
                let (mut n, mut touch) = (0u64, 0u64);
                let mut next = lo;
                while next < hi {
                    // Non-blocking first, as Sluice's reader polls: no clock reads
                    // while records are queued.
                    let polled = match c.poll(Duration::ZERO) {
                        None => c.poll(Duration::from_secs(5)),
                        ready => ready,
                    };
                    match polled {
                        Some(Ok(m)) => {
                            if let Some(p) = m.payload() {
                                // Touch both ends of the payload, as a decoder would.
                                touch = touch.wrapping_add(
                                    p.len() as u64
                                        + *p.first().unwrap_or(&0) as u64
                                        + *p.last().unwrap_or(&0) as u64,
                                );
                            }
                            n += 1;
                            next = m.offset() + 1;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            anyhow::bail!("no message within 5 s at offset {next} of partition {p}")
                        }
                    }
                }
                Ok((n, touch))
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        let (n, _) = h
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        total += n;
    }
    report("consume", total, start.elapsed());
    Ok(())
}

fn report(mode: &str, n: u64, d: Duration) {
    println!(
        "bare-{mode}: {n} records in {:.2} s ({:.0} rec/s)",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    );
}
