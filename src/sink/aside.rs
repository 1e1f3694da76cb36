//! Records kept aside instead of lost: malformed records (dead letters) and late rows,
//! appended as JSON lines with where they came from.

use std::io::Write;
use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

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

/// Records that did not decode, appended as JSON lines with where they came from:
/// `{"table", "topic" (Kafka tables), "partition", "offset", "error", "payload"}`. A
/// payload that is not valid UTF-8 is written as `"payload_base64"` instead, so the
/// exact bytes can be replayed.
pub struct DeadLetter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl DeadLetter {
    /// Appends to `path` (created if missing).
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

    /// Writes the malformed `records` of `table` (read from Kafka `topic`, if any).
    pub fn write(&mut self, table: &str, topic: Option<&str>, records: &[Malformed]) -> Result<()> {
        for m in records {
            let mut line = serde_json::Map::new();
            line.insert("table".into(), table.into());
            if let Some(t) = topic {
                line.insert("topic".into(), t.into());
            }
            line.insert("partition".into(), m.partition.into());
            line.insert("offset".into(), m.offset.into());
            line.insert("error".into(), m.error.as_str().into());
            match std::str::from_utf8(&m.payload) {
                Ok(text) => line.insert("payload".into(), text.into()),
                Err(_) => line.insert("payload_base64".into(), BASE64.encode(&m.payload).into()),
            };
            let text = serde_json::Value::Object(line).to_string() + "\n";
            self.out
                .write_all(text.as_bytes())
                .map_err(|e| Error::io("cannot write", &self.path, e))?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}
