//! Records kept aside instead of lost: malformed records (dead letters) and late rows,
//! appended as JSON lines with where they came from.

use std::io::Write;
use std::path::PathBuf;

use arrow::array::RecordBatch;

use crate::decode::Malformed;
use crate::error::{Error, Result};

/// Late rows, appended as JSON lines with the batch id that dropped them.
pub struct LateSink {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl LateSink {
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

    pub fn write(&mut self, batch_id: u64, rows: &[RecordBatch]) -> Result<()> {
        let path = self.path.clone();
        let io = |e: std::io::Error| Error::io("cannot write", &path, e);
        for b in rows.iter().filter(|b| b.num_rows() > 0) {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(b)
                .map_err(|e| Error::option("late-data sink", e.to_string()))?;
            w.finish()
                .map_err(|e| Error::option("late-data sink", e.to_string()))?;
            for line in w
                .into_inner()
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
            {
                // {"batch_id":N, …the row's columns…}
                let row = std::str::from_utf8(line).unwrap_or("{}");
                let body = row.strip_prefix('{').unwrap_or(row);
                let sep = if body == "}" { "" } else { "," };
                writeln!(self.out, "{{\"batch_id\":{batch_id}{sep}{body}").map_err(io)?;
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
