//! Handing freed heap memory back to the system.
//!
//! Start-up and reloads parse whole files and queue a message per namespace; at 10,000
//! namespaces that is tens of megabytes freed a moment later, which glibc keeps mapped, so the
//! resident size would stay at the start-up peak for the life of the process.

/// Returns free heap pages to the system (glibc's `malloc_trim`); a no-op elsewhere.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes the
    // allocator's own locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When to rebuild a map keyed by name that gains its names one at a time, in name order, as
/// namespaces start: a `BTreeMap` leaves each node such inserts split half empty (2.4 MB at
/// 100,000 namespaces), while one collected in order has full nodes. Rebuilt once the names
/// added since the last rebuild are a quarter of the map, it costs a pass over the map per
/// quarter of its names added.
#[derive(Debug, Default)]
pub(crate) struct Packing {
    added: usize,
}

impl Packing {
    /// Fewer names added than this never rebuild a map: not worth a pass.
    const AT_LEAST: usize = 1_024;

    /// A name was added to the map.
    pub(crate) fn added(&mut self) {
        self.added = self.added.saturating_add(1);
    }

    /// Rebuilds `map` packed if enough names were added since the last time; returns whether.
    pub(crate) fn pack<K: Ord, V>(&mut self, map: &mut std::collections::BTreeMap<K, V>) -> bool {
        if self.added < Self::AT_LEAST || self.added.saturating_mul(4) < map.len() {
            return false;
        }
        *map = std::mem::take(map).into_iter().collect();
        self.added = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Packing;

    #[test]
    fn a_map_is_rebuilt_whole_once_a_quarter_of_it_was_added_and_not_before() {
        let mut map = BTreeMap::new();
        let mut packing = Packing::default();
        for i in 0..1_000 {
            map.insert(i, i * 2);
            packing.added();
        }
        assert!(!packing.pack(&mut map), "too few added to be worth a pass");
        for i in 1_000..4_000 {
            map.insert(i, i * 2);
            packing.added();
        }
        let before = map.clone();
        assert!(packing.pack(&mut map));
        assert_eq!(map, before, "the same entries");
        assert!(!packing.pack(&mut map), "nothing added since");
    }
}
