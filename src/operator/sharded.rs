//! Keyed operators in parallel: n copies of one operator, each owning a range of the
//! key groups (design.md: "Threads own ranges of key groups"), fed the rows whose key
//! falls in its range and run on their own threads.
//!
//! ```text
//!  input rows ─► key group of each row ─► shard s owns [s·K/n, (s+1)·K/n) ─► shard 0 … n-1
//!                                                                              │ (threads)
//!  output: shard 0's rows, then shard 1's, …  ◄────────────────────────────────┘
//! ```
//! A checkpoint holds every shard's rows in one file; a restore routes them back by
//! the key group of each state row, so the shard count may change between runs.

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion::error::{DataFusionError, Result};

use super::{BatchContext, Inputs, Operator, Snapshot};
use crate::checkpoint::{Commit, WriteKind};
use crate::metrics::BatchProgress;

/// An operator whose state is split by a key: it says the key group of each input row
/// and of each row of its own checkpoint.
pub trait Keyed: Operator {
    /// The key group of each row of a batch of input `input`.
    fn input_groups(&self, input: usize, b: &RecordBatch) -> Result<Vec<u64>>;
    /// The key group of each row of a snapshot it wrote.
    fn state_groups(&self, b: &RecordBatch) -> Result<Vec<u64>>;
}

/// `n` copies of a keyed operator, one per range of key groups.
pub struct Sharded<T> {
    shards: Vec<T>,
}

impl<T: Keyed> Sharded<T> {
    /// Shards made by `make` (at least one).
    pub fn new(n: usize, make: impl Fn() -> Result<T>) -> Result<Self> {
        let n = n.clamp(1, crate::state::KEY_GROUPS as usize);
        Ok(Self {
            shards: (0..n).map(|_| make()).collect::<Result<_>>()?,
        })
    }

    /// `batches` split by shard, by the key group `groups` gives each row: per shard,
    /// each batch with the rows it owns (`None`: all of them), still to be taken.
    fn route(
        &self,
        batches: &[RecordBatch],
        groups: impl Fn(&T, &RecordBatch) -> Result<Vec<u64>>,
    ) -> Result<Vec<Vec<Routed>>> {
        let n = self.shards.len();
        let mut out: Vec<Vec<Routed>> = (0..n).map(|_| Vec::new()).collect();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            if n == 1 {
                out[0].push((b.clone(), None));
                continue;
            }
            let mut rows: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
            for (r, kg) in groups(&self.shards[0], b)?.into_iter().enumerate() {
                rows[crate::state::shard_of_group(kg, n)].push(r as u32);
            }
            for (s, rows) in rows.into_iter().enumerate() {
                if !rows.is_empty() {
                    out[s].push((b.clone(), Some(rows)));
                }
            }
        }
        Ok(out)
    }

    /// [`Sharded::route`], with each shard's rows taken.
    fn route_taken(
        &self,
        batches: &[RecordBatch],
        groups: impl Fn(&T, &RecordBatch) -> Result<Vec<u64>>,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        self.route(batches, groups)?
            .into_iter()
            .map(|shard| shard.into_iter().map(taken).collect())
            .collect()
    }
}

/// A batch and the rows of it a shard owns (`None`: all).
type Routed = (RecordBatch, Option<Vec<u32>>);

/// A shard's rows of a routed batch, as a batch of their own.
fn taken((b, rows): Routed) -> Result<RecordBatch> {
    match rows {
        None => Ok(b),
        Some(rows) => Ok(take_record_batch(&b, &UInt32Array::from(rows))?),
    }
}

impl<T: Keyed> Operator for Sharded<T> {
    fn process(&mut self, inputs: Inputs, ctx: &mut BatchContext) -> Result<Vec<RecordBatch>> {
        // Per shard, its rows of each input (taken on the shard's thread).
        let mut routed: Vec<Vec<Vec<Routed>>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        for (i, input) in inputs.iter().enumerate() {
            let split = self.route(input, |s, b| s.input_groups(i, b))?;
            for (shard, rows) in routed.iter_mut().zip(split) {
                shard.push(rows);
            }
        }
        let (close_all, now_ms) = (ctx.close_all, ctx.now_ms);
        let watermarks = &ctx.watermarks;
        let run = |shard: &mut T, routed: Vec<Vec<Routed>>| {
            let batches = routed
                .into_iter()
                .map(|input| input.into_iter().map(taken).collect::<Result<Vec<_>>>())
                .collect::<Result<Inputs>>()?;
            let mut progress = BatchProgress::default();
            let mut c = BatchContext::new(close_all, &mut progress, now_ms, watermarks.clone());
            let out = shard.process(batches, &mut c);
            out.map(|o| (o, c.tally()))
        };
        type Counted = (Vec<RecordBatch>, super::Tally);
        let results: Vec<Result<Counted>> = match self.shards.as_mut_slice() {
            [one] => vec![run(one, routed.into_iter().next().unwrap_or_default())],
            shards => std::thread::scope(|scope| {
                let handles: Vec<_> = shards
                    .iter_mut()
                    .zip(routed)
                    .map(|(shard, batches)| scope.spawn(move || run(shard, batches)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(DataFusionError::Execution(
                                "an operator shard panicked".into(),
                            ))
                        })
                    })
                    .collect()
            }),
        };
        let mut out = Vec::new();
        for r in results {
            let (rows, tally) = r?;
            out.extend(rows);
            ctx.add(tally);
        }
        Ok(out)
    }

    fn snapshot(&mut self, kind: WriteKind) -> Result<Snapshot> {
        let mut all: Option<Snapshot> = None;
        for shard in &mut self.shards {
            let s = shard.snapshot(kind)?;
            match all.as_mut() {
                None => all = Some(s),
                Some(a) => {
                    a.rows.extend(s.rows);
                    a.full &= s.full;
                }
            }
        }
        all.ok_or_else(|| DataFusionError::Internal("an operator without shards".into()))
    }

    fn state_rows(&self) -> u64 {
        self.shards.iter().map(Operator::state_rows).sum()
    }

    fn restore(
        &mut self,
        full: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        commit: &Commit,
    ) -> Result<()> {
        let groups = |s: &T, b: &RecordBatch| s.state_groups(b);
        let full = self.route_taken(full, groups)?;
        let deltas = deltas
            .iter()
            .map(|d| self.route_taken(d, groups))
            .collect::<Result<Vec<_>>>()?;
        for (i, (shard, full)) in self.shards.iter_mut().zip(full).enumerate() {
            let own: Vec<Vec<RecordBatch>> = deltas.iter().map(|d| d[i].clone()).collect();
            shard.restore(&full, &own, commit)?;
        }
        Ok(())
    }

    fn describe(&self, p: &mut BatchProgress) {
        self.shards.iter().for_each(|s| s.describe(p));
    }
}
