//! Checkpoints: the write-ahead protocol of design.md, behind `object_store`.
//!
//! ```text
//!  LOCATION/metadata.json              which query wrote this checkpoint
//!  LOCATION/offsets/<batch>.json       the batch's exact offset ranges, written BEFORE it runs
//!  LOCATION/state/<batch>.arrow        full state snapshot after it (DataFusion's Partial schema, Arrow IPC)
//!  LOCATION/state/<batch>.delta.arrow  or only the groups the batch changed (same schema)
//!  LOCATION/commits/<batch>.json       the manifest, written LAST: next offsets, watermark, state files
//! ```
//! Incremental checkpoints: the first commit writes the state whole; after that each
//! batch writes a delta file holding each changed group's whole state, plus one slice
//! of the key groups (all their groups) — a rebase spread over a cycle of batches, each
//! slice sized from the batch before so it holds about half as many groups as changed.
//! Once a cycle has written every key group,
//! every file from before it is superseded and leaves the chain. A manifest names the
//! files of its chain; recovery applies them in order (a later row for a group
//! replaces the earlier). So a batch writes about twice what it changed, never the
//! whole state at once, and a recovery reads about twice the state.
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
    /// Full state snapshot file, relative to the checkpoint root.
    pub state_file: Option<String>,
    /// Deltas written after `state_file`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_deltas: Vec<String>,
    /// The state files of the second and later stateful operators (the first one's are
    /// `state_file` and `state_deltas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_state: Vec<StateFiles>,
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

/// One operator's state files in a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFiles {
    /// Its full snapshot.
    pub file: Option<String>,
    /// The deltas after it, oldest first.
    #[serde(default)]
    pub deltas: Vec<String>,
}

impl Commit {
    /// Each operator's full snapshot and deltas, first operator first.
    pub fn state_files(&self) -> Vec<StateFiles> {
        let first = StateFiles {
            file: self.state_file.clone(),
            deltas: self.state_deltas.clone(),
        };
        std::iter::once(first)
            .chain(self.more_state.iter().cloned())
            .collect()
    }
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The newest valid commit.
    pub commit: Option<Commit>,
    /// Each operator's full snapshot and the deltas after it, oldest first (apply each
    /// over the one before).
    pub state: Vec<(Vec<RecordBatch>, Vec<Vec<RecordBatch>>)>,
    /// A batch logged after it but not committed: replay it first, with these offsets.
    pub pending: Option<OffsetLog>,
    /// Problems skipped on the way (torn manifests, truncated snapshots).
    pub warnings: Vec<String>,
}

/// What a batch's commit writes of one operator's state.
pub enum StateWrite<'a> {
    /// The whole state.
    Full(&'a SchemaRef, &'a [RecordBatch]),
    /// The groups changed since the previous commit, and those of the key-group slice
    /// [`Checkpoint::plan_write`] asked for.
    Delta(&'a SchemaRef, &'a [RecordBatch], Option<Slice>),
}

/// A slice of a rebase cycle: the key groups `from..to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Its first key group.
    pub from: u32,
    /// One past its last key group.
    pub to: u32,
}

impl Slice {
    /// Whether key group `kg` is in the slice.
    pub fn covers(&self, kg: u64) -> bool {
        (u64::from(self.from)..u64::from(self.to)).contains(&kg)
    }
}

/// What an operator should write for the next commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Its whole state.
    Full,
    /// What changed, and (when given) every group of a key-group slice.
    Delta(Option<Slice>),
}

impl WriteKind {
    /// Whether the whole state is asked for, and the slice to add to a delta.
    pub fn parts(self) -> (bool, Option<Slice>) {
        match self {
            WriteKind::Full => (true, None),
            WriteKind::Delta(slice) => (false, slice),
        }
    }
}

/// One operator's files the next commit builds on: a full snapshot (until a rebase
/// cycle supersedes it) and the deltas after it, and the rebase cycle running.
#[derive(Debug, Clone, Default)]
struct Chain {
    full: Option<String>,
    deltas: Vec<String>,
    /// Rows the newest delta wrote for the groups that changed, without its slice's
    /// (sizes the next cycle's slices).
    last_delta_rows: u64,
    /// Rows the slice planned last is expected to hold (its share of the state).
    slice_rows: u64,
    /// Whether a rebase cycle is running, and the key group its next slice starts at.
    cycling: bool,
    next_group: u32,
    /// Index in `deltas` of the running cycle's first file.
    cycle_start: usize,
}

/// Every operator's chain, and the oldest full snapshot each commit on disk builds on
/// (for housekeeping).
#[derive(Debug, Clone, Default)]
struct Chains {
    operators: Vec<Chain>,
    bases: BTreeMap<u64, u64>,
}

/// A checkpoint location.
pub struct Checkpoint {
    store: Arc<dyn ObjectStore>,
    keep: u64,
    location: String,
    chain: std::sync::Mutex<Chains>,
}

/// The oldest state file (batch id) a commit builds on.
fn oldest_base(commit: &Commit) -> Option<u64> {
    commit
        .state_files()
        .iter()
        .filter_map(|f| f.file.as_ref().or(f.deltas.first()))
        .filter_map(|f| file_batch(f))
        .min()
}

/// The batch id in a state file's name.
fn file_batch(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.split('.').next()?.parse().ok()
}

fn name(dir: &str, batch_id: u64, ext: &str) -> Path {
    Path::from(format!("{dir}/{batch_id:020}.{ext}"))
}

fn ckpt_err(location: &str, what: impl std::fmt::Display) -> Error {
    Error::storage(format!("checkpoint {location}"), what)
}

impl Checkpoint {
    /// Opens (creating) a checkpoint at a local directory or an object-store URL
    /// (see `crate::storage`).
    pub fn open(location: &str, keep: u64) -> Result<Self> {
        Ok(Self {
            store: crate::storage::open(location, "checkpoint")?,
            keep: keep.max(2),
            location: location.to_string(),
            chain: Default::default(),
        })
    }

    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        // A put is atomic: local files are written aside and renamed; object stores
        // make an object visible only when it is complete.
        crate::storage::put_retrying(self.store.as_ref(), path, PutPayload::from(bytes))
            .await
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

    /// What operator `op` (holding `state_rows` rows) writes next: its whole state
    /// when the chain is empty, else a delta with the next slice of the rebase cycle
    /// (starting one when none runs), sized so it holds about half as many rows as the
    /// last delta changed: a batch writes ~1.5× what it changed, at any state size.
    pub fn plan_write(&self, op: usize, state_rows: u64) -> WriteKind {
        let Ok(mut chains) = self.chain.lock() else {
            return WriteKind::Full;
        };
        if chains.operators.len() <= op {
            chains.operators.resize(op + 1, Chain::default());
        }
        let c = &mut chains.operators[op];
        if c.full.is_none() && c.deltas.is_empty() {
            return WriteKind::Full;
        }
        if !c.cycling {
            c.cycling = true;
            c.next_group = 0;
            c.cycle_start = c.deltas.len();
        }
        let groups = crate::state::KEY_GROUPS;
        let n = match c.last_delta_rows {
            // Before any delta was seen (a fresh chain): a sixteenth.
            0 => groups / 16,
            changed => (groups * changed).div_ceil(2 * state_rows.max(1)),
        };
        let from = c.next_group;
        let to = (u64::from(from) + n.clamp(1, groups)).min(groups) as u32;
        c.slice_rows = state_rows * u64::from(to - from) / groups;
        WriteKind::Delta(Some(Slice { from, to }))
    }

    /// Writes each operator's state (a full snapshot or a delta), then the manifest
    /// that commits the batch, then drops batches older than the last `keep` and the
    /// state files no kept batch needs. Returns the state bytes written and whether all
    /// of it was full snapshots.
    pub async fn commit(
        &self,
        mut commit: Commit,
        states: &[StateWrite<'_>],
    ) -> Result<(u64, bool)> {
        let mut chains = self.chain.lock().map(|c| c.clone()).unwrap_or_default();
        chains.operators.resize(states.len(), Chain::default());
        let (mut written, mut all_full) = (0, true);
        for (op, state) in states.iter().enumerate() {
            let (schema, rows, full, slice) = match state {
                StateWrite::Full(s, r) => (s, r, true, None),
                StateWrite::Delta(s, r, slice) => (s, r, false, *slice),
            };
            all_full &= full;
            let mut buf = Vec::new();
            {
                let mut w = StreamWriter::try_new(&mut buf, schema)
                    .map_err(|e| ckpt_err(&self.location, e))?;
                for b in rows.iter() {
                    w.write(b).map_err(|e| ckpt_err(&self.location, e))?;
                }
                w.finish().map_err(|e| ckpt_err(&self.location, e))?;
            }
            let n: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();
            let tag = match op {
                0 => String::new(),
                n => format!("op{n}."),
            };
            let ext = if full {
                format!("{tag}arrow")
            } else {
                format!("{tag}delta.arrow")
            };
            let path = name("state", commit.batch_id, &ext);
            written += buf.len() as u64;
            self.put(&path, buf).await?;
            let chain = &mut chains.operators[op];
            if full {
                *chain = Chain {
                    full: Some(path.to_string()),
                    ..Chain::default()
                };
                continue;
            }
            chain.deltas.push(path.to_string());
            chain.last_delta_rows = n.saturating_sub(chain.slice_rows).max(1);
            if let Some(slice) = slice.filter(|s| chain.cycling && s.from == chain.next_group) {
                chain.next_group = slice.to;
                if u64::from(slice.to) >= crate::state::KEY_GROUPS {
                    // Every key group was rewritten since the cycle began: what came
                    // before it is superseded.
                    chain.full = None;
                    chain.deltas.drain(..chain.cycle_start);
                    chain.cycling = false;
                }
            }
        }
        let mut files = chains.operators.iter().map(|c| StateFiles {
            file: c.full.clone(),
            deltas: c.deltas.clone(),
        });
        if let Some(first) = files.next() {
            commit.state_file = first.file;
            commit.state_deltas = first.deltas;
        }
        commit.more_state = files.collect();
        let bytes = serde_json::to_vec(&commit).map_err(|e| ckpt_err(&self.location, e))?;
        self.put(&name("commits", commit.batch_id, "json"), bytes)
            .await?;
        if let Some(base) = oldest_base(&commit) {
            chains.bases.insert(commit.batch_id, base);
        }
        if let Ok(mut c) = self.chain.lock() {
            *c = chains;
        }
        self.housekeeping(commit.batch_id).await?;
        Ok((written, all_full))
    }

    async fn housekeeping(&self, newest: u64) -> Result<()> {
        let Some(oldest_kept) = newest.checked_sub(self.keep - 1) else {
            return Ok(());
        };
        for (dir, ext) in [("commits", "json"), ("offsets", "json")] {
            for id in self
                .ids(dir)
                .await?
                .into_iter()
                .filter(|id| *id < oldest_kept)
            {
                let _ = self.store.delete(&name(dir, id, ext)).await;
            }
        }
        // State files older than the oldest full snapshot a kept commit builds on.
        let needed = {
            let mut c = match self.chain.lock() {
                Ok(c) => c,
                Err(_) => return Ok(()),
            };
            c.bases = c.bases.split_off(&oldest_kept);
            c.bases.values().min().copied().unwrap_or(oldest_kept)
        };
        let prefix = Path::from("state");
        let files: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| ckpt_err(&self.location, e))?;
        for f in files {
            if file_batch(f.location.as_ref()).is_some_and(|id| id < needed.min(oldest_kept)) {
                let _ = self.store.delete(&f.location).await;
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
            None => (None, Default::default()),
        };
        self.remember_chain(commit.as_ref(), &state).await;
        Ok(Recovered {
            commit,
            state,
            pending,
            warnings,
        })
    }

    /// The chains the next commit continues, and the full snapshots each commit on
    /// disk builds on (commits it cannot read are left to age out).
    async fn remember_chain(
        &self,
        commit: Option<&Commit>,
        state: &[(Vec<RecordBatch>, Vec<Vec<RecordBatch>>)],
    ) {
        let rows = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let mut chains = Chains::default();
        if let Some(c) = commit {
            for (files, (_, deltas)) in c.state_files().into_iter().zip(state) {
                chains.operators.push(Chain {
                    full: files.file,
                    deltas: files.deltas,
                    last_delta_rows: deltas.last().map_or(0, |d| rows(d)),
                    ..Chain::default()
                });
            }
        }
        for id in self.ids("commits").await.unwrap_or_default() {
            let Ok(Some(bytes)) = self.get(&name("commits", id, "json")).await else {
                continue;
            };
            if let Some(base) = serde_json::from_slice::<Commit>(&bytes)
                .ok()
                .as_ref()
                .and_then(oldest_base)
            {
                chains.bases.insert(id, base);
            }
        }
        if let Ok(mut c) = self.chain.lock() {
            *c = chains;
        }
    }

    async fn read_state(&self, file: &str) -> std::result::Result<Vec<RecordBatch>, String> {
        let bytes = self
            .get(&Path::from(file))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("state file {file} is missing"))?;
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| format!("state file {file} is unreadable ({e})"))?;
        let mut state = Vec::new();
        for b in reader {
            state.push(b.map_err(|e| format!("state file {file} is truncated ({e})"))?);
        }
        Ok(state)
    }

    async fn read_commit(
        &self,
        id: u64,
    ) -> std::result::Result<(Commit, Vec<(Vec<RecordBatch>, Vec<Vec<RecordBatch>>)>), String> {
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
        for files in commit.state_files() {
            let full = match &files.file {
                Some(file) => self.read_state(file).await?,
                None => Vec::new(),
            };
            let mut deltas = Vec::with_capacity(files.deltas.len());
            for file in &files.deltas {
                deltas.push(self.read_state(file).await?);
            }
            state.push((full, deltas));
        }
        // A stateless query's manifest names no state file at all.
        let stateless = commit.state_file.is_none()
            && commit.state_deltas.is_empty()
            && commit.more_state.is_empty();
        if stateless {
            state.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn commit(id: u64) -> Commit {
        Commit {
            batch_id: id,
            next_offsets: Vec::new(),
            offsets: BTreeMap::new(),
            watermark: i64::MIN,
            max_event: i64::MIN,
            emitted_through: None,
            state_file: None,
            state_deltas: Vec::new(),
            more_state: Vec::new(),
            limit_emitted: 0,
            source_max_event: BTreeMap::new(),
        }
    }

    fn rows(schema: &SchemaRef, values: &[i64]) -> Vec<RecordBatch> {
        let col = Arc::new(Int64Array::from(values.to_vec()));
        vec![RecordBatch::try_new(Arc::clone(schema), vec![col]).unwrap()]
    }

    /// The value of each delta's first row, in chain order.
    fn firsts(deltas: &[Vec<RecordBatch>]) -> Vec<i64> {
        deltas
            .iter()
            .map(|d| {
                let col = d[0].column(0).as_any().downcast_ref::<Int64Array>();
                col.unwrap().value(0)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_rebase_cycle_of_slices_supersedes_the_full_snapshot() {
        let dir = std::env::temp_dir().join(format!("sluice-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let loc = dir.display().to_string();
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let c = Checkpoint::open(&loc, 2).unwrap();
        assert_eq!(c.plan_write(0, 0), WriteKind::Full);
        let full = rows(&schema, &[1, 2, 3, 4]);
        c.commit(commit(0), &[StateWrite::Full(&schema, &full)])
            .await
            .unwrap();
        // No delta seen yet: a sixteenth of the key groups; here the test writes a
        // cycle of four quarters by hand (plan_write is checked once deltas have a size).
        assert_eq!(
            c.plan_write(0, 4),
            WriteKind::Delta(Some(Slice { from: 0, to: 8 }))
        );
        for id in 1..=4u64 {
            let from = (id as u32 - 1) * 32;
            let slice = Slice {
                from,
                to: from + 32,
            };
            let d = rows(&schema, &[id as i64, 10 * id as i64]);
            c.commit(commit(id), &[StateWrite::Delta(&schema, &d, Some(slice))])
                .await
                .unwrap();
        }
        // The cycle covered every key group: the snapshot left the chain. A new process
        // recovers the four deltas in order, and sizes the next slices from them: 2 rows
        // changed of 4 is a quarter of the key groups (half a delta's rows), then, the
        // slice's expected row taken off what a delta wrote, an eighth.
        let again = Checkpoint::open(&loc, 2).unwrap();
        let rec = again.recover().await.unwrap();
        assert_eq!(rec.commit.as_ref().map(|c| c.batch_id), Some(4));
        assert!(rec.state[0].0.is_empty());
        assert_eq!(firsts(&rec.state[0].1), [1, 2, 3, 4]);
        let mut planned = Vec::new();
        for id in 5u64..=12 {
            let WriteKind::Delta(Some(slice)) = again.plan_write(0, 4) else {
                panic!("a delta with a slice");
            };
            planned.push((slice.from, slice.to));
            let d = rows(&schema, &[id as i64, 0]);
            again
                .commit(commit(id), &[StateWrite::Delta(&schema, &d, Some(slice))])
                .await
                .unwrap();
            if slice.to == 128 {
                break;
            }
        }
        assert_eq!(planned[0], (0, 32), "2 changed rows of 4: a quarter");
        assert!(planned
            .windows(2)
            .all(|w| w[0].1 == w[1].0 && w[1].0 < w[1].1));
        assert_eq!(planned.last().map(|p| p.1), Some(128), "every key group");
        let last = 4 + planned.len() as u64;
        // The cycle's last commit but one (kept, keep = 2) still builds on batches
        // 1-4; once it ages out, only the second cycle's files and what follows are left.
        let d = rows(&schema, &[13]);
        let slice = Some(Slice { from: 0, to: 16 });
        again
            .commit(commit(last + 1), &[StateWrite::Delta(&schema, &d, slice)])
            .await
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            (5..=last + 1)
                .map(|b| format!("{b:020}.delta.arrow"))
                .collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
