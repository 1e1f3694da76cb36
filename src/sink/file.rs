//! Parquet and JSON-lines sinks on `object_store` (local or S3), exactly once with
//! checkpoints.
//!
//! Each batch with rows becomes one file named after its batch id
//! (`part-00000012.parquet`), written whole and atomically (temporary file, then
//! rename). A batch replayed after a crash has the same id and the same rows, so it
//! overwrites its file instead of adding a duplicate.
//!
//! Complete output mode ([`FileSink::replacing`]): every batch carries the whole result,
//! so batch N's file replaces all earlier ones (written first, then the older files
//! deleted; a replay after a crash in between rewrites N and deletes them). The
//! directory holds one copy of the result, never duplicates; no rollover.
//!
//! Rollover: so that a slow stream does not leave thousands of tiny files, the
//! per-batch files of committed batches are merged into one
//! (`part-00000003-00000012.parquet`) once they add up to `rollover_bytes` or the
//! oldest is `rollover_seconds` old. When batch N is written, every batch before N is
//! committed, so only those are merged. The merged file is written first, then the
//! small ones deleted; after a crash in between, the small files a merged file covers
//! are deleted when the sink opens.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;

use super::Sink;
use crate::error::{Error, Result};
use crate::sql::TableDef;

/// The file format of a [`FileSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet (snappy), readable by DuckDB, Spark, DataFusion.
    Parquet,
    /// One JSON object per line.
    JsonLines,
}

/// Writes each batch's rows as one file under a directory.
pub struct FileSink {
    store: Arc<dyn ObjectStore>,
    format: FileFormat,
    schema: SchemaRef,
    location: String,
    rollover: Rollover,
    /// Complete mode: each batch's file replaces the earlier ones.
    replace: bool,
}

/// When per-batch files are merged.
#[derive(Debug, Clone, Copy)]
pub struct Rollover {
    /// Merge once the unmerged files add up to this many bytes.
    pub bytes: u64,
    /// Merge once the oldest unmerged file is this old.
    pub seconds: u64,
}

impl Default for Rollover {
    fn default() -> Self {
        Self {
            bytes: 64 << 20,
            seconds: 60,
        }
    }
}

/// A sink file: one batch (`first == last`) or a merged run of batches.
#[derive(Debug, Clone)]
struct Part {
    first: u64,
    last: u64,
    merged: bool,
    size: u64,
    modified: chrono::DateTime<chrono::Utc>,
    path: Path,
}

fn parse_part(meta: &object_store::ObjectMeta, ext: &str) -> Option<Part> {
    let name = meta.location.filename()?;
    let ids = name
        .strip_prefix("part-")?
        .strip_suffix(ext)?
        .strip_suffix('.')?;
    let (first, last, merged) = match ids.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?, true),
        None => {
            let id = ids.parse().ok()?;
            (id, id, false)
        }
    };
    Some(Part {
        first,
        last,
        merged,
        size: meta.size,
        modified: meta.last_modified,
        path: meta.location.clone(),
    })
}

impl FileSink {
    /// The sink a `CREATE TABLE … WITH (connector = 'parquet' | 'jsonl', path = 'DIR',
    /// rollover_bytes = 'N', rollover_seconds = 'S')` declares.
    pub fn from_table(def: &TableDef, schema: SchemaRef) -> Result<Self> {
        let opt = |key: &str| format!("'{key}' of table {}", def.name);
        for key in def.options.keys() {
            if !["connector", "path", "rollover_bytes", "rollover_seconds"].contains(&key.as_str())
            {
                return Err(Error::option(opt(key), "unknown option for a file sink; valid options: path, rollover_bytes, rollover_seconds"));
            }
        }
        let num = |key: &str, default: u64| -> Result<u64> {
            match def.options.get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::option(opt(key), format!("'{v}' is not a whole number"))),
            }
        };
        let path = def.options.get("path").ok_or_else(|| {
            Error::option(
                format!("table {}", def.name),
                format!("the {} sink needs path = 'DIR'", def.connector()),
            )
        })?;
        let format = if def.connector() == "parquet" {
            FileFormat::Parquet
        } else {
            FileFormat::JsonLines
        };
        let d = Rollover::default();
        let rollover = Rollover {
            bytes: num("rollover_bytes", d.bytes)?,
            seconds: num("rollover_seconds", d.seconds)?,
        };
        Self::open(path, format, schema, rollover)
    }

    /// A sink writing `format` files of `schema` under `path` (a local directory or an
    /// object-store URL, see `crate::storage`).
    pub fn open(
        path: &str,
        format: FileFormat,
        schema: SchemaRef,
        rollover: Rollover,
    ) -> Result<Self> {
        let store = crate::storage::open(path, "sink")?;
        remove_staged(path);
        Ok(Self {
            store,
            format,
            schema,
            location: path.to_string(),
            rollover,
            replace: false,
        })
    }

    /// The sink for complete output mode: each batch's result replaces the previous
    /// one, so the directory always holds exactly the latest whole result.
    pub fn replacing(mut self) -> Self {
        self.replace = true;
        self
    }

    /// Deletes every file of batches before `batch_id` (complete mode, once batch
    /// `batch_id`'s result is written).
    async fn delete_before(&self, batch_id: u64) -> Result<()> {
        for p in self.parts().await? {
            if p.last < batch_id {
                self.delete(&p.path).await?;
            }
        }
        Ok(())
    }

    fn ext(&self) -> &'static str {
        match self.format {
            FileFormat::Parquet => "parquet",
            FileFormat::JsonLines => "jsonl",
        }
    }

    /// Deletes `path`, retried while the store fails ([`crate::storage::delete_retrying`]).
    async fn delete(&self, path: &Path) -> Result<()> {
        crate::storage::delete_retrying(self.store.as_ref(), path)
            .await
            .map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::storage(format!("sink {}", self.location), e)
    }

    async fn parts(&self) -> Result<Vec<Part>> {
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(None)
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let mut parts: Vec<Part> = metas
            .iter()
            .filter_map(|m| parse_part(m, self.ext()))
            .collect();
        parts.sort_by_key(|p| (p.first, !p.merged));
        Ok(parts)
    }

    /// Deletes per-batch files a merged file already holds (a crash between writing
    /// the merged file and deleting them), then merges committed per-batch files
    /// (ids below `before`) when they are large or old enough.
    async fn roll_over(&self, before: u64) -> Result<()> {
        let parts = self.parts().await?;
        let merged: Vec<&Part> = parts.iter().filter(|p| p.merged).collect();
        let mut singles = Vec::new();
        for p in parts.iter().filter(|p| !p.merged) {
            if merged
                .iter()
                .any(|m| m.first <= p.first && p.first <= m.last)
            {
                self.delete(&p.path).await?;
            } else if p.first < before {
                singles.push(p);
            }
        }
        let (Some(first), Some(last)) = (singles.first(), singles.last()) else {
            return Ok(());
        };
        let total: u64 = singles.iter().map(|p| p.size).sum();
        let age = chrono::Utc::now()
            .signed_duration_since(first.modified)
            .num_seconds()
            .max(0) as u64;
        if singles.len() < 2 || (total < self.rollover.bytes && age < self.rollover.seconds) {
            return Ok(());
        }
        let mut batches = Vec::new();
        let mut lines = Vec::new();
        for p in &singles {
            let bytes = self
                .store
                .get(&p.path)
                .await
                .map_err(|e| self.err(e))?
                .bytes()
                .await
                .map_err(|e| self.err(e))?;
            match self.format {
                FileFormat::Parquet => {
                    let reader =
                        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                            bytes,
                        )
                        .and_then(|b| b.build())
                        .map_err(|e| self.err(e))?;
                    for b in reader {
                        batches.push(b.map_err(|e| self.err(e))?);
                    }
                }
                FileFormat::JsonLines => lines.extend_from_slice(&bytes),
            }
        }
        let merged_bytes = match self.format {
            FileFormat::Parquet => self.encode(&batches)?,
            FileFormat::JsonLines => lines,
        };
        let name = Path::from(format!(
            "part-{:08}-{:08}.{}",
            first.first,
            last.last,
            self.ext()
        ));
        crate::storage::put_retrying(self.store.as_ref(), &name, PutPayload::from(merged_bytes))
            .await
            .map_err(|e| self.err(e))?;
        for p in &singles {
            self.delete(&p.path).await?;
        }
        Ok(())
    }

    fn encode(&self, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let err = |e: &dyn std::fmt::Display| {
            Error::option(format!("sink {}", self.location), e.to_string())
        };
        match self.format {
            FileFormat::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let mut w = ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), Some(props))
                    .map_err(|e| err(&e))?;
                for b in batches {
                    w.write(b).map_err(|e| err(&e))?;
                }
                w.into_inner().map_err(|e| err(&e))
            }
            FileFormat::JsonLines => {
                super::json_lines(&batches.iter().collect::<Vec<_>>()).map_err(|e| err(&e))
            }
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        if !self.replace {
            self.roll_over(batch_id).await?;
        }
        if batches.iter().any(|b| b.num_rows() > 0) {
            let bytes = self.encode(batches)?;
            let path = Path::from(format!("part-{batch_id:08}.{}", self.ext()));
            crate::storage::put_retrying(self.store.as_ref(), &path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.err(e))?;
        }
        if self.replace {
            // After the new result is written (an empty result: no file at all).
            self.delete_before(batch_id).await?;
        }
        Ok(())
    }
}

/// Deletes what a killed run left half-written in a local sink directory: the object
/// store writes `part-….jsonl#N` aside and renames it when complete, so such a file is
/// never a result (its batch is replayed and written again). Object stores proper write
/// atomically and leave nothing.
fn remove_staged(location: &str) {
    if location.contains("://") && !location.starts_with("file://") {
        return;
    }
    let dir = location.trim_start_matches("file://");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let staged = name.starts_with("part-")
            && name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if staged {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_sink_removes_files_a_killed_run_left_half_written() {
        let dir = std::env::temp_dir().join(format!("sluice-staged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["part-00000001.jsonl", "part-00000002.jsonl#1", "notes#1"] {
            std::fs::write(dir.join(name), "{}").unwrap();
        }
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        FileSink::open(
            dir.to_str().unwrap(),
            FileFormat::JsonLines,
            schema,
            Rollover::default(),
        )
        .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes#1", "part-00000001.jsonl"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
