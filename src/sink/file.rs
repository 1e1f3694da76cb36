//! Parquet and JSON-lines sinks on `object_store`, exactly once with checkpoints.
//!
//! Each batch with rows becomes one file named after its batch id
//! (`part-00000012.parquet`), written whole and atomically (temporary file, then
//! rename). A batch replayed after a crash has the same id and the same rows, so it
//! overwrites its file instead of adding a duplicate. Files are not rolled over across
//! batches yet: a slow stream with a short trigger writes one small file per batch.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;

use super::Sink;
use crate::error::{Error, Result};

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
}

impl FileSink {
    /// A sink writing `format` files of `schema` under local directory `path`.
    pub fn open(path: &str, format: FileFormat, schema: SchemaRef) -> Result<Self> {
        if path.contains("://") && !path.starts_with("file://") {
            return Err(Error::option(
                "sink path",
                format!("{path}: only local directories are supported yet (object-store URLs are not built in)"),
            ));
        }
        let dir = path.trim_start_matches("file://");
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the sink directory", dir, e))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::option("sink path", e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            format,
            schema,
            location: path.to_string(),
        })
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
                let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
                for b in batches {
                    w.write(b).map_err(|e| err(&e))?;
                }
                w.finish().map_err(|e| err(&e))?;
                Ok(w.into_inner())
            }
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write_batch(&mut self, batch_id: u64, batches: &[RecordBatch]) -> Result<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let ext = match self.format {
            FileFormat::Parquet => "parquet",
            FileFormat::JsonLines => "jsonl",
        };
        let bytes = self.encode(batches)?;
        let path = Path::from(format!("part-{batch_id:08}.{ext}"));
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| Error::option(format!("sink {}", self.location), e.to_string()))
    }
}
