//! Per-batch progress: what one micro-batch did, printed as one line on stderr so
//! stdout carries only results.

pub mod http;
pub mod status;

use std::time::Duration;

/// What one micro-batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchProgress {
    /// The batch id.
    pub batch_id: u64,
    /// Records read from the source (good and malformed).
    pub input_rows: u64,
    /// Records that did not decode.
    pub malformed_rows: u64,
    /// Records the prefilter skipped (they cannot pass the filter).
    pub screened_rows: u64,
    /// Rows handed to the sink.
    pub output_rows: u64,
    /// Aggregations: rows the state emitted into stage 2.
    pub emitted_rows: u64,
    /// Wall time of the batch, fetch to sink.
    pub duration: Duration,
    /// Groups held in state after the batch (0 for stateless queries).
    pub state_groups: usize,
    /// Bytes the state holds (DataFusion's own accounting of keys and accumulators).
    pub state_bytes: usize,
    /// Windowed aggregations: open panes after the batch.
    pub open_panes: Option<usize>,
    /// Windowed aggregations: the watermark after the batch (epoch ms).
    pub watermark: Option<i64>,
    /// Rows dropped because they were behind the watermark.
    pub late_rows: u64,
    /// Time per phase on the batch's critical path: fetch (waiting for the source
    /// threads), execute (DataFusion: stage 1 and stage 2), stateMerge (exchange, merge
    /// and emit), sink, checkpoint.
    pub phases: Vec<(&'static str, Duration)>,
    /// Time the source threads spent on this batch: read (source and prefilter) and
    /// decode. They run while the previous batch executes, so they overlap `phases`;
    /// the busiest source thread's time is shown.
    pub source_phases: Vec<(&'static str, Duration)>,
    /// Groups held per state shard after the batch (skew shows here).
    pub shard_groups: Vec<usize>,
    /// Partial-aggregate rows the exchange routed to each state shard in this batch.
    pub shard_rows: Vec<u64>,
    /// Wall clock at the batch's start (epoch ms).
    pub started_ms: i64,
    /// Records available in the source but not read yet, after the batch.
    pub lag: u64,
    /// Time since the previous batch started (for the input rate).
    pub since_previous: Option<Duration>,
    /// What each source table read, in the query's order.
    pub sources: Vec<SourceProgress>,
    /// State bytes the batch's checkpoint wrote, and whether they were a full snapshot
    /// (otherwise a delta of the changed groups); `None` without a checkpoint.
    pub checkpoint_written: Option<(u64, bool)>,
    /// Each stateful operator's figures, in dataflow order.
    pub operators: Vec<OperatorProgress>,
    /// A join's figures per side (filled by its `describe`).
    pub join_sides: Vec<SideFigures>,
    /// A join's pairs that passed its condition, over the run.
    pub join_matches: u64,
}

/// One side of a stream–stream join.
#[derive(Debug, Clone, Copy, Default)]
pub struct SideFigures {
    /// Rows it keeps.
    pub rows: usize,
    /// Bytes they take, roughly.
    pub bytes: usize,
    /// Distinct join keys it keeps.
    pub keys: usize,
    /// Key groups with at least one of its keys.
    pub key_groups: usize,
    /// Rows dropped as late (interval joins), over the run.
    pub late: u64,
}

impl SideFigures {
    /// Adds another shard's figures (key groups are disjoint across shards).
    pub fn add(&mut self, o: &SideFigures) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.keys += o.keys;
        self.key_groups += o.key_groups;
        self.late += o.late;
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "numRowsTotal": self.rows,
            "memoryUsedBytes": self.bytes,
            "numKeys": self.keys,
            "numKeyGroups": self.key_groups,
            "numLateRowsDropped": self.late,
        })
    }
}

/// One stateful operator's figures for a batch.
#[derive(Debug, Clone, Default)]
pub struct OperatorProgress {
    /// What it is ("aggregate", "top-N", …).
    pub operator: String,
    /// Rows its input fragment handed it.
    pub rows_in: u64,
    /// Rows it emitted.
    pub rows_out: u64,
    /// Rows (groups, kept rows) in its state after the batch.
    pub state_rows: usize,
    /// Bytes its state holds.
    pub state_bytes: usize,
    /// Rows of state the TTL removed in this batch.
    pub expired: u64,
    /// Rows of state the watermark removed in this batch (interval joins).
    pub pruned: u64,
    /// Time it took, merge and emit.
    pub time: Duration,
    /// A join's sides (left, right); empty for other operators.
    pub sides: Vec<SideFigures>,
    /// A join's pairs that passed its condition, over the run.
    pub matches: u64,
}

/// What one source table contributed to a batch.
#[derive(Debug, Clone, Default)]
pub struct SourceProgress {
    /// The table's name.
    pub table: String,
    /// What it reads (topic, directory, generator).
    pub description: String,
    /// Records read from it (good, malformed and screened out).
    pub input_rows: u64,
    /// Offsets read, per partition: (partition, start, end).
    pub offsets: Vec<(usize, i64, i64)>,
    /// Records available in it but not read yet, after the batch.
    pub lag: u64,
}

impl SourceProgress {
    /// Spark's per-source progress record.
    fn json(&self) -> serde_json::Value {
        let map = |f: &dyn Fn(i64, i64) -> i64| -> serde_json::Map<String, serde_json::Value> {
            self.offsets
                .iter()
                .map(|(p, s, e)| (p.to_string(), f(*s, *e).into()))
                .collect()
        };
        serde_json::json!({
            "table": self.table,
            "description": self.description,
            "startOffset": map(&|s, _| s),
            "endOffset": map(&|_, e| e),
            "numInputRows": self.input_rows,
            "lag": self.lag,
            "rowsPerPartition": map(&|s, e| e - s),
        })
    }
}

impl BatchProgress {
    /// Input records per second of batch time.
    pub fn processed_rows_per_second(&self) -> f64 {
        self.input_rows as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Input records per second of wall time since the previous batch started.
    pub fn input_rows_per_second(&self) -> f64 {
        let secs = self
            .since_previous
            .unwrap_or(self.duration)
            .as_secs_f64()
            .max(1e-9);
        self.input_rows as f64 / secs
    }

    /// The slowest phase and its time.
    pub fn slowest_phase(&self) -> Option<(&'static str, Duration)> {
        self.phases.iter().copied().max_by_key(|(_, d)| *d)
    }

    /// One JSON progress record with Spark's field names where the meaning is the same.
    pub fn json(&self, query: &str) -> String {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut durations = serde_json::Map::new();
        for (name, d) in self.phases.iter().chain(&self.source_phases) {
            durations.insert(name.to_string(), ms(*d).into());
        }
        durations.insert("triggerExecution".into(), ms(self.duration).into());
        serde_json::json!({
            "name": query,
            "batchId": self.batch_id,
            "timestamp": show_ms(self.started_ms),
            "numInputRows": self.input_rows,
            "inputRowsPerSecond": self.input_rows_per_second(),
            "processedRowsPerSecond": self.processed_rows_per_second(),
            "durationMs": durations,
            "eventTime": { "watermark": self.watermark.map(show_ms) },
            "stateOperators": [{
                "numRowsTotal": self.state_groups,
                "memoryUsedBytes": self.state_bytes,
                "numRowsDroppedByWatermark": self.late_rows,
                "openPanes": self.open_panes,
                "numRowsTotalPerShard": self.shard_groups,
                "numRowsMergedPerShard": self.shard_rows,
            }],
            "sources": self.sources.iter().map(SourceProgress::json).collect::<Vec<_>>(),
            "malformedRows": self.malformed_rows,
            "screenedRows": self.screened_rows,
            "numOutputRows": self.output_rows,
            "operators": self.operators.iter().map(|o| serde_json::json!({
                "operator": o.operator,
                "numRowsIn": o.rows_in,
                "numRowsOut": o.rows_out,
                "numRowsTotal": o.state_rows,
                "memoryUsedBytes": o.state_bytes,
                "numRowsRemovedByTtl": o.expired,
                "numRowsRemovedByWatermark": o.pruned,
                "sides": (!o.sides.is_empty())
                    .then(|| o.sides.iter().map(SideFigures::json).collect::<Vec<_>>()),
                "numMatches": (!o.sides.is_empty()).then_some(o.matches),
            })).collect::<Vec<_>>(),
            "checkpoint": self.checkpoint_written.map(|(bytes, full)| serde_json::json!({
                "stateBytesWritten": bytes,
                "full": full,
            })),
            "processMemoryBytes": rss_bytes(),
        })
        .to_string()
    }

    /// The one-line summary printed after each batch.
    pub fn line(&self) -> String {
        // One source: `0:[0,10) 1:[0,12)`; several: `logs 0:[0,10); bids 0:[5,9)`.
        let several = self.sources.len() > 1;
        let offsets: Vec<String> = self
            .sources
            .iter()
            .filter(|s| !s.offsets.is_empty())
            .map(|s| {
                let ranges: Vec<String> = s
                    .offsets
                    .iter()
                    .map(|(p, s, e)| format!("{p}:[{s},{e})"))
                    .collect();
                match several {
                    true => format!("{} {}", s.table, ranges.join(" ")),
                    false => ranges.join(" "),
                }
            })
            .collect();
        let windows = match (self.open_panes, self.watermark) {
            (Some(panes), Some(w)) => format!(
                ", {panes} open panes, watermark {}, {} late rows dropped",
                show_ms(w),
                self.late_rows
            ),
            (Some(panes), None) => format!(", {panes} open panes"),
            _ => String::new(),
        };
        format!(
            "[sluice] batch {}: {} input rows, {:.0} rows/s, {:.3} s, {} output rows, {} groups in state{windows}, {} malformed, {} screened out, offsets {}",
            self.batch_id,
            self.input_rows,
            self.processed_rows_per_second(),
            self.duration.as_secs_f64(),
            self.output_rows,
            self.state_groups,
            self.malformed_rows,
            self.screened_rows,
            offsets.join("; ")
        )
    }
}

/// Epoch milliseconds as `2026-01-11 14:42:50.000` (UTC); `none` before any event.
pub fn show_ms(ms: i64) -> String {
    match ms {
        i64::MIN => "none".into(),
        i64::MAX => "end of input".into(),
        _ => arrow::array::temporal_conversions::timestamp_ms_to_datetime(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| ms.to_string()),
    }
}

/// Resident memory of this process in bytes (Linux), if known.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Says out loud when the stream falls behind: the lag (records available but not
/// read) grew over several batches in a row.
#[derive(Debug, Default)]
pub struct FallingBehind {
    lags: Vec<u64>,
}

/// Batches in a row with a growing lag before a warning.
pub const BEHIND_AFTER: usize = 3;

impl FallingBehind {
    /// Records a batch; returns a warning when the lag grew `BEHIND_AFTER` times in a row.
    pub fn observe(&mut self, p: &BatchProgress) -> Option<String> {
        self.lags.push(p.lag);
        let n = self.lags.len();
        if n <= BEHIND_AFTER
            || !self.lags[n - BEHIND_AFTER - 1..]
                .windows(2)
                .all(|w| w[1] > w[0])
        {
            return None;
        }
        self.lags.clear(); // at most one warning per BEHIND_AFTER batches
        let (phase, d) = p.slowest_phase().unwrap_or(("execute", p.duration));
        let source = if phase == "fetch" && !p.source_phases.is_empty() {
            let parts: Vec<String> = p
                .source_phases
                .iter()
                .map(|(n, d)| format!("{n} {:.3} s", d.as_secs_f64()))
                .collect();
            format!("; source threads: {}", parts.join(", "))
        } else {
            String::new()
        };
        Some(format!(
            "[sluice] falling behind: the lag grew for {BEHIND_AFTER} batches in a row to {} records \
             (input {:.0} rows/s, processed {:.0} rows/s); slowest phase: {phase} ({:.3} s{source}). \
             More parallelism (--target-partitions), larger batches (--max-records-per-batch) or \
             more Kafka partitions help.",
            p.lag,
            p.input_rows_per_second(),
            p.processed_rows_per_second(),
            d.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lag: u64) -> BatchProgress {
        BatchProgress {
            lag,
            duration: Duration::from_millis(100),
            phases: vec![
                ("fetch", Duration::from_millis(10)),
                ("execute", Duration::from_millis(80)),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn falling_behind_is_said_after_the_lag_grows_three_times() {
        let mut f = FallingBehind::default();
        assert!(f.observe(&batch(10)).is_none());
        assert!(f.observe(&batch(20)).is_none());
        assert!(f.observe(&batch(30)).is_none());
        let warning = f.observe(&batch(40)).expect("lag grew three times");
        assert!(
            warning.contains("slowest phase: execute") && warning.contains("--target-partitions"),
            "{warning}"
        );
        // A lag that shrinks or stays is not falling behind.
        let mut g = FallingBehind::default();
        for lag in [10, 20, 20, 30, 40] {
            assert!(g.observe(&batch(lag)).is_none());
        }
    }

    #[test]
    fn show_ms_formats_utc() {
        assert_eq!(show_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(show_ms(-1), "1969-12-31 23:59:59.999");
        assert_eq!(show_ms(i64::MIN), "none");
    }
}
