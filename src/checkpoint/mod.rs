//! Checkpoints: the write-ahead protocol of design.md, behind `object_store`.
//!
//! ```text
//!  LOCATION/metadata.json              which query wrote this checkpoint
//!  LOCATION/offsets/<batch>.json       the batch's exact offset ranges, written BEFORE it runs
//!  LOCATION/state/<batch>.arrow        state snapshot after it (DataFusion's Partial schema, Arrow IPC)
//!  LOCATION/commits/<batch>.json       the manifest, written LAST: next offsets, watermark, state file
//! ```
//! A batch is committed when its manifest exists and parses and the state file it names
//! reads completely. Recovery takes the newest committed batch (warning about and
//! skipping a torn manifest or a truncated snapshot), restores its state, and replays
//! a batch whose offsets were logged but never committed with exactly those offsets.
//! Sinks name their output after the batch id, so a replay overwrites instead of
//! duplicating. Only the last `keep` batches are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which query wrote a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Format version of the checkpoint.
    pub version: u32,
    /// Fingerprint of the query text, source schema and output mode.
    pub query: String,
    /// The query text, for the error message.
    pub sql: String,
}

/// `(partition, start, end)` ranges of one source table.
pub type Ranges = Vec<(usize, i64, i64)>;

/// The offsets of one batch, logged before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetLog {
    /// The batch id.
    pub batch_id: u64,
    /// Checkpoints written before queries read several tables: the one source's
    /// ranges. Read, never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Ranges,
    /// `(partition, start, end)` read by the batch, per source table.
    #[serde(default)]
    pub tables: BTreeMap<String, Ranges>,
    /// True for the batch that closes every window at the end of a bounded run.
    #[serde(default)]
    pub close_all: bool,
}

/// A committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The batch id.
    pub batch_id: u64,
    /// Checkpoints written before queries read several tables: the one source's next
    /// offsets. Read, never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_offsets: Vec<i64>,
    /// The next offset to read in each partition, per source table.
    #[serde(default)]
    pub offsets: BTreeMap<String, Vec<i64>>,
    /// Watermark after the batch (i64::MIN when none).
    pub watermark: i64,
    /// Largest event time seen.
    pub max_event: i64,
    /// Windows starting at or before this were emitted (append mode).
    pub emitted_through: Option<i64>,
    /// State snapshot file, relative to the checkpoint root.
    pub state_file: Option<String>,
    /// Rows a query with a global `LIMIT` has emitted so far.
    #[serde(default)]
    pub limit_emitted: u64,
    /// Queries over several sources: each source's largest event time (its clock).
    #[serde(default)]
    pub source_max_event: BTreeMap<String, i64>,
}

impl OffsetLog {
    /// The ranges logged for `table`; `sole` says it is the query's only source, which
    /// an older checkpoint's unnamed ranges belong to.
    pub fn ranges_of(&self, table: &str, sole: bool) -> Option<&Ranges> {
        match self.tables.get(table) {
            Some(r) => Some(r),
            None if sole && self.tables.is_empty() => Some(&self.ranges),
            None => None,
        }
    }
}

impl Commit {
    /// The next offsets committed for `table`; `sole` as in [`OffsetLog::ranges_of`].
    pub fn offsets_of(&self, table: &str, sole: bool) -> Option<&Vec<i64>> {
        match self.offsets.get(table) {
            Some(o) => Some(o),
            None if sole && self.offsets.is_empty() => Some(&self.next_offsets),
            None => None,
        }
    }
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The newest valid commit.
    pub commit: Option<Commit>,
    /// Its state snapshot.
    pub state: Vec<RecordBatch>,
    /// A batch logged after it but not committed: replay it first, with these offsets.
    pub pending: Option<OffsetLog>,
    /// Problems skipped on the way (torn manifests, truncated snapshots).
    pub warnings: Vec<String>,
}

/// A checkpoint location.
pub struct Checkpoint {
    store: Arc<dyn ObjectStore>,
    keep: u64,
    location: String,
}

fn name(dir: &str, batch_id: u64, ext: &str) -> Path {
    Path::from(format!("{dir}/{batch_id:020}.{ext}"))
}

fn ckpt_err(location: &str, what: impl std::fmt::Display) -> Error {
    Error::option(format!("checkpoint {location}"), what.to_string())
}

impl Checkpoint {
    /// Opens (creating) a checkpoint at a local directory or an object-store URL
    /// (see `crate::storage`).
    pub fn open(location: &str, keep: u64) -> Result<Self> {
        Ok(Self {
            store: crate::storage::open(location, "checkpoint")?,
            keep: keep.max(2),
            location: location.to_string(),
        })
    }

    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        // A put is atomic: local files are written aside and renamed; object stores
        // make an object visible only when it is complete.
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| ckpt_err(&self.location, e))
    }

    async fn get(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| ckpt_err(&self.location, e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ckpt_err(&self.location, e)),
        }
    }

    async fn ids(&self, dir: &str) -> Result<Vec<u64>> {
        let prefix = Path::from(dir);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| ckpt_err(&self.location, e))?;
        let mut ids: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.split('.').next()?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Writes `meta` on first use; afterwards refuses a different query unless `force`.
    /// Returns a warning when `force` overrode a mismatch.
    pub async fn check_metadata(&self, meta: &Metadata, force: bool) -> Result<Option<String>> {
        let path = Path::from("metadata.json");
        if let Some(bytes) = self.get(&path).await? {
            let old: Metadata = serde_json::from_slice(&bytes).map_err(|e| {
                ckpt_err(&self.location, format!("metadata.json is unreadable: {e}"))
            })?;
            if old.query != meta.query {
                let msg = format!(
                    "checkpoint {} was written by a different query or schema:\n  {}\nthis run is:\n  {}",
                    self.location,
                    old.sql.trim(),
                    meta.sql.trim()
                );
                if !force {
                    return Err(ckpt_err(
                        &self.location,
                        format!("{msg}\nuse a new checkpoint location, or --force to reuse it (its state may not fit this query)"),
                    ));
                }
                self.put(&path, serde_json::to_vec_pretty(meta).unwrap_or_default())
                    .await?;
                return Ok(Some(format!("--force: reusing {msg}")));
            }
            return Ok(None);
        }
        self.put(&path, serde_json::to_vec_pretty(meta).unwrap_or_default())
            .await?;
        Ok(None)
    }

    /// Logs a batch's offsets before it runs.
    pub async fn log_offsets(&self, log: &OffsetLog) -> Result<()> {
        let bytes = serde_json::to_vec(log).map_err(|e| ckpt_err(&self.location, e))?;
        self.put(&name("offsets", log.batch_id, "json"), bytes)
            .await
    }

    /// Writes the state snapshot, then the manifest that commits the batch, then drops
    /// batches older than the last `keep`.
    pub async fn commit(
        &self,
        mut commit: Commit,
        schema: Option<&SchemaRef>,
        state: &[RecordBatch],
    ) -> Result<()> {
        if let Some(schema) = schema {
            let mut buf = Vec::new();
            {
                let mut w = StreamWriter::try_new(&mut buf, schema)
                    .map_err(|e| ckpt_err(&self.location, e))?;
                for b in state {
                    w.write(b).map_err(|e| ckpt_err(&self.location, e))?;
                }
                w.finish().map_err(|e| ckpt_err(&self.location, e))?;
            }
            let path = name("state", commit.batch_id, "arrow");
            self.put(&path, buf).await?;
            commit.state_file = Some(path.to_string());
        }
        let bytes = serde_json::to_vec(&commit).map_err(|e| ckpt_err(&self.location, e))?;
        self.put(&name("commits", commit.batch_id, "json"), bytes)
            .await?;
        self.housekeeping(commit.batch_id).await
    }

    async fn housekeeping(&self, newest: u64) -> Result<()> {
        let Some(oldest_kept) = newest.checked_sub(self.keep - 1) else {
            return Ok(());
        };
        for (dir, ext) in [("commits", "json"), ("state", "arrow"), ("offsets", "json")] {
            for id in self
                .ids(dir)
                .await?
                .into_iter()
                .filter(|id| *id < oldest_kept)
            {
                let _ = self.store.delete(&name(dir, id, ext)).await;
            }
        }
        Ok(())
    }

    /// The newest committed batch with its state, and a logged batch to replay.
    pub async fn recover(&self) -> Result<Recovered> {
        let mut warnings = Vec::new();
        let mut found = None;
        for id in self.ids("commits").await?.into_iter().rev() {
            match self.read_commit(id).await {
                Ok((c, state)) => {
                    found = Some((c, state));
                    break;
                }
                Err(why) => warnings.push(format!(
                    "checkpoint {}: skipping batch {id}: {why}",
                    self.location
                )),
            }
        }
        let next = found.as_ref().map(|(c, _)| c.batch_id + 1).unwrap_or(0);
        let pending = match self.get(&name("offsets", next, "json")).await? {
            Some(bytes) => match serde_json::from_slice::<OffsetLog>(&bytes) {
                Ok(log) => Some(log),
                Err(e) => {
                    warnings.push(format!("checkpoint {}: offset log of batch {next} is torn ({e}); it is planned again", self.location));
                    None
                }
            },
            None => None,
        };
        let (commit, state) = match found {
            Some((c, s)) => (Some(c), s),
            None => (None, Vec::new()),
        };
        Ok(Recovered {
            commit,
            state,
            pending,
            warnings,
        })
    }

    async fn read_commit(
        &self,
        id: u64,
    ) -> std::result::Result<(Commit, Vec<RecordBatch>), String> {
        let bytes = self
            .get(&name("commits", id, "json"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("manifest vanished")?;
        let commit: Commit =
            serde_json::from_slice(&bytes).map_err(|e| format!("torn manifest ({e})"))?;
        if commit.batch_id != id {
            return Err(format!("manifest names batch {}", commit.batch_id));
        }
        let mut state = Vec::new();
        if let Some(file) = &commit.state_file {
            let bytes = self
                .get(&Path::from(file.as_str()))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("state snapshot {file} is missing"))?;
            let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
                .map_err(|e| format!("state snapshot {file} is unreadable ({e})"))?;
            for b in reader {
                state.push(b.map_err(|e| format!("state snapshot {file} is truncated ({e})"))?);
            }
        }
        Ok((commit, state))
    }
}

/// A stable 64-bit FNV-1a fingerprint, as hex (stable across builds, unlike std's hasher).
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
