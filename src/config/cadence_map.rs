//! A map keyed by cadence kind, stored inline.
//!
//! Every namespace keeps several per-cadence maps (config, state, schedule slots, health).
//! A `BTreeMap` allocates a leaf node sized for eleven entries even for one, which at
//! 10,000 namespaces cost hundreds of megabytes; three inline slots cost nothing extra. It
//! iterates, serialises and compares like the `BTreeMap<CadenceKind, T>` it replaces, so the
//! state file and `/health` keep their format.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::CadenceKind;

/// A map from cadence kind to `T`, in the order fast, strong, cold.
#[derive(Clone, PartialEq, Eq)]
pub struct CadenceMap<T>([Option<T>; 3]);

impl<T> Default for CadenceMap<T> {
    fn default() -> Self {
        Self([None, None, None])
    }
}

impl<T> CadenceMap<T> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `kind`.
    pub fn get(&self, kind: &CadenceKind) -> Option<&T> {
        self.0[kind.index()].as_ref()
    }

    /// The value for `kind`, mutably.
    pub fn get_mut(&mut self, kind: &CadenceKind) -> Option<&mut T> {
        self.0[kind.index()].as_mut()
    }

    /// Sets the value for `kind`; returns the one it replaced.
    pub fn insert(&mut self, kind: CadenceKind, value: T) -> Option<T> {
        self.0[kind.index()].replace(value)
    }

    /// Takes the value for `kind` out.
    pub fn remove(&mut self, kind: &CadenceKind) -> Option<T> {
        self.0[kind.index()].take()
    }

    /// Whether `kind` has a value.
    pub fn contains_key(&self, kind: &CadenceKind) -> bool {
        self.0[kind.index()].is_some()
    }

    /// How many kinds have a value.
    pub fn len(&self) -> usize {
        self.0.iter().filter(|v| v.is_some()).count()
    }

    /// Whether no kind has a value.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// `(kind, value)` pairs, fast first.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { kinds: CadenceKind::ALL_REF.iter(), values: self.0.iter() }
    }

    /// `(kind, value)` pairs, fast first, values mutable.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut { kinds: CadenceKind::ALL_REF.iter(), values: self.0.iter_mut() }
    }

    /// The kinds that have a value.
    pub fn keys(&self) -> impl Iterator<Item = &'static CadenceKind> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values, fast first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flatten()
    }

    /// The values, fast first, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().flatten()
    }
}

impl CadenceKind {
    /// [`CadenceKind::ALL`] with a `'static` address, for iterators that hand out `&CadenceKind`.
    pub const ALL_REF: &'static [CadenceKind; 3] = &CadenceKind::ALL;
}

impl<T: fmt::Debug> fmt::Debug for CadenceMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> FromIterator<(CadenceKind, T)> for CadenceMap<T> {
    fn from_iter<I: IntoIterator<Item = (CadenceKind, T)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<T> IntoIterator for CadenceMap<T> {
    type Item = (CadenceKind, T);
    type IntoIter = std::iter::FilterMap<
        std::iter::Zip<std::array::IntoIter<CadenceKind, 3>, std::array::IntoIter<Option<T>, 3>>,
        fn((CadenceKind, Option<T>)) -> Option<(CadenceKind, T)>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn present<T>((k, v): (CadenceKind, Option<T>)) -> Option<(CadenceKind, T)> {
            Some((k, v?))
        }
        CadenceKind::ALL.into_iter().zip(self.0).filter_map(present::<T> as fn(_) -> _)
    }
}

/// The `(kind, value)` pairs of a [`CadenceMap`].
pub struct Iter<'a, T> {
    kinds: std::slice::Iter<'static, CadenceKind>,
    values: std::slice::Iter<'a, Option<T>>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = (&'static CadenceKind, &'a T);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (k, v) = (self.kinds.next()?, self.values.next()?);
            if let Some(v) = v {
                return Some((k, v));
            }
        }
    }
}

/// The `(kind, value)` pairs of a [`CadenceMap`], values mutable.
pub struct IterMut<'a, T> {
    kinds: std::slice::Iter<'static, CadenceKind>,
    values: std::slice::IterMut<'a, Option<T>>,
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = (&'static CadenceKind, &'a mut T);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (k, v) = (self.kinds.next()?, self.values.next()?);
            if let Some(v) = v {
                return Some((k, v));
            }
        }
    }
}

impl<'a, T> IntoIterator for &'a CadenceMap<T> {
    type Item = (&'static CadenceKind, &'a T);
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut CadenceMap<T> {
    type Item = (&'static CadenceKind, &'a mut T);
    type IntoIter = IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T> std::ops::Index<&CadenceKind> for CadenceMap<T> {
    type Output = T;
    /// Panics when `kind` has no value, as `BTreeMap`'s index does; for tests and invariants.
    fn index(&self, kind: &CadenceKind) -> &T {
        match self.get(kind) {
            Some(v) => v,
            None => panic!("no {} cadence in this map", kind.as_str()),
        }
    }
}

impl<T: Serialize> Serialize for CadenceMap<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CadenceMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = CadenceMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from cadence (fast, strong, cold) to its value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = CadenceMap::new();
                // A repeated key keeps the last value, as the BTreeMap this replaced did.
                while let Some((k, v)) = access.next_entry::<CadenceKind, T>()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sample() -> CadenceMap<u32> {
        [(CadenceKind::Cold, 3), (CadenceKind::Fast, 1)].into_iter().collect()
    }

    #[test]
    fn iterates_in_btreemap_order() {
        let map = sample();
        let reference: BTreeMap<CadenceKind, u32> = [(CadenceKind::Cold, 3), (CadenceKind::Fast, 1)].into();
        assert_eq!(map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), reference.into_iter().collect::<Vec<_>>());
        assert_eq!(map.len(), 2);
        assert!(!map.contains_key(&CadenceKind::Strong));
    }

    #[test]
    fn insert_and_remove_return_what_was_there() {
        let mut map = sample();
        assert_eq!(map.insert(CadenceKind::Fast, 10), Some(1));
        assert_eq!(map.insert(CadenceKind::Strong, 2), None);
        assert_eq!(map.remove(&CadenceKind::Cold), Some(3));
        assert_eq!(map.remove(&CadenceKind::Cold), None);
        assert_eq!(map.values().copied().collect::<Vec<_>>(), vec![10, 2]);
        map.remove(&CadenceKind::Fast);
        map.remove(&CadenceKind::Strong);
        assert!(map.is_empty());
    }

    #[test]
    fn serialises_as_the_btreemap_it_replaces() {
        let map = sample();
        let reference: BTreeMap<CadenceKind, u32> = map.iter().map(|(k, v)| (*k, *v)).collect();
        let json = serde_json::to_string(&map).unwrap_or_default();
        assert_eq!(json, serde_json::to_string(&reference).unwrap_or_default());
        assert_eq!(json, r#"{"fast":1,"cold":3}"#);
        let back: CadenceMap<u32> = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, map);
    }

    #[test]
    fn an_unknown_cadence_is_an_error() {
        assert!(serde_json::from_str::<CadenceMap<u32>>(r#"{"weekly":1}"#).is_err());
        assert!(serde_json::from_str::<CadenceMap<u32>>("[1]").is_err());
    }
}
