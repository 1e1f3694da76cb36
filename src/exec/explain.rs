//! `sluice explain FILE.sql`: the streaming plan as stages separated by the exchange,
//! the way Spark's DAG shows them. Planning only: no source is opened.
//!
//! ```text
//!  Stage 1, per input partition: source → decode → filter/project → partial aggregate
//!  Exchange: hash(keys) → N state shards
//!  Stage 2, per shard: state merge → emit → operators above the aggregate → sink
//! ```
//! With `--analyze` the query first runs a few batches (see [`super::analyze`]) and
//! every line carries what its step did.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::ExecutionPlan;

use super::analyze::{preorder, Analysis};
use super::dataflow::{OperatorPlan, StagePlan};
use super::plan::StreamPlan;
use super::window::WindowKind;
use super::RunOptions;
use crate::operator::Emit;
use crate::sql::QueryFile;

/// Options of `sluice explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainOptions {
    /// The query and the options a run would use.
    #[command(flatten)]
    pub run: RunOptions,
    /// Run the query for a few batches (results are not written) and add rows and time
    /// to each step.
    #[arg(long)]
    pub analyze: bool,
    /// With --analyze: how many batches to run (fewer if the input ends first).
    #[arg(long, default_value_t = 3)]
    pub batches: u64,
}

/// The DataFusion operators of `plan`, one per line, indented by depth; with an
/// analysis, each with its rows and time.
fn operators(
    plan: &Arc<dyn ExecutionPlan>,
    stage: usize,
    analysis: Option<&Analysis>,
    out: &mut String,
) {
    for (i, (depth, node)) in preorder(plan).iter().enumerate() {
        let line = DisplayableExecutionPlan::new(node.as_ref())
            .one_line()
            .to_string();
        let line = line.trim_end();
        let note = analysis.map(|a| a.operator(stage, i)).unwrap_or_default();
        let _ = writeln!(out, "    {:w$}{line}{note}", "", w = depth * 2);
    }
}

/// The stages of `opts.file`'s query, as text; with `--analyze`, after running it.
/// `stop` ends an analysis early (Ctrl-C); the batches run so far are reported.
pub async fn explain(
    opts: &ExplainOptions,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<String> {
    if opts.analyze {
        let mut run = opts.run.clone();
        // An analysis reads the source but leaves every output alone.
        let ignored: Vec<&str> = [
            ("--checkpoint", run.checkpoint.is_some()),
            ("--dead-letter", run.dead_letter.is_some()),
            ("--late-data", run.late_data.is_some()),
            ("--http", run.http.is_some()),
            ("--progress-json", run.progress_json.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if !ignored.is_empty() {
            eprintln!(
                "[sluice] explain --analyze writes nothing; ignoring {}",
                ignored.join(", ")
            );
        }
        run.checkpoint = None;
        run.dead_letter = None;
        run.late_data = None;
        run.http = None;
        run.progress_json = None;
        let mut analysis = Analysis::new(opts.batches);
        super::run::run_with(&run, &mut std::io::stderr(), stop, Some(&mut analysis)).await?;
        return Ok(crate::secrets::redact(&analysis.text).into_owned());
    }
    let opts = &opts.run;
    let file_name = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file)?;
    let file = QueryFile::parse(&file_name, &text)?;
    let plan = super::plan_query(&file, &file_name, opts).await?;
    let text = describe(&file_name, &file, &plan, opts.no_prefilter, None);
    Ok(crate::secrets::redact(&text).into_owned())
}

/// The stages of an already planned query (`sluice run --http` shows them too); with
/// an analysis, each step carries what it did.
pub fn describe(
    file_name: &str,
    file: &QueryFile,
    plan: &StreamPlan,
    no_prefilter: bool,
    analysis: Option<&Analysis>,
) -> String {
    let note = |f: fn(&Analysis) -> String| analysis.map(f).unwrap_or_default();
    let mut out = String::new();
    let sink = file.insert_into.as_deref().unwrap_or("console");
    let _ = writeln!(
        out,
        "Streaming plan of {file_name} (output mode {}, {} partitions)",
        plan.mode, plan.partitions
    );
    if let Some(a) = analysis {
        let _ = writeln!(out, "{}", a.header());
    }
    let _ = writeln!(out, "Stage 1, one task per input partition:");
    for (i, input) in plan.inputs.iter().enumerate() {
        // What the analysis measured covers every source: said once, at the first.
        let note = |f: fn(&Analysis) -> String| match i {
            0 => note(f),
            _ => String::new(),
        };
        let columns: Vec<&str> = input
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let (prefilter, screen_note) = match plan.prefilter(i) {
            Some(p) if !no_prefilter => (
                format!("skip records without {:?}", p.literals()),
                note(Analysis::prefilter),
            ),
            _ => ("none".to_string(), String::new()),
        };
        let _ = writeln!(
            out,
            "  source: table {} (connector {}){}",
            input.def.name,
            input.def.connector(),
            note(Analysis::source)
        );
        let _ = writeln!(out, "  raw-byte prefilter: {prefilter}{screen_note}");
        let _ = writeln!(
            out,
            "  decode JSON columns: {}{}",
            columns.join(", "),
            note(Analysis::decode)
        );
    }
    for s in &plan.statics {
        let refresh = match s.refresh {
            Some(every) => format!(
                ", read again every {}",
                super::analyze::show_duration(every)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  static table: {} (connector {}), loaded whole at start{refresh}; its lookup joins' hash tables are built then",
            s.def.name,
            s.def.connector()
        );
    }
    let stages = &plan.flow.stages;
    if stages.is_empty() {
        operators(&plan.flow.top, 0, analysis, &mut out);
        let _ = writeln!(
            out,
            "Sink: {sink} (append each batch's rows){}",
            note(Analysis::sink)
        );
        return out;
    }
    for (i, stage) in stages.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out, "Stage {}, over the changes of operator {i}:", i + 2);
        }
        let first = plan.flow.first_fragment(i);
        for (j, input) in stage.inputs.iter().enumerate() {
            operators(input, first + j, analysis, &mut out);
        }
        let last = i + 2 == stages.len() + 1;
        describe_operator(plan, (i, stage), last, analysis, &mut out);
    }
    let top = plan.flow.first_fragment(stages.len());
    operators(&plan.flow.top, top, analysis, &mut out);
    let _ = writeln!(out, "Sink: {sink}{}", note(Analysis::sink));
    out
}

/// The exchange, state and emit lines of one stage's operator.
fn describe_operator(
    plan: &StreamPlan,
    (i, stage): (usize, &StagePlan),
    last: bool,
    analysis: Option<&Analysis>,
    out: &mut String,
) {
    let note = |f: fn(&Analysis) -> String| analysis.map(f).unwrap_or_default();
    let state_note = analysis.map(|a| a.state(i)).unwrap_or_default();
    let emit_note = analysis.map(|a| a.emit(i)).unwrap_or_default();
    let names = |schema: &arrow::datatypes::SchemaRef| -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    let emit = match (stage.emit, last) {
        (_, true) => plan.mode.to_string(),
        (Emit::Changes, _) => "changes (-old, +new, with weights) to the next stage".into(),
        (Emit::Closed, _) if matches!(stage.operator, OperatorPlan::Join { .. }) => {
            "append-only rows to the next stage".into()
        }
        (Emit::Closed, _) => "closed windows to the next stage".into(),
        (e, _) => format!("{e:?}").to_lowercase(),
    };
    // Operators sharded by key: the exchange, what they keep, then what they emit.
    let sharded = |what: &str, state: String, ttl: Option<String>, out: &mut String| {
        let _ = match what.is_empty() {
            true => writeln!(
                out,
                "Exchange: none: one key for every row, so one shard keeps it"
            ),
            false => writeln!(
                out,
                "Exchange: hash({what}) → {} shards (of {} key groups), one thread each",
                plan.partitions,
                crate::state::KEY_GROUPS
            ),
        };
        let _ = writeln!(out, "State, one task per shard:");
        let _ = writeln!(out, "  {state}{state_note}");
        if let Some(ttl) = ttl {
            let _ = writeln!(out, "  {ttl}");
        }
        let _ = writeln!(out, "  emit: {emit}{emit_note}");
    };
    let (spec, window) = match &stage.operator {
        OperatorPlan::Rank { spec } => {
            let keys: Vec<String> = spec.partition_by.iter().map(|e| e.to_string()).collect();
            let order: Vec<String> = spec.order_by.iter().map(|e| e.to_string()).collect();
            let kept = match spec.updating {
                true => "every row per key (the input takes rows back, so lower rows move up)",
                false => "the kept rows per key",
            };
            let state = format!(
                "top-{} per ({}) by {:?} over ({}): {kept}; checkpointed as deltas of the changed keys",
                spec.limit,
                keys.join(", "),
                spec.function,
                order.join(", "),
            );
            let by = keys.join(", ");
            return sharded(&by, state, Some(ttl_line(plan)), out);
        }
        OperatorPlan::Updating { spec } => {
            let aggs: Vec<&str> = spec.aggregates.iter().map(|(a, _)| a.name()).collect();
            let state = format!(
                "aggregate over an updating input, keys ({}): rows added and taken back for {}; a group with no rows left is deleted",
                names(&spec.key_schema).join(", "),
                aggs.join(", "),
            );
            let by = names(&spec.key_schema).join(", ");
            return sharded(&by, state, None, out);
        }
        OperatorPlan::Join { spec } => {
            let keys = |s: usize| -> Vec<String> {
                spec.on
                    .iter()
                    .map(|(l, r)| if s == 0 { l } else { r }.to_string())
                    .collect()
            };
            let condition = spec
                .filter
                .as_ref()
                .map(|f| format!(" and {}", f.expression()))
                .unwrap_or_default();
            let outputs = match spec.emits_changes() {
                true => "rows and their retractions (+I, -D)",
                false => "append-only rows",
            };
            use datafusion::common::JoinType;
            let counts = match spec.join_type {
                JoinType::Inner => "",
                JoinType::LeftSemi | JoinType::RightSemi => {
                    ", with their match counts (a semi join writes a row at its first match)"
                }
                JoinType::LeftAnti | JoinType::RightAnti => {
                    ", with their match counts (an anti join writes a row while it has none, and takes it back at its first)"
                }
                _ => ", with their match counts (a row of an outer side is null-padded while it has none)",
            };
            let growth = match &spec.interval {
                Some(i) => interval_line(spec, i),
                None => "grows with both inputs unless state_ttl is set".into(),
            };
            let state = format!(
                "{} join on ({}) = ({}){condition}: each side's rows by key{counts}; \
                 {growth}; checkpointed as deltas of the changed keys; emits {outputs}",
                spec.join_type,
                keys(0).join(", "),
                keys(1).join(", "),
            );
            let by = keys(0).join(", ");
            let ttl = ttl_line(plan).replace("(-D downstream)", "(a later match is missed)");
            return sharded(&by, state, Some(ttl), out);
        }
        OperatorPlan::Aggregate { spec, window } => (spec, window),
    };
    let aggs: Vec<&str> = spec.aggregates.iter().map(|a| a.name()).collect();
    let sessions = window
        .as_ref()
        .is_some_and(|w| matches!(w.spec.kind, WindowKind::Session { .. }));
    if sessions {
        let _ = writeln!(
            out,
            "Exchange: none: open sessions' partial rows are kept together{}",
            note(Analysis::exchange)
        );
        let _ = writeln!(out, "Stage 2, one task:");
        let _ = writeln!(
            out,
            "  state: open sessions' partial rows, joined per key in start order; a closed \
             session merged with DataFusion's accumulators for {}{}",
            aggs.join(", "),
            state_note
        );
    } else {
        let _ = writeln!(
            out,
            "Exchange: hash({}) → {} state shards (of {} key groups){}",
            names(&spec.key_schema).join(", "),
            plan.partitions,
            crate::state::KEY_GROUPS,
            note(Analysis::exchange)
        );
        let _ = writeln!(out, "Stage 2, one task per state shard:");
        let checkpoint = match (window, stage.emit) {
            (Some(_), _) => "checkpointed whole (bounded by the watermark)",
            (None, Emit::Closed) => {
                "its keys hold the window of the aggregate below, whose windows arrive whole, \
                 once: each batch's groups are final, emitted and dropped"
            }
            (None, _) => "checkpointed as deltas of the changed groups",
        };
        let _ = writeln!(
            out,
            "  state merge: key table + per-group accumulators for {}; {checkpoint}{}",
            aggs.join(", "),
            state_note
        );
        if window.is_none() && stage.emit != Emit::Closed {
            let _ = writeln!(out, "  {}", ttl_line(plan));
        }
    }
    if let Some(w) = window {
        let delay = w
            .tracker
            .as_ref()
            .map(|t| format!("{} ms", t.delay_ms))
            .unwrap_or_else(|| "none".into());
        let state = match w.spec.kind {
            WindowKind::Session { .. } => "per-event rows until a session closes".into(),
            kind => format!("panes of {} ms", kind.pane()),
        };
        let _ = writeln!(
            out,
            "  window: {:?} ({state}), watermark delay {delay}{}",
            w.spec.kind,
            note(Analysis::window)
        );
    }
    let _ = writeln!(out, "  emit: {emit}{emit_note}");
}

/// What the state TTL does to an operator's unwindowed state.
fn ttl_line(plan: &StreamPlan) -> String {
    match plan.state_ttl {
        Some(t) => format!(
            "state ttl: {} of processing time: a key no batch updated for that long is dropped (-D downstream)",
            super::analyze::show_duration(t)
        ),
        None => "state ttl: none: the state keeps every key for ever (set state_ttl to bound it)".into(),
    }
}

/// What an interval join keeps: its bounds, and when each side's rows leave.
fn interval_line(
    spec: &crate::operator::join::JoinSpec,
    i: &crate::operator::join::interval::Interval,
) -> String {
    use crate::operator::join::interval::signed;
    let side = |s: usize| ["left", "right"][s];
    let name = |s: usize| format!("{}.{}", side(s), spec.schemas[s].field(i.columns[s]).name());
    let (l, r) = (name(0), name(1));
    let leaves = |s: usize| match i.keep_ms(s) {
        Some(ms) => format!(
            "{} rows leave when the watermark passes {} {}",
            side(s),
            name(s),
            signed(ms)
        ),
        None => format!(
            "{} rows stay (unbounded on this side: add state_ttl)",
            side(s)
        ),
    };
    format!(
        "interval join ({}): rows at or behind the watermark are dropped as late, {}, {}",
        i.describe([&l, &r]),
        leaves(0),
        leaves(1)
    )
}
