//! Records kept aside instead of lost: malformed records (dead letters) and late rows,
//! appended as JSON lines with where they came from.

use std::io::Write;
use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};

use crate::decode::Malformed;
use crate::error::{Error, Result};
use crate::exec::late::{OFFSET, PARTITION};

/// Late rows, appended as JSON lines with where they came from: the batch id that
/// dropped them, topic, partition and offset (or, for a join's rows, the operator and
/// side), then the row's columns.
pub struct LateSink {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl LateSink {
    /// Appends to `path` (created if missing).
    pub fn open(path: &PathBuf) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot open the late-data file", path, e))?;
        Ok(Self {
            path: path.clone(),
            out: std::io::BufWriter::new(f),
        })
    }

    /// Writes late `rows` (from `exec::late::LateFinder::find`) of batch `batch_id`.
    pub fn write(
        &mut self,
        batch_id: u64,
        topic: Option<&str>,
        rows: &[RecordBatch],
    ) -> Result<()> {
        let topic = match topic {
            Some(t) => format!(",\"topic\":{}", serde_json::Value::from(t)),
            None => String::new(),
        };
        for b in rows.iter().filter(|b| b.num_rows() > 0) {
            let schema = b.schema();
            let p = schema.index_of(PARTITION).map_err(bad)?;
            let o = schema.index_of(OFFSET).map_err(bad)?;
            let partitions = b.column(p).as_primitive::<Int32Type>();
            let offsets = b.column(o).as_primitive::<Int64Type>();
            let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| i != p && i != o).collect();
            self.lines(&b.project(&keep).map_err(bad)?, |row| {
                format!(
                    "\"batch_id\":{batch_id}{topic},\"partition\":{},\"offset\":{}",
                    partitions.value(row),
                    offsets.value(row)
                )
            })?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }

    /// Writes the late `rows` an operator dropped from one input in batch `batch_id`
    /// (a join's side): the rows as that input gave them, after `origin` (JSON members
    /// naming the operator and input).
    pub fn write_dropped(&mut self, batch_id: u64, origin: &str, rows: &RecordBatch) -> Result<()> {
        self.lines(rows, |_| format!("\"batch_id\":{batch_id},{origin}"))?;
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }

    /// One JSON line per row of `b`: `{<head(row)>, <the row's columns>}`.
    fn lines(&mut self, b: &RecordBatch, head: impl Fn(usize) -> String) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let text = super::json_lines(&[b]).map_err(bad)?;
        for (row, line) in super::json_rows(&text).enumerate() {
            let row_json = std::str::from_utf8(line).unwrap_or("{}");
            let body = row_json.strip_prefix('{').unwrap_or(row_json);
            let sep = if body == "}" { "" } else { "," };
            writeln!(self.out, "{{{}{sep}{body}", head(row))
                .map_err(|e| Error::io("cannot write", &self.path, e))?;
        }
        Ok(())
    }
}

/// An arrow error while writing kept-aside rows.
fn bad(e: arrow::error::ArrowError) -> Error {
    Error::option("late-data sink", e.to_string())
}

/// Records that did not decode, appended as JSON lines with where they came from.
pub struct DeadLetter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl DeadLetter {
    pub fn open(path: &PathBuf) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot open the dead-letter file", path, e))?;
        Ok(Self {
            path: path.clone(),
            out: std::io::BufWriter::new(f),
        })
    }

    pub fn write(&mut self, records: &[Malformed]) -> Result<()> {
        for m in records {
            let line = serde_json::json!({
                "partition": m.partition,
                "offset": m.offset,
                "error": m.error,
                "payload": String::from_utf8_lossy(&m.payload),
            })
            .to_string()
                + "\n";
            self.out
                .write_all(line.as_bytes())
                .map_err(|e| Error::io("cannot write", &self.path, e))?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}
