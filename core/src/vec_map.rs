//! A map kept as a sorted vector, for the handful of streams one context has.
//!
//! Every message looks up its stream several times on its way (the router's decoder, the host's
//! write queue, its close rule); a `BTreeMap` walk costs several times a binary search over a
//! few contiguous entries. Iteration is in key order, as a `BTreeMap`'s, so nothing that
//! iterates (and no trace) can tell the two apart.

use alloc::vec::Vec;

/// An ordered map over a sorted `Vec`: O(log n) lookups, O(n) inserts and removes, which is the
/// right trade for maps that are read on every message and changed when a stream opens or
/// closes.
#[derive(Clone, Debug)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.find(key) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// The same operations on a `VecMap` and a `BTreeMap` leave the same contents, in the same
    /// order, and return the same answers.
    #[test]
    fn it_behaves_as_a_btree_map() {
        let mut ours = VecMap::new();
        let mut theirs = BTreeMap::new();
        // A fixed pseudo-random walk of inserts, replaces and removes over a small key space.
        let mut x: u32 = 12345;
        for step in 0..2000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let key = (x >> 16) % 23;
            match (x >> 8) % 4 {
                0 | 1 => assert_eq!(ours.insert(key, step), theirs.insert(key, step)),
                2 => assert_eq!(ours.remove(&key), theirs.remove(&key)),
                _ => {
                    if let (Some(a), Some(b)) = (ours.get_mut(&key), theirs.get_mut(&key)) {
                        *a += 1;
                        *b += 1;
                    }
                }
            }
            assert_eq!(ours.get(&key), theirs.get(&key));
            assert_eq!(ours.contains_key(&key), theirs.contains_key(&key));
            assert!(ours.iter().eq(theirs.iter()));
        }
        assert!(ours.values().eq(theirs.values()));
    }
}
