//! The console sink, with Spark's look: a `Batch: N` header and a boxed table,
//! showing the first `num_rows` rows (0 = all) and saying when more were left out.

use std::io::Write;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Sink;
use crate::error::{Error, Result};

/// Prints each batch as a table.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    num_rows: usize,
    schema: SchemaRef,
}

impl ConsoleSink {
    /// A console sink writing rows of `schema` to `out`, showing at most `num_rows`
    /// rows (0 = all).
    pub fn new(out: Box<dyn Write + Send>, num_rows: usize, schema: SchemaRef) -> Self {
        Self {
            out,
            num_rows,
            schema,
        }
    }
}

/// Renders `batches` as Spark's `show(truncate = false)` does.
pub fn render(
    batch_id: u64,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    num_rows: usize,
) -> Result<String> {
    let mut s = String::new();
    let rule = "-------------------------------------------";
    s.push_str(&format!("{rule}\nBatch: {batch_id}\n{rule}\n"));
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let limit = if num_rows == 0 {
        total
    } else {
        num_rows.min(total)
    };
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(limit);
    'outer: for b in batches {
        let cells = b
            .columns()
            .iter()
            .map(CellFormatter::new)
            .collect::<Result<Vec<_>>>()?;
        for r in 0..b.num_rows() {
            if rows.len() >= limit {
                break 'outer;
            }
            rows.push(cells.iter().map(|f| f.value(r)).collect());
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(*w)))
        .collect::<String>()
        + "+\n";
    let fmt_row = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("|{c}{}", " ".repeat(w - c.chars().count())))
            .collect::<String>()
            + "|\n"
    };
    s.push_str(&line);
    s.push_str(&fmt_row(&header));
    s.push_str(&line);
    for r in &rows {
        s.push_str(&fmt_row(r));
    }
    s.push_str(&line);
    if limit < total {
        s.push_str(&format!("only showing top {limit} rows\n"));
    }
    s.push('\n');
    Ok(s)
}

/// Formats cells as Spark shows them: timestamps as `2026-01-11 14:42:50`, structs
/// (such as windows) as `{start, end}`, nulls as `null`.
enum CellFormatter<'a> {
    Plain(ArrayFormatter<'a>),
    Struct(
        Option<&'a arrow::buffer::NullBuffer>,
        Vec<CellFormatter<'a>>,
    ),
}

impl<'a> CellFormatter<'a> {
    fn new(c: &'a ArrayRef) -> Result<Self> {
        let opts = FormatOptions::default()
            .with_null("null")
            .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"));
        if let Some(st) = c.as_struct_opt() {
            let children = st
                .columns()
                .iter()
                .map(CellFormatter::new)
                .collect::<Result<_>>()?;
            return Ok(CellFormatter::Struct(st.nulls(), children));
        }
        ArrayFormatter::try_new(c.as_ref(), &opts)
            .map(CellFormatter::Plain)
            .map_err(|e| Error::option("console sink", e.to_string()))
    }

    fn value(&self, row: usize) -> String {
        match self {
            CellFormatter::Plain(f) => f.value(row).to_string(),
            CellFormatter::Struct(nulls, _) if nulls.is_some_and(|n| n.is_null(row)) => {
                "null".into()
            }
            CellFormatter::Struct(_, children) => {
                let parts: Vec<String> = children.iter().map(|c| c.value(row)).collect();
                format!("{{{}}}", parts.join(", "))
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for ConsoleSink {
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let text = render(batch_id, &self.schema, batches, self.num_rows)?;
        self.out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io("cannot write to", "stdout", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn renders_like_spark_and_limits_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("crash_count", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("user_1836"), None, Some("u")])),
                Arc::new(Int64Array::from(vec![5, 3, 1])),
            ],
        )
        .unwrap();
        let s = render(12, &b.schema(), std::slice::from_ref(&b), 2).unwrap();
        let want = "-------------------------------------------\nBatch: 12\n-------------------------------------------\n\
                    +---------+-----------+\n|user_id  |crash_count|\n+---------+-----------+\n\
                    |user_1836|5          |\n|null     |3          |\n+---------+-----------+\nonly showing top 2 rows\n\n";
        assert_eq!(s, want);
        let empty = render(3, &b.schema(), &[], 20).unwrap();
        assert!(
            empty.ends_with("+-------+-----------+\n|user_id|crash_count|\n+-------+-----------+\n+-------+-----------+\n\n"),
            "{empty}"
        );
    }

    /// Defect 6 of issue 18: the console dropped milliseconds (09:10:08.895 printed
    /// 09:10:08). A whole second prints without a fraction, as Spark does.
    #[test]
    fn console_keeps_milliseconds() {
        use arrow::array::{StructArray, TimestampMillisecondArray};
        let ts = |v: Vec<i64>| Arc::new(TimestampMillisecondArray::from(v)) as ArrayRef;
        // 2026-01-14 09:10:08.895 and 09:10:08.000 UTC
        let at = 1_768_381_808_895i64;
        let whole = at - 895;
        let window = StructArray::from(vec![
            (
                Arc::new(Field::new("start", ts(vec![]).data_type().clone(), true)),
                ts(vec![at, whole]),
            ),
            (
                Arc::new(Field::new("end", ts(vec![]).data_type().clone(), true)),
                ts(vec![at + 10_000, whole + 10_000]),
            ),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", ts(vec![]).data_type().clone(), true),
            Field::new("w", window.data_type().clone(), true),
        ]));
        let b = RecordBatch::try_new(schema, vec![ts(vec![at, whole]), Arc::new(window)]).unwrap();
        let s = render(0, &b.schema(), std::slice::from_ref(&b), 0).unwrap();
        assert!(
            s.contains(
                "|2026-01-14 09:10:08.895|{2026-01-14 09:10:08.895, 2026-01-14 09:10:18.895}|"
            ),
            "{s}"
        );
        assert!(
            s.contains("|2026-01-14 09:10:08    |{2026-01-14 09:10:08, 2026-01-14 09:10:18}"),
            "{s}"
        );
    }
}
