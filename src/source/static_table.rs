//! Static tables: read whole at start-up (and again every `refresh_interval`), for
//! lookup joins. Files through DataFusion's readers (CSV with a header, JSON lines,
//! Parquet; local paths or `s3://bucket/path`), or a PostgreSQL table or query.
//!
//! ```sql
//! CREATE TABLE owners (ip VARCHAR, owner VARCHAR)
//! WITH (connector = 'filesystem', path = 'owners.csv', format = 'csv');
//! CREATE TABLE owners (ip VARCHAR, owner VARCHAR)
//! WITH (connector = 'postgres', connection = 'host=localhost user=app dbname=db', table = 'owners');
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionContext,
};

use crate::error::{Error, Result};
use crate::sql::TableDef;

/// Whether tables of `connector` are static (read whole, not streamed).
pub fn is_static(connector: &str) -> bool {
    matches!(connector, "filesystem" | "postgres")
}

/// `refresh_interval` of a static table: how often it is read again (none: never).
pub fn refresh_interval(def: &TableDef) -> Result<Option<Duration>> {
    def.options
        .get("refresh_interval")
        .map(|v| {
            crate::exec::parse_duration(v)
                .map_err(|e| Error::option(format!("refresh_interval of table {}", def.name), e))
        })
        .transpose()
}

fn opt_err(def: &TableDef, what: &str, msg: impl std::fmt::Display) -> Error {
    Error::option(format!("{what} of table {}", def.name), msg.to_string())
}

/// Reads the whole table `def` declares. Its rows have the declared columns (in the
/// declared order and types) or, when none are declared, the columns the source has.
pub async fn load(def: &TableDef) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let known: &[&str] = match def.connector() {
        "filesystem" => &["path", "format", "header", "delimiter", "refresh_interval"],
        _ => &["connection", "table", "query", "refresh_interval"],
    };
    for key in def.options.keys() {
        if key != "connector" && !known.contains(&key.as_str()) {
            return Err(opt_err(
                def,
                &format!("'{key}'"),
                format!(
                    "unknown option for connector '{}'; valid options: {}",
                    def.connector(),
                    known.join(", ")
                ),
            ));
        }
    }
    refresh_interval(def)?;
    let (schema, batches) = match def.connector() {
        "filesystem" => load_files(def).await?,
        _ => load_postgres(def).await?,
    };
    conform(def, schema, batches)
}

/// The loaded rows with the declared columns, by name, cast to the declared types.
fn conform(
    def: &TableDef,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if def.schema.fields().is_empty() {
        return Ok((schema, batches));
    }
    let mut indices = Vec::new();
    for f in def.schema.fields() {
        let i = schema.index_of(f.name()).map_err(|_| {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            opt_err(
                def,
                "columns",
                format!(
                    "column '{}' is declared but the source has only: {}",
                    f.name(),
                    have.join(", ")
                ),
            )
        })?;
        indices.push(i);
    }
    let target = Arc::new(Schema::new(
        def.schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let mut cols = Vec::with_capacity(indices.len());
        for (i, f) in indices.iter().zip(target.fields()) {
            let c = cast(b.column(*i), f.data_type())
                .map_err(|e| opt_err(def, "columns", format!("column '{}': {e}", f.name())))?;
            cols.push(c);
        }
        out.push(
            RecordBatch::try_new(Arc::clone(&target), cols)
                .map_err(|e| opt_err(def, "columns", e))?,
        );
    }
    Ok((target, out))
}

async fn load_files(def: &TableDef) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let path = def
        .options
        .get("path")
        .ok_or_else(|| opt_err(def, "path", "a filesystem table needs path = 'FILE or DIR'"))?;
    let format = def
        .options
        .get("format")
        .map(String::as_str)
        .unwrap_or("csv");
    let ctx = SessionContext::new();
    if let Some(rest) = path.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        let store = crate::storage::open(&format!("s3://{bucket}"), "static table")?;
        let url =
            ObjectStoreUrl::parse(format!("s3://{bucket}")).map_err(|e| opt_err(def, "path", e))?;
        ctx.register_object_store(url.as_ref(), store);
    }
    let declared = (!def.schema.fields().is_empty()).then(|| {
        Schema::new(
            def.schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        )
    });
    let df: std::result::Result<DataFrame, _> = match format {
        "csv" => {
            let header = def.options.get("header").is_none_or(|h| h != "false");
            let delimiter = match def.options.get("delimiter").map(|d| d.as_bytes()) {
                None => b',',
                Some([b]) => *b,
                Some(_) => return Err(opt_err(def, "delimiter", "one ASCII character, e.g. ';'")),
            };
            let mut o = CsvReadOptions::new()
                .has_header(header)
                .delimiter(delimiter)
                .file_extension("");
            if let Some(s) = &declared {
                o = o.schema(s);
            }
            ctx.read_csv(path.as_str(), o).await
        }
        "json" => {
            let mut o = JsonReadOptions::default().file_extension("");
            if let Some(s) = &declared {
                o = o.schema(s);
            }
            ctx.read_json(path.as_str(), o).await
        }
        "parquet" => {
            ctx.read_parquet(
                path.as_str(),
                ParquetReadOptions::default().file_extension(""),
            )
            .await
        }
        other => {
            return Err(opt_err(
                def,
                "format",
                format!("'{other}' is not a static file format; use 'csv', 'json' or 'parquet'"),
            ))
        }
    };
    let df = df.map_err(|e| {
        opt_err(
            def,
            "path",
            format!("cannot read {path}: {}", e.strip_backtrace()),
        )
    })?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| {
        opt_err(
            def,
            "path",
            format!("cannot read {path}: {}", e.strip_backtrace()),
        )
    })?;
    Ok((schema, batches))
}

async fn load_postgres(def: &TableDef) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let conn = def.options.get("connection").ok_or_else(|| {
        opt_err(
            def,
            "connection",
            "a postgres table needs connection = 'host=… port=… user=… dbname=…' (or a postgres:// URL)",
        )
    })?;
    let sql = match (def.options.get("table"), def.options.get("query")) {
        // Only the declared columns: others may have types Sluice does not read.
        (Some(t), None) if !def.schema.fields().is_empty() => {
            let cols: Vec<String> = def
                .schema
                .fields()
                .iter()
                .map(|f| format!("\"{}\"", f.name().replace('"', "\"\"")))
                .collect();
            format!("SELECT {} FROM {t}", cols.join(", "))
        }
        (Some(t), None) => format!("SELECT * FROM {t}"),
        (None, Some(q)) => q.clone(),
        _ => {
            return Err(opt_err(
                def,
                "table",
                "give exactly one of table = 'name' or query = 'SELECT …'",
            ))
        }
    };
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| opt_err(def, "connection", format!("cannot connect: {e}")))?;
    let task = tokio::spawn(connection);
    let result = read_rows(def, &client, &sql).await;
    drop(client);
    let _ = task.await;
    result
}

async fn read_rows(
    def: &TableDef,
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    use tokio_postgres::types::Type;
    let err = |e: &dyn std::fmt::Display| opt_err(def, "query", format!("{sql}: {e}"));
    let stmt = client.prepare(sql).await.map_err(|e| err(&e))?;
    let rows = client.query(&stmt, &[]).await.map_err(|e| err(&e))?;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, c) in stmt.columns().iter().enumerate() {
        macro_rules! col {
            ($builder:ty, $rust:ty, $dt:expr, $map:expr) => {{
                let mut b = <$builder>::with_capacity(rows.len());
                for r in &rows {
                    let v: Option<$rust> = r.try_get(i).map_err(|e| err(&e))?;
                    b.append_option(v.map($map));
                }
                fields.push(Field::new(c.name(), $dt, true));
                columns.push(Arc::new(b.finish()) as ArrayRef);
            }};
        }
        match *c.type_() {
            Type::BOOL => col!(BooleanBuilder, bool, DataType::Boolean, |v| v),
            Type::INT2 => col!(Int16Builder, i16, DataType::Int16, |v| v),
            Type::INT4 => col!(Int32Builder, i32, DataType::Int32, |v| v),
            Type::INT8 => col!(Int64Builder, i64, DataType::Int64, |v| v),
            Type::FLOAT4 => col!(Float32Builder, f32, DataType::Float32, |v| v),
            Type::FLOAT8 => col!(Float64Builder, f64, DataType::Float64, |v| v),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
                for r in &rows {
                    let v: Option<&str> = r.try_get(i).map_err(|e| err(&e))?;
                    b.append_option(v);
                }
                fields.push(Field::new(c.name(), DataType::Utf8, true));
                columns.push(Arc::new(b.finish()));
            }
            Type::TIMESTAMP => col!(
                TimestampMicrosecondBuilder,
                chrono::NaiveDateTime,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                |v| v.and_utc().timestamp_micros()
            ),
            Type::TIMESTAMPTZ => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
                for r in &rows {
                    let v: Option<chrono::DateTime<chrono::Utc>> =
                        r.try_get(i).map_err(|e| err(&e))?;
                    b.append_option(v.map(|t| t.timestamp_micros()));
                }
                let dt = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
                fields.push(Field::new(c.name(), dt.clone(), true));
                columns.push(Arc::new(b.finish().with_data_type(dt)));
            }
            Type::DATE => col!(Date32Builder, chrono::NaiveDate, DataType::Date32, |v| {
                (v - chrono::NaiveDate::default()).num_days() as i32
            }),
            ref other => {
                return Err(opt_err(
                    def,
                    "query",
                    format!(
                        "column '{}' has PostgreSQL type {other}, which Sluice does not read yet; \
                         cast it in query = 'SELECT …' (e.g. {}::double precision or {}::text)",
                        c.name(),
                        c.name(),
                        c.name()
                    ),
                ))
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| err(&e))?;
    Ok((schema, vec![batch]))
}
