//! State time-to-live (Flink's `table.exec.state.ttl`): a key of unwindowed state that
//! no batch has updated for the TTL is forgotten. Time is processing time: each batch's
//! wall-clock start, in epoch milliseconds.
//!
//! ```text
//!  batch at t: touch(keys merged, t) ──► buckets (t0, [k…]) (t1, [k…]) … (t, [k…])
//!  next batch at t': expired(t') pops the buckets older than t' − ttl and returns their
//!                    keys whose last touch is that bucket's (a key touched later stays)
//! ```
//! Expiring costs what expires: keys sit in the bucket of each batch that touched them,
//! and a bucket is visited once, when it falls out of the TTL.

use std::collections::VecDeque;
use std::hash::Hash;

/// Last-touch times of keys and the order they were touched in.
pub struct TouchClock<K> {
    ttl_ms: i64,
    last: hashbrown::HashMap<K, i64>,
    buckets: VecDeque<(i64, Vec<K>)>,
}

impl<K: Hash + Eq + Clone> TouchClock<K> {
    /// No keys yet; keys untouched for `ttl_ms` expire.
    pub fn new(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            last: Default::default(),
            buckets: VecDeque::new(),
        }
    }

    /// The TTL in milliseconds.
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Records that `key` was updated at `now` (times never decrease between calls,
    /// except on restore, which may set any).
    pub fn touch(&mut self, key: &K, now: i64) {
        match self.last.get_mut(key) {
            Some(t) if *t == now => return,
            Some(t) => *t = now,
            None => {
                self.last.insert(key.clone(), now);
            }
        }
        match self.buckets.back_mut() {
            Some((t, keys)) if *t == now => keys.push(key.clone()),
            _ => self.buckets.push_back((now, vec![key.clone()])),
        }
    }

    /// When `key` was last updated.
    pub fn last(&self, key: &K) -> Option<i64> {
        self.last.get(key).copied()
    }

    /// Forgets `key` (its state is gone for another reason).
    pub fn forget(&mut self, key: &K) {
        self.last.remove(key);
    }

    /// The keys not updated since `now − ttl`, forgotten here; the caller drops their
    /// state.
    pub fn expired(&mut self, now: i64) -> Vec<K> {
        let cutoff = now.saturating_sub(self.ttl_ms);
        let mut out = Vec::new();
        while self.buckets.front().is_some_and(|(t, _)| *t < cutoff) {
            let Some((t, keys)) = self.buckets.pop_front() else {
                break;
            };
            for k in keys {
                if self.last.get(&k) == Some(&t) {
                    self.last.remove(&k);
                    out.push(k);
                }
            }
        }
        out
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Bytes held, roughly (key, time and bucket entry per touch).
    pub fn size(&self, key_bytes: usize) -> usize {
        let queued: usize = self.buckets.iter().map(|(_, k)| k.len()).sum();
        self.last.len() * (key_bytes + 16) + queued * key_bytes
    }

    /// The same clock with every key renamed by `rename` (keys it maps to `None` are
    /// dropped): for a state that renumbers its keys.
    pub fn renamed<J: Hash + Eq + Clone>(&self, rename: impl Fn(&K) -> Option<J>) -> TouchClock<J> {
        let mut by_time: Vec<(i64, J)> = self
            .last
            .iter()
            .filter_map(|(k, t)| rename(k).map(|j| (*t, j)))
            .collect();
        by_time.sort_by_key(|(t, _)| *t);
        let mut clock = TouchClock::new(self.ttl_ms);
        for (t, j) in by_time {
            clock.touch(&j, t);
        }
        clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_expires_only_when_untouched_for_the_ttl() {
        let mut c = TouchClock::new(100);
        c.touch(&1u32, 1_000);
        c.touch(&2u32, 1_000);
        c.touch(&1u32, 1_050);
        assert!(
            c.expired(1_100).is_empty(),
            "nothing is older than the TTL yet"
        );
        assert_eq!(c.expired(1_101), vec![2], "key 1 was touched again at 1050");
        assert_eq!(c.expired(1_151), vec![1]);
        assert!(c.is_empty());
    }

    #[test]
    fn renaming_keeps_the_times() {
        let mut c = TouchClock::new(10);
        c.touch(&5u32, 1);
        c.touch(&7u32, 3);
        let r = c.renamed(|k| (*k == 7).then_some(0u32));
        assert_eq!(r.last(&0), Some(3));
        assert_eq!(r.len(), 1);
    }
}
