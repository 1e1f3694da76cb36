//! The query's source tables in the batch loop. Each table has its own source, reader
//! threads and offsets; one micro-batch reads every table that has data, each within
//! the per-batch bounds, and the checkpoint logs offsets per (table, partition).
//!
//! ```text
//!  per table: plan ranges (next → available ends, bounded) ─► its Fetcher's threads
//!  collect every table's data ─► log {table: ranges} ─► next offsets per table
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{plan_ranges, RunOptions, StreamPlan};
use crate::checkpoint::{Commit, OffsetLog, Ranges};
use crate::error::{Error, Result};
use crate::source::{self, Fetcher, OffsetRange, PartitionData, Source, SourceSettings};
use crate::sql::TableDef;

/// One source table: its source, reader threads and where reading goes on.
pub struct SourceInput {
    /// The table as declared.
    pub def: TableDef,
    source: Box<dyn Source>,
    fetcher: Fetcher,
    /// The next offset to read in each partition.
    pub next: Vec<i64>,
    /// How far data was available when last asked.
    ends: Vec<i64>,
    /// The ends the last requested batch was planned up to.
    planned: Vec<i64>,
    /// `--available-now`: where reading stops.
    targets: Option<Vec<i64>>,
    /// The literals its raw-byte prefilter requires, if it has one.
    pub screen: Option<Vec<String>>,
    /// Since when its broker has been out of reach, and when that was last said.
    outage: Option<(Instant, Instant)>,
}

impl SourceInput {
    /// What the table reads, for messages.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// Records available but not read yet.
    pub fn lag(&self) -> u64 {
        self.next
            .iter()
            .zip(&self.ends)
            .map(|(n, e)| e.saturating_sub(*n).max(0) as u64)
            .sum()
    }

    /// Reader threads of the table.
    pub fn workers(&self) -> usize {
        self.fetcher.workers()
    }

    /// Starts reading the partitions the source gained, from their start.
    fn gain_partitions(&mut self, news: &mut Vec<String>) -> Result<()> {
        for p in self.source.new_partitions()? {
            self.fetcher.add(p.partition, p.reader)?;
            self.next.push(p.earliest);
            self.ends.push(p.earliest);
            self.planned.push(p.earliest);
            news.push(format!(
                "[sluice] table {} gained partition {}: reading it from offset {}",
                self.def.name, p.partition, p.earliest
            ));
        }
        Ok(())
    }
}

/// Every source table the query reads, in the plan's order.
pub struct Sources {
    /// The tables; `list[i]` feeds the plan's input `i`.
    pub list: Vec<SourceInput>,
    max_records: u64,
    max_bytes: u64,
    /// What the sources have to say (an outage, partitions gained), for the engine's
    /// progress output.
    news: Vec<String>,
}

/// How long a broker may not know a source's partitions before the run stops (a
/// restarted broker knows them again within seconds; a deleted topic never does).
const TOPIC_GONE_AFTER: Duration = Duration::from_secs(60);

/// How long a broker that answers but cannot serve a source's offsets yet (just
/// started) is waited for at start without `--wait-for-source`.
const SETTLING: Duration = Duration::from_secs(20);

/// How often a source that stays out of reach is said to be.
const OUTAGE_REMINDER: Duration = Duration::from_secs(30);

impl Sources {
    /// Opens the sources of every table `plan` reads and starts their reader threads.
    /// With `--wait-for-source`, a broker out of reach is waited for (saying so through
    /// `say` every 30 s) until it answers or `stop` turns true (then `Ok(None)`).
    pub fn open(
        plan: &StreamPlan,
        opts: &RunOptions,
        stop: &dyn Fn() -> bool,
        say: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Option<Self>> {
        let settings = SourceSettings {
            bootstrap_servers: opts.bootstrap_servers.clone(),
            starting_offsets: opts.starting_offsets.clone(),
            target_partitions: opts.target_partitions,
        };
        let mut list = Vec::with_capacity(plan.inputs.len());
        for (i, input) in plan.inputs.iter().enumerate() {
            let Some((mut source, next)) = open_table(&input.def, &settings, opts, stop, say)?
            else {
                return Ok(None);
            };
            let prefilter = match opts.no_prefilter {
                true => None,
                false => plan.prefilter(i),
            };
            let screen = prefilter.as_ref().map(|p| p.literals().to_vec());
            let fetcher = Fetcher::start(
                source.readers()?,
                source.workers(),
                input.schema.clone(),
                prefilter,
            )?;
            list.push(SourceInput {
                def: input.def.clone(),
                ends: next.clone(),
                planned: next.clone(),
                source,
                fetcher,
                next,
                targets: None,
                screen,
                outage: None,
            });
        }
        Ok(Some(Self {
            list,
            max_records: opts
                .max_records_per_batch
                .unwrap_or(super::DEFAULT_MAX_RECORDS),
            max_bytes: opts.max_bytes_per_batch.unwrap_or(super::DEFAULT_MAX_BYTES),
            news: Vec::new(),
        }))
    }

    /// What the sources had to say since last asked.
    pub fn take_news(&mut self) -> Vec<String> {
        std::mem::take(&mut self.news)
    }

    /// What the sources read, for messages: `kafka topic logs (2 partitions)`, or each
    /// table named when there are several.
    pub fn describe(&self) -> String {
        match self.list.as_slice() {
            [one] => one.describe(),
            several => several
                .iter()
                .map(|s| format!("{}: {}", s.def.name, s.describe()))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// Continues after `commit`: each table's next offsets. `location` names the
    /// checkpoint in errors.
    pub fn resume(&mut self, commit: &Commit, location: &str) -> anyhow::Result<()> {
        let sole = self.list.len() == 1;
        for s in &mut self.list {
            let offsets = commit.offsets_of(&s.def.name, sole).ok_or_else(|| {
                anyhow::anyhow!(
                    "checkpoint {location}: it has no offsets for table {}; use a new checkpoint location",
                    s.def.name
                )
            })?;
            if offsets.len() > s.next.len() {
                anyhow::bail!(
                    "checkpoint {location}: it has offsets for {} partitions of table {} but the source has {} (was the topic deleted and made again?); use a new checkpoint location",
                    offsets.len(),
                    s.def.name,
                    s.next.len()
                );
            }
            // Partitions the topic gained since the checkpoint are read from their
            // start: every record in them came after it.
            let mut next = offsets.clone();
            if next.len() < s.next.len() {
                let earliest = s.source.earliest_offsets()?;
                next.extend_from_slice(&earliest[next.len()..]);
                self.news.push(format!(
                    "[sluice] table {} has {} partition(s) more than the checkpoint: they are read from their start",
                    s.def.name,
                    s.next.len() - offsets.len()
                ));
            }
            s.next = next;
        }
        Ok(())
    }

    /// `--available-now`: fixes where each table's reading ends (what it holds now).
    pub fn bound_to_now(&mut self) -> Result<()> {
        for s in &mut self.list {
            let ends = s.source.available_ends()?;
            if ends.contains(&i64::MAX) {
                return Err(Error::option(
                    "--available-now",
                    format!("table {} is unbounded; bound it (e.g. --source generator:1000000) or drop --available-now", s.def.name),
                ));
            }
            s.ends = ends.clone();
            s.targets = Some(ends);
        }
        Ok(())
    }

    /// Asks every table how far its data goes now (the fixed ends with
    /// `--available-now`).
    ///
    /// A table whose broker is out of reach keeps the ends last seen (it has no new data
    /// as far as the batch loop knows) and the engine says it waits; a table whose topic
    /// gained partitions reads them from their start.
    pub fn refresh_ends(&mut self) -> Result<()> {
        for s in &mut self.list {
            if let Some(t) = &s.targets {
                s.ends = t.clone();
                continue;
            }
            let ends = s
                .gain_partitions(&mut self.news)
                .and_then(|()| s.source.available_ends());
            match ends {
                Ok(ends) => {
                    if let Some((since, _)) = s.outage.take() {
                        self.news.push(format!(
                            "[sluice] table {}: the source is back after {:.1} s; reading on from its own offsets",
                            s.def.name,
                            since.elapsed().as_secs_f64()
                        ));
                    }
                    s.ends = ends;
                }
                Err(e) if e.is_outage() => {
                    let now = Instant::now();
                    let (since, said) = s.outage.get_or_insert((now, now));
                    if e.is_unknown_partition() && since.elapsed() >= TOPIC_GONE_AFTER {
                        return Err(Error::SourceGone {
                            table: s.def.name.clone(),
                            seconds: TOPIC_GONE_AFTER.as_secs(),
                            reason: e.to_string(),
                        });
                    }
                    if *since == now || said.elapsed() >= OUTAGE_REMINDER {
                        *said = now;
                        self.news.push(format!(
                            "[sluice] table {}: waiting for the source ({} s so far): {e}",
                            s.def.name,
                            since.elapsed().as_secs()
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Requests the next batch from every table with data up to the ends last seen,
    /// each within the per-batch bounds. Returns whether anything was requested.
    pub fn request_next(&mut self) -> Result<bool> {
        let mut any = false;
        for s in &mut self.list {
            let ranges = plan_ranges(&s.next, &s.ends, self.max_records);
            if !ranges.is_empty() {
                s.fetcher.request(&ranges, self.max_bytes)?;
                s.planned = s.ends.clone();
                any = true;
            }
        }
        Ok(any)
    }

    /// Requests a batch logged before a crash: the very same ranges, no bounds.
    pub fn request_replay(&mut self, log: &OffsetLog) -> Result<()> {
        let sole = self.list.len() == 1;
        for s in &mut self.list {
            let Some(ranges) = log.ranges_of(&s.def.name, sole) else {
                continue;
            };
            let ranges: Vec<(OffsetRange, u64)> = ranges
                .iter()
                .map(|&(partition, start, end)| {
                    let range = OffsetRange {
                        partition,
                        start,
                        end,
                    };
                    (range, u64::MAX)
                })
                .collect();
            if !ranges.is_empty() {
                s.fetcher.request(&ranges, u64::MAX)?;
            }
        }
        Ok(())
    }

    /// Waits for everything requested; `data[i]` is table `i`'s, in partition order,
    /// and each table's next offsets move past it. `None` when `stop` turned true
    /// meanwhile: the batch is abandoned (nothing of it was logged).
    pub fn collect(&mut self, stop: &dyn Fn() -> bool) -> Result<Option<Vec<Vec<PartitionData>>>> {
        let mut all = Vec::with_capacity(self.list.len());
        for s in &mut self.list {
            let Some(data) = s.fetcher.collect(stop)? else {
                return Ok(None);
            };
            for d in &data {
                s.next[d.range.partition] = d.range.end;
            }
            all.push(data);
        }
        Ok(Some(all))
    }

    /// The offset log of a batch that read `data` (as [`Sources::collect`] gave it).
    pub fn log(&self, batch_id: u64, data: &[Vec<PartitionData>]) -> OffsetLog {
        let tables = self
            .list
            .iter()
            .zip(data)
            .map(|(s, data)| {
                let ranges: Ranges = data
                    .iter()
                    .map(|d| (d.range.partition, d.range.start, d.range.end))
                    .collect();
                (s.def.name.clone(), ranges)
            })
            .collect();
        OffsetLog {
            batch_id,
            ranges: Vec::new(),
            tables,
            close_all: false,
        }
    }

    /// Each table's next offsets, for the commit.
    pub fn next_offsets(&self) -> BTreeMap<String, Vec<i64>> {
        self.list
            .iter()
            .map(|s| (s.def.name.clone(), s.next.clone()))
            .collect()
    }

    /// Whether the batch just collected stopped short of what was available when it was
    /// planned (a per-batch bound cut it): more is waiting right now.
    pub fn cut_short(&self) -> bool {
        self.list
            .iter()
            .any(|s| s.next.iter().zip(&s.planned).any(|(n, p)| n < p))
    }

    /// Records available but not read yet, over all tables.
    pub fn lag(&self) -> u64 {
        self.list.iter().map(SourceInput::lag).sum()
    }
}

/// Opens table `def`'s source and its start offsets. A broker that answers but is
/// still settling (its partitions' leaders not elected yet, just after it started) is
/// waited for up to [`SETTLING`]; one out of reach only with `--wait-for-source`, saying
/// so through `say` every 30 s. `None` when `stop` turned true meanwhile.
fn open_table(
    def: &TableDef,
    settings: &SourceSettings,
    opts: &RunOptions,
    stop: &dyn Fn() -> bool,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<Option<(Box<dyn Source>, Vec<i64>)>> {
    let waited = Instant::now();
    let mut said: Option<Instant> = None;
    let opened = loop {
        let opened = source::open(def, settings).and_then(|mut s| {
            let next = s.start_offsets()?;
            Ok((s, next))
        });
        match opened {
            Ok(opened) => break opened,
            Err(e)
                if e.is_outage()
                    && (opts.wait_for_source
                        || (!matches!(e, Error::KafkaUnreachable { .. })
                            && waited.elapsed() < SETTLING)) =>
            {
                if stop() {
                    return Ok(None);
                }
                if opts.wait_for_source && said.is_none_or(|t| t.elapsed() >= OUTAGE_REMINDER) {
                    say(&format!(
                        "[sluice] waiting for table {} (--wait-for-source, {} s so far): {e}",
                        def.name,
                        waited.elapsed().as_secs()
                    ));
                    said = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if said.is_some() {
        say(&format!(
            "[sluice] table {} is reachable after {:.1} s",
            def.name,
            waited.elapsed().as_secs_f64()
        ));
    }
    Ok(Some(opened))
}
