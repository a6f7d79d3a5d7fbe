//! The three cadences a namespace may anchor on, by name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The three cadences a namespace may anchor on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CadenceKind {
    /// Frequent, cheap anchors (e.g. an EVM L2).
    Fast,
    /// Rarer, stronger anchors (e.g. Bitcoin).
    Strong,
    /// Long-term anchors (e.g. an RFC 3161 timestamp authority).
    Cold,
}

impl CadenceKind {
    /// Every cadence, in the order they are shown and scheduled.
    pub const ALL: [CadenceKind; 3] = [CadenceKind::Fast, CadenceKind::Strong, CadenceKind::Cold];

    /// Its place in [`CadenceKind::ALL`], for arrays kept one slot per kind.
    pub const fn index(self) -> usize {
        match self {
            CadenceKind::Fast => 0,
            CadenceKind::Strong => 1,
            CadenceKind::Cold => 2,
        }
    }

    /// The name used in YAML, labels, logs and state.
    pub fn as_str(self) -> &'static str {
        match self {
            CadenceKind::Fast => "fast",
            CadenceKind::Strong => "strong",
            CadenceKind::Cold => "cold",
        }
    }

    /// Parses a cadence name as written in YAML and state.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for CadenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_names_round_trip() {
        for k in CadenceKind::ALL {
            assert_eq!(CadenceKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(CadenceKind::parse("warm"), None);
    }
}
