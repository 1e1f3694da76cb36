//! Late rows traced back to their records, for the late-data sink (`--late-data`).
//!
//! The watermark step only counts late rows: by the time a row reaches it, the plan
//! has projected away everything but the aggregate's inputs. When a batch had late
//! rows, the finder re-reads that batch's decoded records, now with their partition
//! and offset, and selects the late ones with the query's own WHERE clause:
//!
//! ```text
//!  decoded batch + partition, offset ─► SELECT … FROM <source> WHERE (<query's WHERE>)
//!                                         AND (event_time IS NULL OR event_time <= W)
//! ```
//! `W` is the watermark the batch ran with, which is exactly the watermark step's rule,
//! so the finder returns the very rows that step dropped. It only runs for batches
//! with late rows, which are rare in a healthy stream.

use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::SetExpr;

use std::path::PathBuf;

use super::plan::StreamPlan;
use super::stateful::OperatorLateRows;
use super::watermark::NO_WATERMARK;
use crate::sink::aside::LateSink;
use crate::sql::{QueryFile, TableDef};

/// Column names of a late row's origin.
pub const PARTITION: &str = "__sluice_partition";
/// See [`PARTITION`].
pub const OFFSET: &str = "__sluice_offset";

/// Finds a batch's late rows among its decoded records.
pub struct LateFinder {
    source: String,
    event_time: String,
    from: String,
    selection: Option<String>,
    /// The decoded columns plus partition and offset.
    schema: SchemaRef,
}

impl LateFinder {
    /// A finder for `file`'s query over `def`, whose decoded columns are `input`. Fails
    /// when the source declares no event time or the query is not one SELECT.
    pub fn new(file: &QueryFile, def: &TableDef, input: &SchemaRef) -> Result<Self> {
        let event_time = def.options.get("event_time").cloned().ok_or_else(|| {
            DataFusionError::Plan(
                "--late-data needs an event-time window: the source declares no event_time".into(),
            )
        })?;
        let SetExpr::Select(select) = file.query.body.as_ref() else {
            return Err(DataFusionError::Plan(
                "--late-data needs the query to be one SELECT … FROM source (no UNION)".into(),
            ));
        };
        let from: Vec<String> = select.from.iter().map(|t| t.to_string()).collect();
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(PARTITION, DataType::Int32, false));
        fields.push(Field::new(OFFSET, DataType::Int64, false));
        Ok(Self {
            source: def.name.clone(),
            event_time,
            from: from.join(", "),
            selection: select.selection.as_ref().map(|e| e.to_string()),
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// `batch` (decoded columns) with its rows' partition and offsets appended.
    pub fn with_origin(
        &self,
        batch: &RecordBatch,
        partition: usize,
        offsets: &[i64],
    ) -> Result<RecordBatch> {
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(Int32Array::from(vec![
            partition as i32;
            batch.num_rows()
        ])));
        cols.push(Arc::new(Int64Array::from(offsets.to_vec())));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }

    /// The rows of `input` (from [`LateFinder::with_origin`]) that the watermark step
    /// drops at `watermark` (epoch ms): partition, offset, the decoded columns and
    /// `event_time`.
    pub async fn find(&self, input: Vec<RecordBatch>, watermark: i64) -> Result<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        for udf in super::window::udfs() {
            ctx.register_udf(udf);
        }
        let raw = format!("__sluice_late_{}", self.source);
        let table = MemTable::try_new(Arc::clone(&self.schema), vec![input])?;
        ctx.register_table(raw.as_str(), Arc::new(table))?;
        let view = ctx
            .sql(&format!(
                "SELECT *, {} AS event_time FROM \"{raw}\"",
                self.event_time
            ))
            .await?;
        ctx.register_table(self.source.as_str(), view.into_view())?;
        let filter = match &self.selection {
            Some(s) => format!("({s}) AND "),
            None => String::new(),
        };
        // Before the first watermark only rows without event time are dropped.
        let late = if watermark == NO_WATERMARK {
            "event_time IS NULL".to_string()
        } else {
            format!("(event_time IS NULL OR event_time <= to_timestamp_millis({watermark}))")
        };
        ctx.sql(&format!("SELECT * FROM {} WHERE {filter}{late}", self.from))
            .await?
            .collect()
            .await
    }
}

/// Where late rows go: found with their origin, appended to the late-data file.
///
/// A query over one table without a join finds the records behind the rows its
/// watermark step dropped ([`LateFinder`]). A join drops late rows on each side before
/// they reach its state; it keeps them, and they are written as its side saw them
/// (after the side's filter and projection), named by operator and side: a side's row
/// may come from any fragment, so it is not traced back to one record.
pub struct LateOutput {
    /// Finds a batch's late rows with their origin (queries over one table, no join).
    pub finder: Option<LateFinder>,
    sink: LateSink,
    /// The Kafka topic, named in each late row.
    topic: Option<String>,
}

impl LateOutput {
    /// The finder and the file for `file`'s query; `replay` is the batch a restart
    /// replays, whose lines are cut first.
    pub fn open(
        path: &PathBuf,
        file: &QueryFile,
        plan: &StreamPlan,
        replay: Option<u64>,
    ) -> anyhow::Result<Self> {
        let sink = LateSink::open(path, replay)?;
        if plan.flow.stages.iter().any(|s| s.operator.name() == "join") {
            return Ok(Self {
                finder: None,
                sink,
                topic: None,
            });
        }
        let [input] = plan.inputs.as_slice() else {
            anyhow::bail!(
                "--late-data traces late rows to their records for a query over one source table (or a join's sides); this one reads {} tables without a join",
                plan.inputs.len()
            );
        };
        let def = &input.def;
        let finder = LateFinder::new(file, def, &input.schema)
            .map_err(|e| anyhow::anyhow!("{}", e.strip_backtrace()))?;
        Ok(Self {
            finder: Some(finder),
            sink,
            topic: def.kafka_topic().map(str::to_string),
        })
    }

    /// Writes a batch's late rows: those operators kept (`dropped`), and the rest of
    /// the `expected` ones found among the batch's records (`with_origin`, the rows at
    /// or behind `watermark`); returns a warning if the rows written differ from the
    /// rows counted.
    pub async fn write(
        &mut self,
        batch_id: u64,
        dropped: Vec<OperatorLateRows>,
        with_origin: Vec<RecordBatch>,
        watermark: i64,
        expected: u64,
    ) -> anyhow::Result<Option<String>> {
        let mut found = 0u64;
        for d in &dropped {
            let side = match d.operator {
                "join" => ["left", "right"]
                    .get(d.input)
                    .copied()
                    .unwrap_or("?")
                    .to_string(),
                _ => d.input.to_string(),
            };
            let origin = format!(
                "\"operator\":\"{}\",\"stage\":{},\"side\":\"{side}\"",
                d.operator,
                d.stage + 1
            );
            self.sink.write_dropped(batch_id, &origin, &d.rows)?;
            found += d.rows.num_rows() as u64;
        }
        if let Some(finder) = &self.finder {
            let rows = finder.find(with_origin, watermark).await?;
            self.sink.write(batch_id, self.topic.as_deref(), &rows)?;
            found += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        }
        Ok((found != expected).then(|| {
            format!(
                "[sluice] warning: batch {batch_id}: {expected} late row(s) were dropped \
                 but {found} were written to the late-data file"
            )
        }))
    }
}
