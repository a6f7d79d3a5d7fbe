//! Anchor target references as written in a cadence: `<scheme>:<name>`.

use std::fmt;

/// The kinds of anchor target the scheduler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// An EVM chain, by EIP-155 chain id (`eip155:8453`).
    Eip155,
    /// Bitcoin, by network or configured name (`btc:mainnet`).
    Btc,
    /// An RFC 3161 timestamp authority (`rfc3161:tsa`).
    Rfc3161,
    /// The built-in hash-chained journal (`local:demo`).
    Local,
    /// A configured external command (`exec:notify`).
    Exec,
}

impl Scheme {
    /// Every scheme, for error messages.
    pub const ALL: [Scheme; 5] = [Scheme::Eip155, Scheme::Btc, Scheme::Rfc3161, Scheme::Local, Scheme::Exec];

    /// The scheme as written before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Eip155 => "eip155",
            Scheme::Btc => "btc",
            Scheme::Rfc3161 => "rfc3161",
            Scheme::Local => "local",
            Scheme::Exec => "exec",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed target reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// Which kind of target.
    pub scheme: Scheme,
    /// What follows the colon: a chain id, a network or a configured name.
    pub name: String,
}

/// Longest target name accepted.
pub const MAX_TARGET_NAME: usize = 128;

impl Target {
    /// Parses `<scheme>:<name>`, checking the name's form for its scheme.
    pub fn parse(raw: &str) -> Result<Target, String> {
        let Some((scheme, name)) = raw.split_once(':') else {
            return Err(format!("{raw:?} has no scheme; write <scheme>:<name> with scheme one of {}", scheme_list()));
        };
        let scheme = match scheme {
            "eip155" => Scheme::Eip155,
            "btc" => Scheme::Btc,
            "rfc3161" => Scheme::Rfc3161,
            "local" => Scheme::Local,
            "exec" => Scheme::Exec,
            other => {
                return Err(format!("unknown target scheme {other:?}; expected one of {}", scheme_list()));
            }
        };
        if name.is_empty() {
            return Err(format!("{raw:?} names no target after the colon"));
        }
        if name.len() > MAX_TARGET_NAME {
            return Err(format!("target name is longer than {MAX_TARGET_NAME} bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(format!("{raw:?} contains control characters"));
        }
        match scheme {
            Scheme::Eip155 => {
                let valid =
                    name.bytes().all(|b| b.is_ascii_digit()) && name.parse::<u64>().map(|id| id > 0).unwrap_or(false);
                if !valid {
                    return Err(format!("{raw:?}: an eip155 target is a positive decimal chain id, e.g. eip155:8453"));
                }
            }
            Scheme::Btc | Scheme::Rfc3161 | Scheme::Exec => {
                let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    return Err(format!(
                        "{raw:?}: a {scheme} target name may hold only letters, digits, '-', '_' and '.'"
                    ));
                }
            }
            // Journal names are encoded into safe file names, so any printable text is fine;
            // whether the encoded name fits a file name is the config's check.
            Scheme::Local => {}
        }
        Ok(Target { scheme, name: name.to_string() })
    }
}

impl Target {
    /// Whether `shown` is this target as it displays (`local:demo`), without building that text.
    pub fn is(&self, shown: &str) -> bool {
        shown.split_once(':') == Some((self.scheme.as_str(), self.name.as_str()))
    }
}

fn scheme_list() -> String {
    Scheme::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_recognises_its_own_text() {
        let t = Target::parse("local:demo:x").expect("target");
        assert!(t.is(&t.to_string()));
        assert!(!t.is("local:demo") && !t.is("exec:demo:x") && !t.is("localdemo:x"));
    }

    #[test]
    fn parses_every_scheme() {
        for (raw, scheme, name) in [
            ("eip155:8453", Scheme::Eip155, "8453"),
            ("btc:mainnet", Scheme::Btc, "mainnet"),
            ("rfc3161:tsa", Scheme::Rfc3161, "tsa"),
            ("local:demo", Scheme::Local, "demo"),
            ("exec:notify", Scheme::Exec, "notify"),
        ] {
            let t = Target::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((t.scheme, t.name.as_str()), (scheme, name));
            assert_eq!(t.to_string(), raw);
        }
    }

    #[test]
    fn rejects_unknown_schemes_and_malformed_names() {
        for bad in ["ipfs:x", "eip155", "eip155:", "eip155:0", "eip155:base", "btc:main net", "exec:../x", "local:a\nb"]
        {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Target::parse("ipfs:x").unwrap_err().contains("unknown target scheme"));
    }
}
