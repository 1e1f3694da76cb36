//! The console sink, with Spark's look: a `Batch: N` header and a boxed table,
//! showing the first `num_rows` rows (0 = all) and saying when more were left out.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Sink;
use crate::error::{Error, Result};

/// Prints each batch as a table.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    num_rows: usize,
}

impl ConsoleSink {
    /// A console sink writing to `out`, showing at most `num_rows` rows (0 = all).
    pub fn new(out: Box<dyn Write + Send>, num_rows: usize) -> Self {
        Self { out, num_rows }
    }
}

/// Renders `batches` as Spark's `show(truncate = false)` does.
pub fn render(batch_id: u64, batches: &[RecordBatch], num_rows: usize) -> Result<String> {
    let mut s = String::new();
    let rule = "-------------------------------------------";
    s.push_str(&format!("{rule}\nBatch: {batch_id}\n{rule}\n"));
    let Some(first) = batches.first() else {
        s.push_str("++\n||\n++\n++\n\n");
        return Ok(s);
    };
    let schema = first.schema();
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let limit = if num_rows == 0 {
        total
    } else {
        num_rows.min(total)
    };
    let opts = FormatOptions::default().with_null("null");
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(limit);
    'outer: for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::option("console sink", e.to_string()))?;
        for r in 0..b.num_rows() {
            if rows.len() >= limit {
                break 'outer;
            }
            rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
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

impl Sink for ConsoleSink {
    fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        let text = render(batch_id, batches, self.num_rows)?;
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
        let s = render(12, &[b], 2).unwrap();
        let want = "-------------------------------------------\nBatch: 12\n-------------------------------------------\n\
                    +---------+-----------+\n|user_id  |crash_count|\n+---------+-----------+\n\
                    |user_1836|5          |\n|null     |3          |\n+---------+-----------+\nonly showing top 2 rows\n\n";
        assert_eq!(s, want);
    }
}
