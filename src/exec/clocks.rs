//! Watermarks across sources: each source table with an event time keeps its own clock
//! (the largest event time of its records), and the query's watermark is the minimum
//! over the sources of (clock − that source's delay). A source that has had no records
//! for its `idle_timeout` does not hold the minimum back, so windows still close when
//! one topic goes quiet (Flink's idleness).
//!
//! ```text
//!  batch: source a's rows ─► max event ─┐
//!         source b's rows ─► max event ─┼─► min over the non-idle sources of (max − delay)
//!                                        └─► the aggregate's WatermarkTracker (never decreasing)
//! ```
//! Used when a windowed aggregate reads several sources; with one source the watermark
//! step below the aggregate keeps its own clock, as before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::max;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::plan::EventTime;
use super::watermark::NO_WATERMARK;
use super::window::event_time_ms;
use super::StreamPlan;

/// One source's event-time clock.
struct Clock {
    table: String,
    expr: Arc<dyn PhysicalExpr>,
    delay_ms: i64,
    idle_timeout: Option<Duration>,
    max_event: i64,
    last_data: Instant,
}

/// The clocks of a query's sources (`clocks[i]` for the plan's input `i`, `None` for a
/// source without an event time).
pub struct SourceClocks {
    clocks: Vec<Option<Clock>>,
    /// The largest watermark [`SourceClocks::advance`] has given.
    given: i64,
}

impl SourceClocks {
    /// Clocks for `plan`, when it is a windowed aggregate with a watermark over several
    /// sources, or has an interval join (which takes the watermark from the batch, not
    /// from a watermark step of its own). A source's `event_time` expression is evaluated over its decoded
    /// columns; a source whose event time the query does not read has no clock.
    pub fn new(plan: &StreamPlan) -> anyhow::Result<Option<Self>> {
        let windows = plan.inputs.len() > 1 && plan.watermark_tracker().is_some();
        if !windows && !plan.has_interval_join() {
            return Ok(None);
        }
        let ctx = SessionContext::new();
        for udf in super::window::udfs() {
            ctx.register_udf(udf); // proctime()
        }
        let mut clocks = Vec::with_capacity(plan.inputs.len());
        for input in &plan.inputs {
            let def = &input.def;
            let et = EventTime::of(def).map_err(|e| anyhow::anyhow!("table {}: {e}", def.name))?;
            let idle_timeout = match def.options.get("idle_timeout") {
                Some(t) => Some(
                    super::parse_duration(t)
                        .map_err(|e| anyhow::anyhow!("idle_timeout of table {}: {e}", def.name))?,
                ),
                None => None,
            };
            let (Some(sql), Some(delay_ms)) = (et.expr, et.delay_ms) else {
                clocks.push(None);
                continue;
            };
            let schema = DFSchema::try_from(input.schema.as_ref().clone())?;
            let expr = match ctx.parse_sql_expr(&sql, &schema) {
                Ok(e) => ctx.create_physical_expr(e, &schema)?,
                // Its event-time columns are not decoded: the query does not window it.
                Err(_) => {
                    clocks.push(None);
                    continue;
                }
            };
            clocks.push(Some(Clock {
                table: def.name.clone(),
                expr,
                delay_ms,
                idle_timeout,
                max_event: NO_WATERMARK,
                last_data: Instant::now(),
            }));
        }
        Ok(Some(Self {
            clocks,
            given: NO_WATERMARK,
        }))
    }

    /// Advances source `i`'s clock over its rows of this batch.
    pub fn observe(&mut self, i: usize, partitions: &[Vec<RecordBatch>]) -> anyhow::Result<()> {
        let Some(Some(c)) = self.clocks.get_mut(i) else {
            return Ok(());
        };
        let mut rows = 0;
        for b in partitions.iter().flatten() {
            rows += b.num_rows();
            let values = c.expr.evaluate(b)?.into_array(b.num_rows())?;
            if let Some(m) = max(&event_time_ms(&values)?) {
                c.max_event = c.max_event.max(m);
            }
        }
        if rows > 0 {
            c.last_data = Instant::now();
        }
        Ok(())
    }

    /// The watermark the sources allow now: the minimum over the sources that are not
    /// idle of (largest event time − delay); `NO_WATERMARK` while one of them has seen
    /// no event yet or when every one is idle.
    pub fn watermark(&self) -> i64 {
        let active: Vec<&Clock> = self
            .clocks
            .iter()
            .flatten()
            .filter(|c| c.idle_timeout.is_none_or(|t| c.last_data.elapsed() < t))
            .collect();
        if active.is_empty() || active.iter().any(|c| c.max_event == NO_WATERMARK) {
            return NO_WATERMARK;
        }
        active
            .iter()
            .map(|c| c.max_event.saturating_sub(c.delay_ms))
            .min()
            .unwrap_or(NO_WATERMARK)
    }

    /// The watermark now, never below one given before (a source coming back from
    /// idleness does not move it back).
    pub fn advance(&mut self) -> i64 {
        self.given = self.given.max(self.watermark());
        self.given
    }

    /// Each source's largest event time, for the checkpoint.
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.clocks
            .iter()
            .flatten()
            .map(|c| (c.table.clone(), c.max_event))
            .collect()
    }

    /// Restores the checkpointed largest event times (idleness starts afresh).
    pub fn restore(&mut self, events: &BTreeMap<String, i64>) {
        for c in self.clocks.iter_mut().flatten() {
            if let Some(e) = events.get(&c.table) {
                c.max_event = *e;
            }
        }
    }
}
