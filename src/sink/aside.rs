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
/// dropped them, topic, partition and offset, then the row's columns.
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
        let path = self.path.clone();
        let io = |e: std::io::Error| Error::io("cannot write", &path, e);
        let bad = |e: arrow::error::ArrowError| Error::option("late-data sink", e.to_string());
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
            let text = super::json_lines(&[&b.project(&keep).map_err(bad)?]).map_err(bad)?;
            for (row, line) in super::json_rows(&text).enumerate() {
                let row_json = std::str::from_utf8(line).unwrap_or("{}");
                let body = row_json.strip_prefix('{').unwrap_or(row_json);
                let sep = if body == "}" { "" } else { "," };
                writeln!(
                    self.out,
                    "{{\"batch_id\":{batch_id}{topic},\"partition\":{},\"offset\":{}{sep}{body}",
                    partitions.value(row),
                    offsets.value(row)
                )
                .map_err(io)?;
            }
        }
        self.out.flush().map_err(io)
    }
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
