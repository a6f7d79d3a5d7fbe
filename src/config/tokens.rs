//! The admin API's token file (`VMSH_ADMIN_TOKEN_FILE`): its format, a comparison that takes
//! the same time whichever token (if any) matches, and the file as the service holds it,
//! re-read on every config tick.
//!
//! One token per line, either bare or as `NAME=TOKEN`; blank lines and lines starting with
//! `#` are ignored. A bare token is named by its line (`line-3`): audit lines name the
//! token, never show it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

/// Shortest token accepted: shorter ones can be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// Largest token file read.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why a token file was refused; names the line, never shows a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// No token in the file.
    #[error("holds no token: write one per line, bare or as NAME=TOKEN")]
    Empty,
    /// A token too short to be safe.
    #[error("line {line}: the token is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort {
        /// 1-based line number.
        line: usize,
    },
    /// A token with white space or control characters in it.
    #[error("line {line}: the token holds white space or control characters")]
    BadToken {
        /// 1-based line number.
        line: usize,
    },
    /// A name that is empty or holds other than letters, digits, `-`, `_` and `.`.
    #[error("line {line}: a token name may hold only letters, digits, '-', '_' and '.'")]
    BadName {
        /// 1-based line number.
        line: usize,
    },
    /// Two tokens with one name, which audit lines could not tell apart.
    #[error("line {line}: the name {name:?} is used twice")]
    DuplicateName {
        /// 1-based line number of the second use.
        line: usize,
        /// The name.
        name: String,
    },
    /// The same token twice, under two names: which one acted could not be told.
    #[error("line {line}: the same token as line {first}")]
    DuplicateToken {
        /// 1-based line number of the second use.
        line: usize,
        /// Where it was first.
        first: usize,
    },
    /// Not UTF-8.
    #[error("is not UTF-8 text")]
    NotText,
}

/// The tokens of one token file.
#[derive(Clone, Default)]
pub struct Tokens {
    /// Each token's name and the SHA-256 of the token: only digests are kept and compared,
    /// so every comparison has the same length whatever was presented.
    entries: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Tokens {
    /// Reads a token file's content.
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenFileError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TokenFileError::NotText)?;
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            // A token may hold '=' (base64 padding): the line is NAME=TOKEN only when what
            // comes before the first '=' is a name and what follows is more than padding.
            let (name, token) = match trimmed.split_once('=') {
                Some((name, token)) if valid_name(name.trim()) && !token.bytes().all(|b| b == b'=') => {
                    (name.trim().to_string(), token.trim())
                }
                Some((name, _)) if name.trim().is_empty() => return Err(TokenFileError::BadName { line }),
                _ => (format!("line-{line}"), trimmed),
            };
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(TokenFileError::BadToken { line });
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(TokenFileError::TooShort { line });
            }
            if entries.iter().any(|(n, _)| *n == name) {
                return Err(TokenFileError::DuplicateName { line, name });
            }
            let d = digest(token.as_bytes());
            if let Some(at) = entries.iter().position(|(_, e)| *e == d) {
                return Err(TokenFileError::DuplicateToken { line, first: lines_of[at] });
            }
            entries.push((name, d));
            lines_of.push(line);
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { entries })
    }

    /// The name of the token `presented` is, if it is one. Every token is compared, each
    /// comparison of two 32-byte digests touching every byte, so the time taken says
    /// nothing about which token matched or how much of one did.
    pub fn check(&self, presented: &[u8]) -> Option<&str> {
        let d = digest(presented);
        let mut found = None;
        for (name, expected) in &self.entries {
            let mut diff = 0u8;
            for (a, b) in d.iter().zip(expected) {
                diff |= a ^ b;
            }
            // Both branches do the same work; `black_box` keeps the loop from ending early.
            if std::hint::black_box(diff) == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The token file as the service holds it: read at start-up, and read again on every config
/// tick. A changed file is applied once it reads the same twice in a row (so a file caught
/// mid-write is never applied) and only if it is valid; a bad one leaves the tokens read
/// before in force, and says why in [`TokenStore::error`].
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    inner: RwLock<Held>,
}

#[derive(Debug)]
struct Held {
    tokens: Arc<Tokens>,
    /// SHA-256 of the content the tokens came from.
    hash: [u8; 32],
    /// A changed content read once, waiting to be read again before it is applied.
    seen: Option<[u8; 32]>,
    /// A content refused: read again, it changes nothing.
    refused: Option<[u8; 32]>,
    /// Why the file on disk is not in force, when it is not.
    error: Option<String>,
}

/// What a reading of the token file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reread {
    /// The file is as in force (or changed once: it is read again first).
    Unchanged,
    /// New tokens are in force; how many.
    Applied(usize),
    /// The file on disk is refused; the tokens read before stay in force.
    Refused(String),
}

/// Reads the token file at `path`, at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    crate::fsread::read_regular(path, MAX_FILE_BYTES).map_err(|e| e.to_string())
}

impl TokenStore {
    /// Reads the token file at start-up: any problem is an error naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = read_file(path).map_err(|e| format!("admin token file {}: {e}", path.display()))?;
        let tokens = Tokens::parse(&bytes).map_err(|e| format!("admin token file {}: {e}", path.display()))?;
        let held = Held { tokens: Arc::new(tokens), hash: digest(&bytes), seen: None, refused: None, error: None };
        Ok(Self { path: path.to_path_buf(), inner: RwLock::new(held) })
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(&self.held().tokens)
    }

    /// Why the file on disk is not in force, when it is not.
    pub fn error(&self) -> Option<String> {
        self.held().error.clone()
    }

    /// Takes a reading of the file (its content, or why it could not be read).
    pub fn reread(&self, read: Result<Vec<u8>, String>) -> Reread {
        let mut held = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                let why = format!("admin token file {}: {e}", self.path.display());
                held.seen = None;
                let new = held.error.as_deref() != Some(why.as_str());
                held.error = Some(why.clone());
                return if new { Reread::Refused(why) } else { Reread::Unchanged };
            }
        };
        let hash = digest(&bytes);
        if hash == held.hash {
            // Back to what is in force: nothing is refused any more.
            (held.seen, held.refused, held.error) = (None, None, None);
            return Reread::Unchanged;
        }
        if held.refused == Some(hash) {
            return Reread::Unchanged;
        }
        if held.seen != Some(hash) {
            held.seen = Some(hash);
            return Reread::Unchanged;
        }
        held.seen = None;
        match Tokens::parse(&bytes) {
            Ok(tokens) => {
                let n = tokens.len();
                *held = Held { tokens: Arc::new(tokens), hash, seen: None, refused: None, error: None };
                Reread::Applied(n)
            }
            Err(e) => {
                let why = format!("admin token file {}: {e}", self.path.display());
                // Refused once per content: the next readings of it change nothing.
                held.refused = Some(hash);
                held.error = Some(why.clone());
                Reread::Refused(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-alpha";
    const B: &str = "0123456789abcdef-bravo";

    #[test]
    fn bare_and_named_tokens_are_read_and_comments_and_blank_lines_skipped() {
        let file = format!("# admin tokens\n\n{A}\nops={B}\n  # indented comment\n");
        let tokens = Tokens::parse(file.as_bytes()).expect("valid");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.check(A.as_bytes()), Some("line-3"));
        assert_eq!(tokens.check(B.as_bytes()), Some("ops"));
        assert_eq!(tokens.check(b"0123456789abcdef-charlie"), None);
        assert_eq!(tokens.check(b""), None);
        assert_eq!(tokens.check(&A.as_bytes()[..A.len() - 1]), None, "a prefix is not the token");
    }

    #[test]
    fn a_token_with_equals_signs_is_bare_unless_a_name_comes_first() {
        for padded in ["c2VjcmV0LXRva2VuLXZhbHVl+/==", "c2VjcmV0LXRva2VuLXZhbHVl=="] {
            let tokens = Tokens::parse(padded.as_bytes()).expect("valid");
            assert_eq!(tokens.check(padded.as_bytes()), Some("line-1"));
        }
        let padded = "c2VjcmV0LXRva2VuLXZhbHVl+/==";
        let named = format!("ci.deploy={padded}");
        let tokens = Tokens::parse(named.as_bytes()).expect("valid");
        assert_eq!(tokens.check(padded.as_bytes()), Some("ci.deploy"));
    }

    #[test]
    fn bad_files_are_refused_by_line_without_showing_a_token() {
        let cases: [(&str, TokenFileError); 7] = [
            ("# nothing\n\n", TokenFileError::Empty),
            ("short\n", TokenFileError::TooShort { line: 1 }),
            (&format!("{A}\nops={A}\n"), TokenFileError::DuplicateToken { line: 2, first: 1 }),
            (&format!("ops={A}\nops={B}\n"), TokenFileError::DuplicateName { line: 2, name: "ops".into() }),
            (&format!("={A}\n"), TokenFileError::BadName { line: 1 }),
            ("ops=\n", TokenFileError::TooShort { line: 1 }),
            ("ops=0123456789abcdef\u{7}x\n", TokenFileError::BadToken { line: 1 }),
        ];
        for (file, want) in cases {
            let got = Tokens::parse(file.as_bytes()).expect_err(file);
            assert_eq!(got, want, "{file:?}");
            let shown = got.to_string();
            assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
        }
        assert_eq!(Tokens::parse(&[0xff, 0xfe]).expect_err("binary"), TokenFileError::NotText);
    }

    #[test]
    fn debug_output_names_tokens_and_never_shows_them() {
        let tokens = Tokens::parse(format!("ops={A}\n").as_bytes()).expect("valid");
        let shown = format!("{tokens:?}");
        assert!(shown.contains("ops") && !shown.contains(A), "{shown}");
    }

    #[test]
    fn a_changed_file_applies_once_read_twice_and_a_bad_one_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("ops={A}\n")).expect("write");
        let store = TokenStore::load(&path).expect("valid");
        let now = || read_file(&path);
        assert_eq!(store.reread(now()), Reread::Unchanged);
        std::fs::write(&path, format!("ops={B}\n")).expect("write");
        assert_eq!(store.reread(now()), Reread::Unchanged, "read once: it may be mid-write");
        assert_eq!(store.tokens().check(A.as_bytes()), Some("ops"));
        assert_eq!(store.reread(now()), Reread::Applied(1));
        assert_eq!(store.tokens().check(A.as_bytes()), None, "rotated out");
        assert_eq!(store.tokens().check(B.as_bytes()), Some("ops"));
        std::fs::write(&path, "short\n").expect("write");
        store.reread(now());
        let Reread::Refused(why) = store.reread(now()) else { panic!("a bad file is refused") };
        assert!(why.contains("line 1") && why.contains("tokens"), "{why}");
        assert_eq!(store.tokens().check(B.as_bytes()), Some("ops"), "the tokens before stay in force");
        assert_eq!(store.reread(now()), Reread::Unchanged, "refused once per content");
        assert!(store.error().is_some());
        // Put back as it is in force: nothing to apply, nothing refused.
        std::fs::write(&path, format!("ops={B}\n")).expect("write");
        assert_eq!(store.reread(now()), Reread::Unchanged);
        assert_eq!(store.error(), None);
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(store.reread(now()), Reread::Refused(_)), "a file gone is said once");
        assert_eq!(store.reread(now()), Reread::Unchanged);
        assert_eq!(store.tokens().check(B.as_bytes()), Some("ops"));
    }

    #[test]
    fn a_bad_file_at_start_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let e = TokenStore::load(&path).expect_err("missing");
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, "# none\n").expect("write");
        let e = TokenStore::load(&path).expect_err("empty");
        assert!(e.contains("holds no token"), "{e}");
    }
}
