//! `sluice explain --analyze`: runs a few batches of the query and adds, to each line of
//! the explain output, what that step did: rows in and out, time, rows per state shard.
//!
//! ```text
//!  source / prefilter / decode   ◄─ BatchProgress (records, screened, malformed, source-thread time)
//!  DataFusion operators          ◄─ each batch's executed plan tree: output_rows, elapsed_compute
//!  exchange / state / emit       ◄─ BatchProgress (rows per shard, merge time, emitted rows)
//!  sink                          ◄─ rows the sink would have written (results are discarded)
//! ```
//! DataFusion operators are matched to lines by their position in a pre-order walk of
//! the plan; every batch executes a fresh copy of the same tree, so positions agree.

use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;

use super::plan::StreamPlan;
use crate::metrics::status::si;
use crate::metrics::{BatchProgress, OperatorProgress};

/// Totals of the batches an analysis ran.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Batches to run before stopping.
    pub want: u64,
    /// Batches run.
    pub batches: u64,
    /// Sums over the batches (durations, rows, shards); figures of the last batch for
    /// state size, panes and watermark.
    sum: BatchProgress,
    /// Per stage (stage 1 or the stateless plan, stage 2), per operator in pre-order:
    /// output rows and compute time (ns), summed over partitions and batches; `None`
    /// for an operator that recorded no metrics (e.g. a merge over one partition, which
    /// passes its input through).
    operators: Vec<Vec<Option<(usize, usize)>>>,
    /// Per stateful operator: rows in and out, time and rows expired summed over the
    /// batches; state rows and bytes of the last batch.
    stateful: Vec<OperatorProgress>,
    /// The annotated plan, once the run ended.
    pub text: String,
}

/// Nodes of `plan` in pre-order, with their depth.
pub fn preorder(plan: &Arc<dyn ExecutionPlan>) -> Vec<(usize, Arc<dyn ExecutionPlan>)> {
    fn walk(
        node: &Arc<dyn ExecutionPlan>,
        depth: usize,
        out: &mut Vec<(usize, Arc<dyn ExecutionPlan>)>,
    ) {
        out.push((depth, Arc::clone(node)));
        for child in node.children() {
            walk(child, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(plan, 0, &mut out);
    out
}

/// `1.23 s`, `45.6 ms`, `789 µs`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

impl Analysis {
    /// An analysis that stops after `batches` batches.
    pub fn new(batches: u64) -> Self {
        Self {
            want: batches.max(1),
            ..Default::default()
        }
    }

    /// Whether enough batches ran.
    pub fn done(&self) -> bool {
        self.batches >= self.want
    }

    /// Adds one finished batch: its progress and the operator metrics of the trees it ran.
    pub fn observe(&mut self, p: &BatchProgress, plan: &StreamPlan) {
        self.batches += 1;
        let s = &mut self.sum;
        s.input_rows += p.input_rows;
        s.malformed_rows += p.malformed_rows;
        s.screened_rows += p.screened_rows;
        s.output_rows += p.output_rows;
        s.emitted_rows += p.emitted_rows;
        s.late_rows += p.late_rows;
        s.duration += p.duration;
        add_phases(&mut s.phases, &p.phases);
        add_phases(&mut s.source_phases, &p.source_phases);
        s.shard_rows
            .resize(p.shard_rows.len().max(s.shard_rows.len()), 0);
        for (a, b) in s.shard_rows.iter_mut().zip(&p.shard_rows) {
            *a += b;
        }
        s.shard_groups = p.shard_groups.clone();
        s.state_groups = p.state_groups;
        s.state_bytes = p.state_bytes;
        s.open_panes = p.open_panes;
        s.watermark = p.watermark;
        if self.stateful.len() < p.operators.len() {
            self.stateful
                .resize(p.operators.len(), OperatorProgress::default());
        }
        for (sum, o) in self.stateful.iter_mut().zip(&p.operators) {
            sum.rows_in += o.rows_in;
            sum.rows_out += o.rows_out;
            sum.expired += o.expired;
            sum.time += o.time;
            sum.state_rows = o.state_rows;
            sum.state_bytes = o.state_bytes;
        }
        for (stage, tree) in plan.last_executed().iter().enumerate() {
            let Some(tree) = tree else { continue };
            let nodes = preorder(tree);
            if self.operators.len() <= stage {
                self.operators.resize(stage + 1, Vec::new());
            }
            let ops = &mut self.operators[stage];
            ops.resize(nodes.len().max(ops.len()), None);
            for ((_, node), op) in nodes.iter().zip(ops.iter_mut()) {
                let Some(m) = node.metrics().map(|m| m.aggregate_by_name()) else {
                    continue;
                };
                if let Some(rows) = m.output_rows() {
                    let (r, t) = op.get_or_insert((0, 0));
                    *r += rows;
                    *t += m.elapsed_compute().unwrap_or(0);
                }
            }
        }
    }

    fn phase(&self, name: &str) -> Duration {
        self.sum
            .phases
            .iter()
            .chain(&self.sum.source_phases)
            .find(|(n, _)| *n == name)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// The first line of the report.
    pub fn header(&self) -> String {
        let s = &self.sum;
        format!(
            "Analyzed over {} batch(es): {} input rows in {} ({} rows/s); results were not \
             written (no sink, checkpoint, dead-letter or late-data output)",
            self.batches,
            s.input_rows,
            show_duration(s.duration),
            si(s.input_rows as f64 / s.duration.as_secs_f64().max(1e-9))
        )
    }

    /// The note on the source line.
    pub fn source(&self) -> String {
        format!(
            "  [rows={}, read={} on the busiest source thread, waited for the source {}]",
            self.sum.input_rows,
            show_duration(self.phase("read")),
            show_duration(self.phase("fetch"))
        )
    }

    /// The note on the prefilter line.
    pub fn prefilter(&self) -> String {
        let s = &self.sum;
        format!(
            "  [screened out={} ({:.1} % of the records, not decoded)]",
            s.screened_rows,
            100.0 * s.screened_rows as f64 / (s.input_rows as f64).max(1.0)
        )
    }

    /// The note on the decode line.
    pub fn decode(&self) -> String {
        let s = &self.sum;
        format!(
            "  [rows={}, malformed={}, time={} on the busiest source thread]",
            s.input_rows - s.screened_rows - s.malformed_rows,
            s.malformed_rows,
            show_duration(self.phase("decode"))
        )
    }

    /// The note on DataFusion operator `index` (pre-order) of `stage` (0 or 1).
    pub fn operator(&self, stage: usize, index: usize) -> String {
        match self.operators.get(stage).and_then(|o| o.get(index)) {
            Some(&Some((rows, ns))) => format!(
                "  [rows={rows}, time={}]",
                show_duration(Duration::from_nanos(ns as u64))
            ),
            _ => "  [not measured: passes its input through]".into(),
        }
    }

    /// The note on the exchange line.
    pub fn exchange(&self) -> String {
        let per: Vec<String> = self.sum.shard_rows.iter().map(u64::to_string).collect();
        format!(
            "  [rows={}, per shard: {}]",
            self.sum.shard_rows.iter().sum::<u64>(),
            per.join(", ")
        )
    }

    /// The note on the state line of stateful operator `i`: its rows, time and state
    /// (per shard for a sharded aggregate).
    pub fn state(&self, i: usize) -> String {
        let Some(o) = self.stateful.get(i) else {
            return String::new();
        };
        let shards = match (i, self.sum.shard_groups.len()) {
            (0, n) if n > 1 => {
                let per: Vec<String> = self.sum.shard_groups.iter().map(usize::to_string).collect();
                format!(" (per shard: {})", per.join(", "))
            }
            _ => String::new(),
        };
        let expired = match o.expired {
            0 => String::new(),
            n => format!(", removed by the ttl={n}"),
        };
        format!(
            "  [time={} with emit, rows in={}, out={}, state rows after the last batch={}{shards}, {} bytes{expired}]",
            show_duration(o.time),
            o.rows_in,
            o.rows_out,
            o.state_rows,
            o.state_bytes,
        )
    }

    /// The note on the window line.
    pub fn window(&self) -> String {
        format!(
            "  [open panes={}, watermark={}, late rows dropped={}]",
            self.sum.open_panes.unwrap_or(0),
            self.sum
                .watermark
                .map(crate::metrics::show_ms)
                .unwrap_or_else(|| "none".into()),
            self.sum.late_rows
        )
    }

    /// The note on the emit line of stateful operator `i`.
    pub fn emit(&self, i: usize) -> String {
        let rows = self.stateful.get(i).map_or(0, |o| o.rows_out);
        format!("  [rows={rows}]")
    }

    /// The note on the sink line.
    pub fn sink(&self) -> String {
        format!("  [rows={}, not written]", self.sum.output_rows)
    }
}

fn add_phases(sum: &mut Vec<(&'static str, Duration)>, add: &[(&'static str, Duration)]) {
    for &(name, d) in add {
        match sum.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += d,
            None => sum.push((name, d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_by_name() {
        let mut sum = Vec::new();
        add_phases(&mut sum, &[("fetch", Duration::from_millis(2))]);
        add_phases(
            &mut sum,
            &[
                ("fetch", Duration::from_millis(3)),
                ("sink", Duration::from_millis(1)),
            ],
        );
        assert_eq!(
            sum,
            vec![
                ("fetch", Duration::from_millis(5)),
                ("sink", Duration::from_millis(1))
            ]
        );
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.50 s");
        assert_eq!(show_duration(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(show_duration(Duration::from_nanos(7_000)), "7 µs");
    }
}
