//! The query file: `CREATE TABLE … WITH (connector = '…', …)` statements for sources
//! and sinks, then one query (`SELECT …` or `INSERT INTO sink SELECT …`).
//!
//! This module only parses and checks the file's shape; planning the query is
//! `exec::plan`'s job. Errors carry the parser's line and column.
//!
//! ```sql
//! CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, content VARCHAR)
//! WITH (connector = 'kafka', topic = 'logs', bootstrap_servers = 'localhost:9092');
//! SELECT severity, count(*) FROM logs GROUP BY severity;
//! ```

mod parse;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, ColumnDef, CreateTableOptions, DataType as SqlType, ExactNumberInfo, Expr,
    Query, SqlOption, Statement, StructField, Value, ValueWithSpan,
};

/// Errors in the query file itself.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The SQL does not parse; the message has line and column.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The SQL parses but is not a query file Sluice can run.
    #[error("{file}: {message}")]
    Shape { file: String, message: String },
}

/// A table declared with `CREATE TABLE`: a source or a sink.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name as written (identifiers are case-sensitive when quoted).
    pub name: String,
    /// Declared columns (empty for a sink declared without columns).
    pub schema: SchemaRef,
    /// `WITH (…)` options, keys lower-cased, `connector` included.
    pub options: BTreeMap<String, String>,
}

impl TableDef {
    /// The `connector` option.
    pub fn connector(&self) -> &str {
        self.options
            .get("connector")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The topic of a Kafka table (named in late rows and dead letters).
    pub fn kafka_topic(&self) -> Option<&str> {
        match self.connector() {
            "kafka" => self.options.get("topic").map(String::as_str),
            _ => None,
        }
    }
}

/// A view declared with `CREATE VIEW name AS SELECT …`: a named query over the file's
/// tables (and earlier views), planned into the query wherever it is used.
#[derive(Debug, Clone)]
pub struct ViewDef {
    /// View name as written.
    pub name: String,
    /// Its query.
    pub query: Box<Query>,
}

/// A parsed query file.
#[derive(Debug, Clone)]
pub struct QueryFile {
    /// All `CREATE TABLE`s in file order.
    pub tables: Vec<TableDef>,
    /// All `CREATE VIEW`s in file order (a view may use the ones before it).
    pub views: Vec<ViewDef>,
    /// The query, ready for DataFusion's planner.
    pub query: Box<Query>,
    /// `INSERT INTO` target, if the query writes to a declared sink.
    pub insert_into: Option<String>,
}

impl QueryFile {
    /// Parses `sql` (from file `file`, named in errors).
    pub fn parse(file: &str, sql: &str) -> Result<Self, SqlError> {
        let shape = |message: String| SqlError::Shape {
            file: file.to_string(),
            message,
        };
        let sql = flink_types(sql);
        // sqlparser's debug log echoes the text, secrets and all, before they are known
        // (`secrets`): parse with this thread's logging off.
        let parsed =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                parse::statements(&sql)
            });
        let statements = parsed.map_err(|message| SqlError::Parse {
            file: file.to_string(),
            message,
        })?;
        let mut tables = Vec::new();
        let mut views = Vec::new();
        let mut query: Option<(Box<Query>, Option<String>)> = None;
        for st in statements {
            match st {
                Statement::CreateTable(ct) => {
                    let name = ct.name.to_string();
                    let schema = columns_to_schema(&ct.columns).map_err(|m| shape(format!("table {name}: {m}")))?;
                    let options = match &ct.table_options {
                        CreateTableOptions::With(opts) | CreateTableOptions::Options(opts) => {
                            options_map(opts).map_err(|m| shape(format!("table {name}: {m}")))?
                        }
                        _ => BTreeMap::new(),
                    };
                    if !options.contains_key("connector") {
                        return Err(shape(format!(
                            "table {name} has no connector: add WITH (connector = 'kafka' | 'generator' | 'file' | 'filesystem' | 'postgres' | 'console' | 'parquet' | 'jsonl', …)"
                        )));
                    }
                    tables.push(TableDef {
                        name,
                        schema,
                        options,
                    });
                }
                Statement::CreateView(v) => {
                    let name = v.name.to_string();
                    if v.materialized {
                        return Err(shape(format!("view {name}: materialized views are not supported; use CREATE VIEW")));
                    }
                    if !v.columns.is_empty() {
                        return Err(shape(format!("view {name}: a column list is not supported; name the columns with AS in its SELECT")));
                    }
                    if tables.iter().any(|t: &TableDef| t.name == name) || views.iter().any(|w: &ViewDef| w.name == name) {
                        return Err(shape(format!("view {name}: the name is already declared")));
                    }
                    views.push(ViewDef { name, query: v.query });
                }
                Statement::Query(q) => {
                    if query.is_some() {
                        return Err(shape("more than one query: a file runs exactly one SELECT or INSERT INTO".into()));
                    }
                    query = Some((q, None));
                }
                Statement::Insert(ins) => {
                    if query.is_some() {
                        return Err(shape("more than one query: a file runs exactly one SELECT or INSERT INTO".into()));
                    }
                    let target = ins.table.to_string();
                    let src = ins
                        .source
                        .ok_or_else(|| shape(format!("INSERT INTO {target} needs a SELECT")))?;
                    query = Some((src, Some(target)));
                }
                other => {
                    return Err(shape(format!(
                        "unsupported statement (only CREATE TABLE, CREATE VIEW, SELECT and INSERT INTO … SELECT): {}",
                        first_words(&other.to_string())
                    )))
                }
            }
        }
        let (query, insert_into) =
            query.ok_or_else(|| shape("no query: add a SELECT or INSERT INTO … SELECT".into()))?;
        if let Some(t) = &insert_into {
            if !tables.iter().any(|d| &d.name == t) {
                return Err(shape(format!("INSERT INTO {t}: no table {t} is declared; add CREATE TABLE {t} WITH (connector = 'console')")));
            }
        }
        Ok(Self {
            tables,
            views,
            query,
            insert_into,
        })
    }
}

/// Flink writes `MAP<K, V>` and `ROW(a INT, b VARCHAR)` for types; the SQL parser
/// reads `MAP(K, V)` and `STRUCT<a INT, b VARCHAR>`. Rewrites the first forms into the
/// second outside string literals, quoted names and comments. A `ROW(` is a type when
/// it follows a name (a column or field) or `AS` (a cast), not an expression keyword.
fn flink_types(sql: &str) -> String {
    const EXPRESSION_WORDS: &[&str] = &[
        "select", "where", "and", "or", "not", "on", "by", "in", "then", "else", "when", "having",
        "values", "is", "like", "return", "case",
    ];
    let bytes = sql.as_bytes();
    let word_before = |i: usize| -> (&str, &str) {
        let before = sql[..i].trim_end();
        let start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let word = &before[start..];
        (word, sql[..start].trim_end())
    };
    let mut edits: Vec<(usize, &str)> = Vec::new(); // byte position, replacement of one byte
    let mut angles: Vec<bool> = Vec::new(); // true: opened by MAP
    let mut parens: Vec<bool> = Vec::new(); // true: opened by a ROW type
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'<' => {
                let is_map = word_before(i).0.eq_ignore_ascii_case("map");
                angles.push(is_map);
                if is_map {
                    edits.push((i, "("));
                }
            }
            b'>' if !angles.is_empty() => {
                if angles.pop() == Some(true) {
                    edits.push((i, ")"));
                }
            }
            b'(' => {
                let (word, rest) = word_before(i);
                let (prev, _) = word_before(rest.len());
                let after_name = rest.ends_with(|c: char| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '"' || c == '`'
                });
                let is_row = word.eq_ignore_ascii_case("row")
                    && after_name
                    && !EXPRESSION_WORDS.contains(&prev.to_ascii_lowercase().as_str());
                parens.push(is_row);
                if is_row {
                    edits.push((i - 3, "STRUCT<"));
                }
            }
            b')' => {
                if parens.pop() == Some(true) {
                    edits.push((i, ">"));
                }
            }
            b';' => {
                angles.clear();
                parens.clear();
            }
            _ => {}
        }
        i += 1;
    }
    if edits.is_empty() {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8 * edits.len());
    let mut at = 0;
    for (pos, text) in edits {
        out.push_str(&sql[at..pos]);
        out.push_str(text);
        // `STRUCT<` replaces the four bytes `ROW(`, the others one byte.
        at = pos + if text == "STRUCT<" { 4 } else { 1 };
    }
    out.push_str(&sql[at..]);
    out
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

/// The `WITH (…)` options as a map: keys lower-cased with dots as underscores, values
/// with `${NAME}` taken from the environment; secret values registered (`secrets`).
fn options_map(opts: &[SqlOption]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for o in opts {
        let SqlOption::KeyValue { key, value } = o else {
            return Err(format!("option {o} is not of the form key = 'value'"));
        };
        let v = match value {
            Expr::Value(ValueWithSpan {
                value:
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) | Value::Number(s, _),
                ..
            }) => s.clone(),
            Expr::Value(ValueWithSpan {
                value: Value::Boolean(b),
                ..
            }) => b.to_string(),
            Expr::Identifier(id) => id.value.clone(),
            other => {
                return Err(format!(
                    "option {key}: value {other} is not a string or number"
                ))
            }
        };
        // 'bootstrap.servers' and bootstrap_servers mean the same.
        let key = key.value.to_lowercase().replace('.', "_");
        let (v, from_env) =
            crate::secrets::substitute_env(&v).map_err(|e| format!("option {key}: {e}"))?;
        if from_env || crate::secrets::is_secret_option(&key) {
            crate::secrets::register(&v);
        }
        map.insert(key, v);
    }
    Ok(map)
}

/// Maps declared column types to Arrow. Strings are plain `Utf8` (design.md: faster
/// than `Utf8View` for this workload).
fn columns_to_schema(cols: &[ColumnDef]) -> Result<SchemaRef, String> {
    let fields = cols
        .iter()
        .map(|c| {
            let dt = arrow_type(&c.data_type).map_err(|m| format!("column {}: {m}", c.name))?;
            Ok(Field::new(&c.name.value, dt, true))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The Arrow type of a declared SQL type: scalars, `DECIMAL(p, s)`, and the nested
/// `STRUCT<a INT, b VARCHAR>` (Flink's `ROW(…)` is rewritten to it), `ARRAY<T>` / `T[]`
/// and `MAP(K, V)` (Flink's `MAP<K, V>` likewise); arrow-json decodes each from the
/// JSON value of the same shape.
fn arrow_type(t: &SqlType) -> Result<DataType, String> {
    let item = |t: &SqlType| -> Result<Arc<Field>, String> {
        Ok(Arc::new(Field::new("item", arrow_type(t)?, true)))
    };
    let fields = |fs: &[StructField]| -> Result<Vec<Field>, String> {
        fs.iter()
            .enumerate()
            .map(|(i, f)| {
                let name = f
                    .field_name
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_else(|| format!("c{i}"));
                Ok(Field::new(name, arrow_type(&f.field_type)?, true))
            })
            .collect()
    };
    Ok(match t {
        SqlType::Struct(fs, _) | SqlType::Tuple(fs) => DataType::Struct(fields(fs)?.into()),
        SqlType::Array(
            ArrayElemTypeDef::AngleBracket(e)
            | ArrayElemTypeDef::SquareBracket(e, _)
            | ArrayElemTypeDef::Parenthesis(e),
        ) => DataType::List(item(e)?),
        SqlType::Array(ArrayElemTypeDef::None) => {
            return Err("ARRAY needs an element type: ARRAY<VARCHAR>".into())
        }
        SqlType::Map(k, v) => {
            let entries = Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", arrow_type(k)?, false),
                        Field::new("value", arrow_type(v)?, true),
                    ]
                    .into(),
                ),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        SqlType::Decimal(info) | SqlType::Numeric(info) | SqlType::Dec(info) => {
            // Flink's defaults: DECIMAL = DECIMAL(10, 0), DECIMAL(p) = DECIMAL(p, 0).
            let (p, s) = match info {
                ExactNumberInfo::None => (10, 0),
                ExactNumberInfo::Precision(p) => (*p, 0),
                ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            if !(1..=38).contains(&p) || s < 0 || s as u64 > p {
                return Err(format!(
                    "DECIMAL({p}, {s}): precision 1..38, scale 0..precision"
                ));
            }
            DataType::Decimal128(p as u8, s as i8)
        }
        other => scalar_type(other)?,
    })
}

fn scalar_type(t: &SqlType) -> Result<DataType, String> {
    let name = t.to_string().to_lowercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Ok(match base {
        "bigint" | "int8" | "long" => DataType::Int64,
        "int" | "integer" | "int4" => DataType::Int32,
        "smallint" | "int2" => DataType::Int16,
        "double" | "double precision" | "float8" => DataType::Float64,
        "float" | "real" | "float4" => DataType::Float32,
        "boolean" | "bool" => DataType::Boolean,
        "varchar" | "text" | "string" | "char" | "character varying" => DataType::Utf8,
        // A JSON number is epoch milliseconds; a string is ISO 8601 / RFC 3339.
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "date" => DataType::Date32,
        _ => {
            return Err(format!(
                "type {name} is not supported; use BIGINT, INT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMP, DATE, \
                 DECIMAL(p, s), STRUCT<…> / ROW(…), ARRAY<…> or MAP<…, …>"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_past_the_parser_limit_gets_a_position() {
        let sql = format!("SELECT {}1{} FROM t", "(".repeat(60), ")".repeat(60));
        let e = QueryFile::parse("f.sql", &format!("-- (((\n{sql}"))
            .unwrap_err()
            .to_string();
        // `SELECT ` is 7 characters: the 51st parenthesis is column 58 of line 2.
        assert!(
            e.contains("nested more than 50 deep at Line: 2, Column: 58"),
            "{e}"
        );
        // Regression (found by tests/fuzz_sql.rs): a non-ASCII letter before `<` or `ROW(`
        // made the type rewrite slice inside a character and panic.
        let e = QueryFile::parse("f.sql", "SELECT contenté<1, é ROW(1) FROM t").unwrap_err();
        assert!(e.to_string().contains("f.sql"));
        let e = QueryFile::parse("f.sql", "SELECT a FROM t WHERE\n  a =")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("found: EOF (the end of the file) at Line: 2, Column: 6"),
            "{e}"
        );
    }

    #[test]
    fn parses_sources_sink_and_insert() {
        let f = QueryFile::parse(
            "q.sql",
            "CREATE TABLE logs (timestamp BIGINT, content VARCHAR) WITH (connector = 'kafka', 'bootstrap.servers' = 'h:1', topic = 'logs');\n\
             CREATE TABLE out WITH (connector = 'console');\n\
             INSERT INTO out SELECT content FROM logs WHERE timestamp > 5;",
        )
        .unwrap();
        assert_eq!(f.tables.len(), 2);
        assert_eq!(f.tables[0].options["bootstrap_servers"], "h:1");
        assert_eq!(f.tables[0].schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(f.tables[1].connector(), "console");
        assert_eq!(f.insert_into.as_deref(), Some("out"));
    }

    #[test]
    fn views_parse_in_order() {
        let f = QueryFile::parse(
            "q.sql",
            "CREATE TABLE logs (a BIGINT) WITH (connector = 'kafka');\n\
             CREATE VIEW big AS SELECT a FROM logs WHERE a > 5;\n\
             CREATE VIEW bigger AS SELECT a FROM big WHERE a > 9;\n\
             SELECT * FROM bigger;",
        )
        .unwrap();
        let names: Vec<&str> = f.views.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["big", "bigger"]);
        let e = QueryFile::parse(
            "q.sql",
            "CREATE TABLE logs (a BIGINT) WITH (connector = 'kafka');\n\
             CREATE VIEW logs AS SELECT 1;\nSELECT 1;",
        )
        .unwrap_err();
        assert!(e.to_string().contains("already declared"), "{e}");
    }

    #[test]
    fn parse_error_has_line_and_column() {
        let e = QueryFile::parse(
            "q.sql",
            "CREATE TABLE t (a BIGINT) WITH (connector='kafka');\nSELEC a FROM t;",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("q.sql: ") && m.contains("Line: 2"), "{m}");
    }

    #[test]
    fn shape_errors_say_what_to_write() {
        let e =
            QueryFile::parse("q.sql", "CREATE TABLE t (a BIGINT);\nSELECT a FROM t;").unwrap_err();
        assert!(e.to_string().contains("no connector"), "{e}");
        let e = QueryFile::parse(
            "q.sql",
            "CREATE TABLE t (a BIGINT) WITH (connector='kafka');",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no query"), "{e}");
        let e = QueryFile::parse(
            "q.sql",
            "CREATE TABLE t (a BLOB) WITH (connector='kafka'); SELECT 1;",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    #[test]
    fn nested_and_decimal_columns_map_to_arrow() {
        let f = QueryFile::parse(
            "q.sql",
            "CREATE TABLE t (s STRUCT<a BIGINT, b VARCHAR>, r ROW(x DOUBLE, y ARRAY<INT>), \
             l ARRAY<VARCHAR>, m MAP<VARCHAR, BIGINT>, d DECIMAL(12, 2), ts TIMESTAMP) \
             WITH (connector = 'kafka'); SELECT 1;",
        )
        .unwrap();
        let s = &f.tables[0].schema;
        let t = |i: usize| s.field(i).data_type().clone();
        assert!(
            matches!(t(0), DataType::Struct(f) if f.len() == 2 && f[1].data_type() == &DataType::Utf8)
        );
        assert!(
            matches!(t(1), DataType::Struct(f) if matches!(f[1].data_type(), DataType::List(_)))
        );
        assert!(matches!(t(2), DataType::List(i) if i.data_type() == &DataType::Utf8));
        assert!(matches!(t(3), DataType::Map(_, false)));
        assert_eq!(t(4), DataType::Decimal128(12, 2));
        assert_eq!(t(5), DataType::Timestamp(TimeUnit::Millisecond, None));
    }
}
