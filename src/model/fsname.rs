//! Safe, reversible file names for namespace and target names.
//!
//! Namespace names may hold `:`, `/`, spaces or anything else YAML allows, but whatever the
//! scheduler writes to disk must stay inside its folders. Every byte outside a conservative set
//! is percent-encoded, and so is a leading dot, so `..` or `a/b` can never become a path.

use std::fmt::Write as _;

/// Longest encoded name we accept: the usual file-name limit of Linux file systems.
pub const MAX_ENCODED_LEN: usize = 255;

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':' | b'@' | b'+' | b'=' | b',')
}

/// Encodes `name` into a single path component that decodes back to `name`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, byte) in name.bytes().enumerate() {
        if is_plain(byte) && !(i == 0 && byte == b'.') {
            out.push(byte as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Decodes a name produced by [`encode`]; `None` when `encoded` is not such a name.
pub fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_readable() {
        assert_eq!(encode("dao:vaultmesh"), "dao:vaultmesh");
        assert_eq!(encode("fin-clearing_2"), "fin-clearing_2");
    }

    #[test]
    fn path_like_names_cannot_escape_their_folder() {
        for name in ["../../etc", "..", ".", "a/b", "/abs", "x\\y", ".hidden"] {
            let enc = encode(name);
            assert!(!enc.contains('/'), "{enc}");
            assert!(!enc.starts_with('.'), "{enc}");
            assert_ne!(enc, "..");
        }
    }

    #[test]
    fn encoding_round_trips() {
        for name in ["dao:vaultmesh", "../../etc", "ü n i c o d e", "%41", "a\u{7}b", ""] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn distinct_names_never_share_a_file() {
        assert_ne!(encode("%41"), encode("A"));
        assert_ne!(encode("a b"), encode("a_b"));
    }
}
