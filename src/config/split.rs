//! Splitting a namespaces document into the text of each namespace, when its layout makes
//! that safe, so a reload parses only the namespaces whose text changed.
//!
//! At 10,000 namespaces a whole-document parse takes most of a reload, and the YAML parser
//! holds every event of the document at once. The usual file is a plain block mapping: a
//! `namespaces:` line, then one entry per namespace at one indentation. Such a file splits
//! into one piece per entry, each a YAML document of its own. A layout that could make a
//! piece mean something else (other top-level keys, directives, document markers, tabs,
//! carriage returns, an entry starting with a flow collection or a complex key) is refused,
//! and the caller parses the whole document.
//!
//! The caller must also parse the whole document whenever a piece fails to parse alone: that
//! is how the rest is caught. A construct cut in two (a quoted or flow scalar running onto a
//! line at the entries' indentation) leaves its first piece unterminated; an alias of an
//! anchor set in another piece names an anchor its piece does not have. A piece that parses
//! alone holds every anchor it uses, so it means the same alone as in the whole.

use std::ops::Range;

/// The byte ranges of each namespace entry in `doc`, in order, or `None` when the document
/// is not a plain block mapping of namespaces (see the module's doc).
pub(crate) fn entries(doc: &[u8]) -> Option<Vec<Range<usize>>> {
    if doc.iter().any(|b| matches!(b, b'\t' | b'\r')) {
        return None;
    }
    let mut saw_top = false;
    let mut indent = None;
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in doc.split_inclusive(|b| *b == b'\n') {
        let at = offset;
        offset += line.len();
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let spaces = text.iter().take_while(|b| **b == b' ').count();
        let rest = &text[spaces..];
        if rest.is_empty() || rest[0] == b'#' {
            continue;
        }
        if !saw_top {
            if spaces != 0 || !is_namespaces_key(rest) {
                return None;
            }
            saw_top = true;
            continue;
        }
        // A second top-level line (another key, a document marker, a directive).
        if spaces == 0 {
            return None;
        }
        let want = *indent.get_or_insert(spaces);
        if spaces < want {
            return None;
        }
        if spaces == want {
            if matches!(rest[0], b'-' | b'?' | b'{' | b'[' | b'|' | b'>' | b'@' | b'`' | b':' | b',') {
                return None;
            }
            starts.push(at);
        }
    }
    if starts.is_empty() {
        return None;
    }
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(doc.len());
        ranges.push(*start..end);
    }
    Some(ranges)
}

/// `namespaces:`, optionally followed by blanks and a comment.
fn is_namespaces_key(line: &[u8]) -> bool {
    let Some(after) = line.strip_prefix(b"namespaces:") else { return false };
    let after = after.trim_ascii_start();
    after.is_empty() || after[0] == b'#'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(doc: &str) -> Option<Vec<&str>> {
        entries(doc.as_bytes()).map(|r| r.into_iter().map(|r| &doc[r]).collect())
    }

    #[test]
    fn a_plain_block_mapping_splits_into_one_piece_per_namespace() {
        let doc = "# fleet\nnamespaces:  # all of them\n  \"a:1\":\n    cadence:\n      fast: {target: \"local:x\", every: \"1s\"}\n\n  # the second\n  b:\n    description: |\n      two\n      lines\n";
        let got = pieces(doc).expect("splits");
        assert_eq!(
            got,
            [
                "  \"a:1\":\n    cadence:\n      fast: {target: \"local:x\", every: \"1s\"}\n\n  # the second\n",
                "  b:\n    description: |\n      two\n      lines\n",
            ]
        );
    }

    #[test]
    fn anything_that_could_change_a_pieces_meaning_is_refused() {
        for doc in [
            "%YAML 1.2\n---\nnamespaces:\n  a: {}\n",
            "namespaces:\n  a: {}\n---\nnamespaces:\n  b: {}\n",
            "namespaces:\n  a: {}\nother: 1\n",
            "other: 1\nnamespaces:\n  a: {}\n",
            "namespaces:\r\n  a: {}\r\n",
            "namespaces:\n\ta: {}\n",
            "namespaces:\n    a: {}\n  b: {}\n",
            "namespaces:\n  ? a\n  : {}\n",
            "namespaces:\n  - a\n",
            "namespaces:\n  {a: 1,\n  b: 2}\n",
            "namespaces: {a: {}}\n",
            "namespaces:\n",
            "",
        ] {
            assert_eq!(pieces(doc), None, "{doc:?}");
        }
    }
}
