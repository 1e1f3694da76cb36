//! The built-in generator source: the workload.md records made in-process (the same
//! record maker as `sluice gen`), so every query runs with no broker.
//!
//! Records are a pure function of (seed, partition, offset): each block of
//! [`BLOCK`] offsets has its own seed, so a replay of any offset range makes the same
//! records again. Event time advances with the offset at `event_rate` records per
//! second (split over partitions) from the time the source opened, with the usual
//! disorder.

use std::time::Instant;

use super::{check_options, num_option, PartitionReader, Source};
use crate::error::{Error, Result};
use crate::gen::{wall_ms, EventClock, RecordMaker, RecordSpec};
use crate::sql::TableDef;

/// Offsets per independently seeded block.
pub const BLOCK: i64 = 1 << 16;

/// Generator options, from the table's WITH clause (`--source generator` uses defaults).
#[derive(Debug, Clone)]
pub struct GeneratorSource {
    partitions: usize,
    /// Records per second over all partitions; 0 = as fast as the engine takes them.
    rate: u64,
    /// Total records; 0 = unbounded.
    max_records: u64,
    event_rate: u64,
    start_ms: i64,
    spec: RecordSpec,
    opened: Instant,
}

impl GeneratorSource {
    /// The generator `def` declares.
    pub fn open(def: &TableDef) -> Result<Self> {
        check_options(
            def,
            &[
                "rate",
                "max_records",
                "partitions",
                "seed",
                "additional_term",
                "additional_term_rate",
                "event_rate",
                "start_time_ms",
                "max_disorder_ms",
            ],
        )?;
        let partitions = num_option(def, "partitions", 2)? as usize;
        if partitions == 0 {
            return Err(Error::option("partitions", "must be at least 1"));
        }
        let rate = num_option(def, "rate", 0)?;
        let event_rate =
            num_option(def, "event_rate", if rate > 0 { rate } else { 100_000 })?.max(1);
        let start_ms = match def.options.get("start_time_ms") {
            Some(_) => num_option(def, "start_time_ms", 0)? as i64,
            None => wall_ms(),
        };
        Ok(Self {
            partitions,
            rate,
            max_records: num_option(def, "max_records", 0)?,
            event_rate,
            start_ms,
            spec: RecordSpec {
                seed: num_option(def, "seed", 42)?,
                term: Some(
                    def.options
                        .get("additional_term")
                        .cloned()
                        .unwrap_or_else(|| "crash".into()),
                ),
                term_rate: num_option(def, "additional_term_rate", 100)?.max(1),
                max_disorder_ms: num_option(def, "max_disorder_ms", 1000)?,
            },
            opened: Instant::now(),
        })
    }

    /// Records partition `p` holds in total (`i64::MAX` when unbounded).
    fn partition_cap(&self, p: usize) -> i64 {
        if self.max_records == 0 {
            return i64::MAX;
        }
        super::partition_share(self.max_records, self.partitions, p)
    }
}

impl Source for GeneratorSource {
    fn describe(&self) -> String {
        let rate = if self.rate == 0 {
            "as fast as possible".to_string()
        } else {
            format!("{} rec/s", self.rate)
        };
        let max = if self.max_records == 0 {
            "unbounded".to_string()
        } else {
            format!("{} records", self.max_records)
        };
        format!(
            "built-in generator ({} partitions, {rate}, {max})",
            self.partitions
        )
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn start_offsets(&mut self) -> Result<Vec<i64>> {
        Ok(vec![0; self.partitions])
    }

    fn available_ends(&mut self) -> Result<Vec<i64>> {
        let due = if self.rate == 0 {
            i64::MAX
        } else {
            (self.opened.elapsed().as_secs_f64() * self.rate as f64 / self.partitions as f64) as i64
        };
        Ok((0..self.partitions)
            .map(|p| due.min(self.partition_cap(p)))
            .collect())
    }

    fn readers(&mut self) -> Result<Vec<Box<dyn PartitionReader>>> {
        let per_partition = (self.event_rate / self.partitions as u64).max(1);
        Ok((0..self.partitions)
            .map(|p| {
                Box::new(GeneratorReader {
                    partition: p as u64,
                    spec: self.spec.clone(),
                    clock: EventClock::Synthetic {
                        start_ms: self.start_ms,
                        per_second: per_partition,
                    },
                    maker: None,
                    next: 0,
                    buf: Vec::with_capacity(512),
                }) as Box<dyn PartitionReader>
            })
            .collect())
    }
}

struct GeneratorReader {
    partition: u64,
    spec: RecordSpec,
    clock: EventClock,
    /// Positioned at `next` when `Some`.
    maker: Option<RecordMaker>,
    next: i64,
    buf: Vec<u8>,
}

impl GeneratorReader {
    /// A maker positioned at the start of `offset`'s block.
    fn block_maker(&self, offset: i64) -> RecordMaker {
        let block = (offset / BLOCK) as u64;
        let mut spec = self.spec.clone();
        spec.seed = splitmix(
            self.spec.seed
                ^ splitmix(self.partition.wrapping_add(1))
                ^ splitmix(block.wrapping_add(1) << 20),
        );
        RecordMaker::new(&spec)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl PartitionReader for GeneratorReader {
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64> {
        if self.maker.is_none() || self.next != start {
            // Position a maker at `start`: a fresh block maker, advanced past the block's
            // earlier records.
            let mut maker = self.block_maker(start);
            let block_start = start - start % BLOCK;
            for o in block_start..start {
                self.buf.clear();
                maker.append(self.clock.at(o as u64, 0), &mut self.buf);
            }
            self.maker = Some(maker);
            self.next = start;
        }
        let stop = end.min(start.saturating_add(max_records.min(i64::MAX as u64) as i64));
        while self.next < stop {
            if self.next % BLOCK == 0 {
                self.maker = Some(self.block_maker(self.next));
            }
            let Some(maker) = self.maker.as_mut() else {
                break;
            };
            self.buf.clear();
            maker.append(self.clock.at(self.next as u64, 0), &mut self.buf);
            f(self.next, &self.buf);
            self.next += 1;
        }
        Ok(self.next)
    }
}
