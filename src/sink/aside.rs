//! Records kept aside instead of lost: malformed records (dead letters) and late rows,
//! appended as JSON lines with where they came from, each led by the batch id that
//! found it (`{"batch_id":N,…`). A restart that replays a batch logged but not
//! committed first drops the lines that batch wrote before the crash (they are the
//! file's last: batch N + 1 starts only once N commits), so a replay does not write
//! them twice.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

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
    /// Appends to `path` (created if missing), after dropping the lines of the batch
    /// `replay` that a restart replays.
    pub fn open(path: &PathBuf, replay: Option<u64>) -> Result<Self> {
        let f = open_for_append(path, replay, "cannot open the late-data file")?;
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
/// `{"batch_id", "table", "topic" (Kafka tables), "partition", "offset", "error",
/// "payload"}`. A payload that is not valid UTF-8 is written as `"payload_base64"`
/// instead, so the exact bytes can be replayed.
pub struct DeadLetter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl DeadLetter {
    /// Appends to `path` (created if missing), after dropping the lines of the batch
    /// `replay` that a restart replays.
    pub fn open(path: &PathBuf, replay: Option<u64>) -> Result<Self> {
        let f = open_for_append(path, replay, "cannot open the dead-letter file")?;
        Ok(Self {
            path: path.clone(),
            out: std::io::BufWriter::new(f),
        })
    }

    /// Writes the malformed `records` of `table` (read from Kafka `topic`, if any) that
    /// batch `batch_id` read.
    pub fn write(
        &mut self,
        batch_id: u64,
        table: &str,
        topic: Option<&str>,
        records: &[Malformed],
    ) -> Result<()> {
        for m in records {
            let mut line = serde_json::Map::new();
            line.insert("batch_id".into(), batch_id.into()); // first: see the module doc
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

/// `path` opened for appending (created if missing). With `replay`, the file's last
/// lines of that batch, and a torn last line, are cut off first.
fn open_for_append(
    path: &PathBuf,
    replay: Option<u64>,
    what: &'static str,
) -> Result<std::fs::File> {
    if let Some(batch_id) = replay {
        drop_batch_tail(path, batch_id).map_err(|e| Error::io(what, path, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(what, path, e))
}

/// Cuts the trailing lines of `path` that batch `batch_id` wrote (led by
/// `{"batch_id":<batch_id>,`), and a last line without its newline (a crash mid-write).
/// A missing file is fine: nothing was written.
fn drop_batch_tail(path: &Path, batch_id: u64) -> std::io::Result<()> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let lead = format!("{{\"batch_id\":{batch_id},");
    let mut reader = std::io::BufReader::new(f);
    let (mut at, mut cut) = (0u64, None);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let torn = line.last() != Some(&b'\n');
        if torn || line.starts_with(lead.as_bytes()) {
            cut.get_or_insert(at);
        } else {
            cut = None;
        }
        at += n as u64;
    }
    if let Some(len) = cut {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_batch_s_lines_and_a_torn_line_are_cut_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("sluice-aside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dead.jsonl");
        let kept = "{\"batch_id\":3,\"offset\":1}\n{\"batch_id\":4,\"offset\":2}\n";
        // Batch 4's own line earlier in the file is kept: only the tail is the replay's.
        let text = format!("{kept}{{\"batch_id\":5,\"offset\":3}}\n{{\"batch_id\":5,\"offset\":4}}\n{{\"batch_id\":5,\"off");
        std::fs::write(&path, &text).unwrap();
        drop_batch_tail(&path, 4).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            &text[..text.rfind('\n').unwrap() + 1]
        );
        drop_batch_tail(&path, 5).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        drop_batch_tail(&path, 50).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        drop_batch_tail(&dir.join("missing.jsonl"), 1).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
