//! `sluice explain FILE.sql`: the streaming plan as stages separated by the exchange,
//! the way Spark's DAG shows them. Planning only: no source is opened.
//!
//! ```text
//!  Stage 1, per input partition: source → decode → filter/project → partial aggregate
//!  Exchange: hash(keys) → N state shards
//!  Stage 2, per shard: state merge → emit → operators above the aggregate → sink
//! ```

use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::ExecutionPlan;

use super::plan::{PlanKind, StreamPlan};
use super::{source_table, RunOptions};
use crate::sql::{QueryFile, TableDef};

fn indent(plan: &Arc<dyn ExecutionPlan>, out: &mut String) {
    let text = DisplayableExecutionPlan::new(plan.as_ref())
        .indent(false)
        .to_string();
    for line in text.lines() {
        let _ = writeln!(out, "    {line}");
    }
}

/// The stages of `opts.file`'s query, as text.
pub async fn explain(opts: &RunOptions) -> anyhow::Result<String> {
    let file_name = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file)?;
    let file = QueryFile::parse(&file_name, &text)?;
    let def = source_table(&file, opts)?;
    let plan = StreamPlan::new(&file, &def, opts.target_partitions, opts.output_mode, false)
        .await
        .map_err(|e| anyhow::anyhow!("{file_name}: {}", e.strip_backtrace()))?;
    Ok(describe(&file_name, &file, &def, &plan, opts.no_prefilter))
}

/// The stages of an already planned query (`sluice run --http` shows them too).
pub fn describe(
    file_name: &str,
    file: &QueryFile,
    def: &TableDef,
    plan: &StreamPlan,
    no_prefilter: bool,
) -> String {
    let mut out = String::new();
    let columns: Vec<&str> = plan
        .input_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let prefilter = match plan.prefilter() {
        Some(p) if !no_prefilter => format!("skip records without {:?}", p.literals()),
        _ => "none".to_string(),
    };
    let sink = file.insert_into.as_deref().unwrap_or("console");
    let _ = writeln!(
        out,
        "Streaming plan of {file_name} (output mode {}, {} partitions)",
        plan.mode, plan.partitions
    );
    let _ = writeln!(out, "Stage 1, one task per input partition:");
    let _ = writeln!(
        out,
        "  source: table {} (connector {})",
        def.name,
        def.connector()
    );
    let _ = writeln!(out, "  raw-byte prefilter: {prefilter}");
    let _ = writeln!(out, "  decode JSON columns: {}", columns.join(", "));
    match &plan.kind {
        PlanKind::Stateless { plan: p } => {
            indent(p, &mut out);
            let _ = writeln!(out, "Sink: {sink} (append each batch's rows)");
        }
        PlanKind::Aggregate {
            partial,
            upper,
            spec,
            window,
            ..
        } => {
            indent(partial, &mut out);
            let keys: Vec<&str> = spec
                .key_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let _ = writeln!(
                out,
                "Exchange: hash({}) → {} state shards",
                keys.join(", "),
                plan.partitions
            );
            let _ = writeln!(out, "Stage 2, one task per state shard:");
            let aggs: Vec<&str> = spec.aggregates.iter().map(|a| a.name()).collect();
            let _ = writeln!(
                out,
                "  state merge: GroupValues + GroupsAccumulator for {}",
                aggs.join(", ")
            );
            if let Some(w) = window {
                let delay = w
                    .tracker
                    .as_ref()
                    .map(|t| format!("{} ms", t.delay_ms))
                    .unwrap_or_else(|| "none".into());
                let _ = writeln!(
                    out,
                    "  window: {:?} (panes of {} ms), watermark delay {delay}",
                    w.spec.kind,
                    w.spec.kind.pane()
                );
            }
            let _ = writeln!(out, "  emit: {}", plan.mode);
            indent(upper, &mut out);
            let _ = writeln!(out, "Sink: {sink}");
        }
    }
    out
}
