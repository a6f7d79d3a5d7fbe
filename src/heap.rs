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

/// When to rebuild a map that gains its entries one at a time (as namespaces start, in
/// name order, or as actors set wake-ups, in random order): a `BTreeMap` leaves each node
/// such inserts split half or a third empty (2.4 MB at 100,000 namespaces), while one
/// collected in order has full nodes. Rebuilt once the map has grown by a quarter since the
/// last rebuild, it costs a pass over the map per quarter of growth; entries replaced
/// without growth (a reload re-arming every actor) rebuild nothing.
#[derive(Debug, Default)]
pub(crate) struct Packing {
    /// The map's size at the last rebuild, or its smallest since.
    packed: usize,
}

impl Packing {
    /// Growth below this never rebuilds a map: not worth a pass.
    const AT_LEAST: usize = 1_024;

    /// Rebuilds `map` packed if it grew enough since the last time; returns whether.
    pub(crate) fn pack<K: Ord, V>(&mut self, map: &mut std::collections::BTreeMap<K, V>) -> bool {
        self.packed = self.packed.min(map.len());
        let grown = map.len() - self.packed;
        if grown < Self::AT_LEAST || grown.saturating_mul(4) < map.len() {
            return false;
        }
        *map = std::mem::take(map).into_iter().collect();
        self.packed = map.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Packing;

    #[test]
    fn a_map_is_rebuilt_whole_once_it_grew_by_a_quarter_and_not_for_entries_replaced() {
        let mut map = BTreeMap::new();
        let mut packing = Packing::default();
        for i in 0..1_000 {
            map.insert(i, i * 2);
        }
        assert!(!packing.pack(&mut map), "too small a growth to be worth a pass");
        for i in 1_000..4_000 {
            map.insert(i, i * 2);
        }
        let before = map.clone();
        assert!(packing.pack(&mut map));
        assert_eq!(map, before, "the same entries");
        // Replaced, not grown: nothing to gain.
        for i in 0..2_000 {
            map.remove(&i);
            map.insert(i + 10_000, 0);
        }
        assert!(!packing.pack(&mut map), "no growth since");
    }
}
