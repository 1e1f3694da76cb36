//! The group keys of one state shard: each distinct key gets a dense group id, and the
//! keys of any set of ids can be read back as Arrow columns.
//!
//! ```text
//!  key columns ──RowConverter──► row bytes ──hash table (hash → id)──► group ids
//!                                    │
//!                                    └─► arena (`Rows`, indexed by id) ──► keys of ids
//! ```
//! DataFusion's `GroupValues` interns as fast but can only hand back *all* keys (or the
//! first n), so emitting the groups one batch touched would visit the whole state.
//! Here reading keys back costs what the ids asked for. A removed group leaves a hole
//! in the arena (its id is not reused; nothing compacts the arena yet).

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::error::Result;
use hashbrown::HashTable;

/// Keys → dense group ids, and back.
pub struct KeyTable {
    /// `None` for an aggregate without GROUP BY: its one group has id 0.
    converter: Option<RowConverter>,
    /// Row bytes of every id ever given out (holes included).
    rows: Rows,
    /// Hash of each id's key.
    hashes: Vec<u64>,
    /// Live ids by hash.
    table: HashTable<u32>,
    /// Whether each id is live.
    alive: Vec<bool>,
    live: usize,
    /// Ids given out, per key group (removed ones included): a checkpoint slice reads
    /// its key groups' ids without scanning the table.
    by_group: Vec<Vec<u32>>,
}

impl KeyTable {
    /// An empty table for keys of `schema` (no fields: one global group).
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let fields: Vec<SortField> = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = match fields.is_empty() {
            true => None,
            false => Some(RowConverter::new(fields)?),
        };
        let rows = match &converter {
            Some(c) => c.empty_rows(0, 0),
            None => RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Null)])?
                .empty_rows(0, 0),
        };
        Ok(Self {
            converter,
            rows,
            hashes: Vec::new(),
            table: HashTable::new(),
            alive: Vec::new(),
            live: 0,
            by_group: vec![Vec::new(); crate::state::KEY_GROUPS as usize],
        })
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no group is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// One more than the largest id given out: accumulators size their slots by it.
    pub fn capacity(&self) -> usize {
        self.alive.len()
    }

    /// Whether `id` names a live group.
    pub fn is_live(&self, id: u32) -> bool {
        self.alive.get(id as usize).copied().unwrap_or(false)
    }

    /// The live ids, ascending.
    pub fn live_ids(&self) -> Vec<u32> {
        (0..self.alive.len() as u32)
            .filter(|i| self.alive[*i as usize])
            .collect()
    }

    /// The live ids of the key groups `groups`, ascending.
    pub fn live_ids_in(&self, groups: std::ops::Range<u64>) -> Vec<u32> {
        let mut ids: Vec<u32> = groups
            .filter_map(|kg| self.by_group.get(kg as usize))
            .flatten()
            .copied()
            .filter(|id| self.is_live(*id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The hash of group `id`'s key (it decides the key group).
    pub fn hash_of(&self, id: u32) -> u64 {
        self.hashes.get(id as usize).copied().unwrap_or(0)
    }

    /// The group id of each of `rows` rows with key columns `keys` and key hashes
    /// `hashes`, new keys added. Appends to `ids`.
    pub fn intern(
        &mut self,
        keys: &[ArrayRef],
        hashes: &[u64],
        rows: usize,
        ids: &mut Vec<u32>,
    ) -> Result<()> {
        ids.clear();
        let Some(converter) = &self.converter else {
            if self.alive.is_empty() {
                self.alive.push(false);
                self.hashes.push(0);
                self.by_group[0].push(0);
            }
            if rows > 0 && !self.alive[0] {
                self.alive[0] = true;
                self.live = 1;
            }
            ids.resize(rows, 0);
            return Ok(());
        };
        let batch = converter.convert_columns(keys)?;
        for (i, hash) in hashes.iter().enumerate().take(rows) {
            let row = batch.row(i);
            let found = self
                .table
                .find(*hash, |id| self.rows.row(*id as usize) == row)
                .copied();
            let id = match found {
                Some(id) => id,
                None => {
                    let id = self.alive.len() as u32;
                    self.rows.push(row);
                    self.hashes.push(*hash);
                    self.alive.push(true);
                    self.live += 1;
                    self.by_group[crate::state::key_group(*hash) as usize].push(id);
                    let all = &self.hashes;
                    self.table.insert_unique(*hash, id, |id| all[*id as usize]);
                    id
                }
            };
            ids.push(id);
        }
        Ok(())
    }

    /// The key columns of `ids`, in that order.
    pub fn keys(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        match &self.converter {
            Some(c) => Ok(c.convert_rows(ids.iter().map(|id| self.rows.row(*id as usize)))?),
            None => Ok(Vec::new()),
        }
    }

    /// Whether the key of (removed) group `id` is live again under another id.
    pub fn key_is_live(&self, id: u32) -> bool {
        let Some(hash) = self.hashes.get(id as usize) else {
            return false;
        };
        let row = self.rows.row(id as usize);
        self.table
            .find(*hash, |i| self.rows.row(*i as usize) == row)
            .is_some()
    }

    /// Forgets group `id`: its key is no longer found; its id is not given out again.
    pub fn remove(&mut self, id: u32) {
        if !self.is_live(id) {
            return;
        }
        self.alive[id as usize] = false;
        self.live -= 1;
        let hash = self.hashes[id as usize];
        if let Ok(entry) = self.table.find_entry(hash, |i| *i == id) {
            entry.remove();
        }
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.rows.size()
            + self.hashes.capacity() * 8
            + self.table.capacity() * 4
            + self.alive.capacity()
            + self
                .by_group
                .iter()
                .map(|g| g.capacity() * 4)
                .sum::<usize>()
            + self.converter.as_ref().map_or(0, RowConverter::size)
    }
}
