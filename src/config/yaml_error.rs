//! The text of a YAML syntax error, pointing where an operator should look.
//!
//! serde_yaml reports a duplicate key at the start of the mapping that holds it (its first
//! key, or its `{`), which in a namespaces file of hundreds of entries is far from the
//! duplicate. This finds the second occurrence of the key inside that mapping and reports
//! both places; every other error is passed on as serde_yaml words it.

/// `not valid YAML: …` for `e`, raised while parsing `bytes`.
pub(super) fn not_valid_yaml(bytes: &[u8], e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let (Some(key), Some(mark)) = (duplicate_key(&text), e.location()) else {
        return format!("not valid YAML: {text}");
    };
    let Ok(doc) = std::str::from_utf8(bytes) else { return format!("not valid YAML: {text}") };
    match find_duplicate(doc, mark.line(), mark.column(), &key) {
        Some((line, column)) => {
            // serde_yaml's text ends with its own (misleading) position: replace it.
            let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(what, _)| what);
            format!(
                "not valid YAML: {what} at line {line} column {column} (the mapping that holds it starts at line {} column {})",
                mark.line(),
                mark.column()
            )
        }
        None => format!("not valid YAML: {text}"),
    }
}

/// The key of serde_yaml's "duplicate entry with key \"K\"" message.
fn duplicate_key(text: &str) -> Option<String> {
    let rest = text.split_once("duplicate entry with key ")?.1;
    let quoted = rest.strip_prefix('"')?;
    // serde_yaml writes the key with Rust's Debug escapes; keys needing them are rare enough
    // that only the plain case is looked for (anything else keeps serde_yaml's position).
    let end = quoted.find('"')?;
    let key = &quoted[..end];
    (!key.contains('\\')).then(|| key.to_string())
}

/// Line and column (1-based) of the second `key` in the mapping that starts at `line`,
/// `column` (1-based): a block mapping's first key, or a flow mapping's `{`.
fn find_duplicate(doc: &str, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = doc.lines().collect();
    let first = lines.get(line.checked_sub(1)?)?;
    let start = first.char_indices().nth(column.checked_sub(1)?).map(|(i, _)| i)?;
    if first[start..].starts_with('{') {
        return find_in_flow(&lines, line - 1, start, key);
    }
    let indent = start;
    let mut seen = 0;
    for (i, text) in lines.iter().enumerate().skip(line - 1) {
        let trimmed = text.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = text.len() - trimmed.len();
        // The first line may hold the key after `- ` or another key; later ones by indentation.
        let here = if i == line - 1 { start } else { at };
        if i != line - 1 && at < indent {
            break;
        }
        if here != indent || text.get(here..).is_none() {
            continue;
        }
        if block_key(&text[here..]).as_deref() == Some(key) {
            seen += 1;
            if seen == 2 {
                return Some((i + 1, text[..here].chars().count() + 1));
            }
        }
    }
    None
}

/// The key a block-mapping line starts with: plain, `'…'` or `"…"`, followed by `:`.
fn block_key(rest: &str) -> Option<String> {
    let (key, after) = scalar(rest)?;
    let after = after.trim_start_matches(' ');
    after.starts_with(':').then_some(key)
}

/// A scalar at the start of `s` and what follows it; plain scalars end at `: `, `:` at the
/// end, `,`, `}` or `]` (the last three only matter in flow context).
fn scalar(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    if let Some(body) = s.strip_prefix('"') {
        let end = body.find('"')?;
        let key = &body[..end];
        // Escapes are rare in keys; a key with one is not matched rather than mis-read.
        return (!key.contains('\\')).then(|| (key.to_string(), &body[end + 1..]));
    }
    let mut end = s.len();
    for (i, c) in s.char_indices() {
        let next = s[i + c.len_utf8()..].chars().next();
        if (c == ':' && next.is_none_or(|n| n == ' ' || n == '\t' || n == ',' || n == '}' || n == ']'))
            || c == ','
            || c == '}'
            || c == ']'
            || (c == '#' && s[..i].ends_with(' '))
        {
            end = i;
            break;
        }
    }
    let key = s[..end].trim_end();
    (!key.is_empty()).then(|| (key.to_string(), &s[end..]))
}

/// The second `key` at depth one of the flow mapping whose `{` is at byte `start` of line
/// `first` (0-based).
fn find_in_flow(lines: &[&str], first: usize, start: usize, key: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut seen = 0;
    for (i, text) in lines.iter().enumerate().skip(first) {
        let mut pos = if i == first { start } else { 0 };
        while pos < text.len() {
            let rest = &text[pos..];
            let Some(c) = rest.chars().next() else { break };
            if c == ' ' || c == '\t' {
                pos += 1;
                continue;
            }
            if c == '#' && (pos == 0 || text[..pos].ends_with([' ', '\t'])) {
                break;
            }
            if depth == 1 && expect_key && c != '}' {
                expect_key = false;
                let (found, after) = scalar(rest)?;
                if found == key && after.trim_start().starts_with(':') {
                    seen += 1;
                    if seen == 2 {
                        return Some((i + 1, text[..pos].chars().count() + 1));
                    }
                }
                pos = text.len() - after.len();
                continue;
            }
            match c {
                '{' | '[' => {
                    depth += 1;
                    expect_key = c == '{' && depth == 1;
                }
                '}' | ']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return None;
                    }
                }
                ',' if depth == 1 => expect_key = true,
                '\'' | '"' => {
                    // A quoted value: skip it whole, so brackets inside it do not count.
                    let (_, after) = scalar(rest)?;
                    pos = text.len() - after.len();
                    continue;
                }
                _ => {}
            }
            pos += c.len_utf8();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(doc: &str) -> String {
        let e = serde_yaml::from_str::<serde_yaml::Value>(doc).expect_err("invalid");
        not_valid_yaml(doc.as_bytes(), &e)
    }

    #[test]
    fn a_duplicate_namespace_is_reported_where_it_is() {
        let doc = "namespaces:\n  a:\n    cadence: {fast: {target: 'local:x', every: '1s'}}\n  b:\n    cadence: {}\n  # a:\n  a:\n    cadence: {}\n";
        let m = message(doc);
        assert!(m.contains("duplicate entry with key \"a\" at line 7 column 3"), "{m}");
        assert!(m.contains("starts at line 2 column 3"), "{m}");
    }

    #[test]
    fn a_duplicate_in_a_nested_block_mapping_is_reported_where_it_is() {
        let doc = "namespaces:\n  a:\n    cadence:\n      \"fast\": {target: 'local:x', every: '1s'}\n      strong: {target: 'local:x', every: '3*fast'}\n      'fast': {target: 'local:y', every: '1s'}\n";
        let m = message(doc);
        assert!(m.contains("namespaces.a.cadence: duplicate entry with key \"fast\" at line 6 column 7"), "{m}");
    }

    #[test]
    fn a_duplicate_in_a_flow_mapping_is_reported_where_it_is() {
        let doc = "namespaces:\n  a:\n    cadence: {fast: {target: \"local:x\", every: \"1s\"}, 'x,}': [1, {fast: 2}],\n      fast: {target: \"local:y\"}}\n";
        let m = message(doc);
        assert!(m.contains("duplicate entry with key \"fast\" at line 4 column 7"), "{m}");
        assert!(m.contains("starts at line 3 column 14"), "{m}");
    }

    #[test]
    fn a_duplicate_in_a_list_item_mapping_is_reported_where_it_is() {
        let doc = "items:\n  - a: 1\n    b: 2\n    a: 3\n";
        let m = message(doc);
        assert!(m.contains("duplicate entry with key \"a\" at line 4 column 5"), "{m}");
    }

    #[test]
    fn other_errors_are_passed_on_as_they_are() {
        let doc = "a: [1, 2\n";
        let e = serde_yaml::from_str::<serde_yaml::Value>(doc).expect_err("invalid");
        assert_eq!(not_valid_yaml(doc.as_bytes(), &e), format!("not valid YAML: {e}"));
    }
}
