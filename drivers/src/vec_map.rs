//! A map kept as a vector sorted by key, for the context state's maps (its streams, children,
//! calls in flight, spawns asked for, waiters): a handful of entries each, keys handed out in
//! increasing order, so an insert is a push and a lookup a short binary search. It iterates in
//! key order, as the `BTreeMap`s it replaces did, at a fraction of their code (every
//! `BTreeMap<K, V>` instantiates its own ~10 KB, and a child touches all of it) and of their
//! instructions per call.

/// A map sorted by key.
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        // Keys mostly arrive in increasing order: the last place is the first one looked at.
        match self.entries.last() {
            Some((last, _)) if last < key => Err(self.entries.len()),
            _ => self.entries.binary_search_by(|(k, _)| k.cmp(key)),
        }
    }

    /// Inserts, returning the value `key` had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        Some(self.entries.remove(i).1)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let i = self.find(key).ok()?;
        Some(&self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(key).ok()?;
        Some(&mut self.entries[i].1)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// The value for `key`, inserted as `V::default()` if there was none.
    pub fn get_or_insert_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (key, V::default()));
                i
            }
        };
        &mut self.entries[i].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn it_behaves_as_a_btree_map_in_any_order_of_keys() {
        let mut ours = VecMap::new();
        let mut theirs = BTreeMap::new();
        // Increasing keys, then some lower and repeated ones, with removals between.
        let keys = [1u32, 2, 3, 7, 9, 4, 9, 0, 5, 3, 12, 11, 2];
        for (n, k) in keys.into_iter().enumerate() {
            assert_eq!(ours.insert(k, n), theirs.insert(k, n));
            if n % 3 == 2 {
                let gone = keys[n / 2];
                assert_eq!(ours.remove(&gone), theirs.remove(&gone));
            }
            assert_eq!(ours.iter().collect::<Vec<_>>(), theirs.iter().collect::<Vec<_>>());
        }
        for k in 0..14 {
            assert_eq!(ours.get(&k), theirs.get(&k));
            assert_eq!(ours.contains_key(&k), theirs.contains_key(&k));
        }
        *ours.get_or_insert_default(20) += 1;
        *theirs.entry(20).or_default() += 1;
        *ours.get_or_insert_default(20) += 1;
        *theirs.entry(20).or_default() += 1;
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
        assert_eq!(ours.values().collect::<Vec<_>>(), theirs.values().collect::<Vec<_>>());
        assert_eq!(ours.into_iter().collect::<Vec<_>>(), theirs.into_iter().collect::<Vec<_>>());
    }
}
