//! A linear pre-scan that refuses YAML whose flow collections (`[…]`, `{…}`) nest too deep,
//! before the YAML parser sees it.
//!
//! The YAML scanner works in proportion to the nesting depth on every token, and serde_yaml
//! scans a whole document before its own recursion limit applies, so without this bound a
//! few hundred kilobytes of `[[[[…` keep it busy for minutes and a 4 MiB file for hours.
//!
//! The scan follows the YAML scanner's rules for what hides a bracket: a quote opens a
//! quoted scalar only where a token starts (in `don't` or `It is 'great'` it is text); `#`
//! opens a comment only where a token starts or after a blank; in block context a bracket
//! inside a plain scalar is text, in flow context every bracket counts; block scalars
//! (`|`, `>`) are skipped by indentation. Real files nest a few levels, so the bound is
//! never near.

/// Deepest nesting of flow collections a config file may have.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;

/// Where the scan is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Outside quotes, comments and block scalars.
    Normal,
    /// Inside `'…'`.
    Single,
    /// Inside `"…"`.
    Double,
    /// From `#` to the end of the line.
    Comment,
    /// Inside a block scalar whose header sat on a line indented `indent` spaces.
    Block { indent: usize },
}

/// Where in a token the scan is, in `Normal` mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// Where a token may start: a quote opens a quoted scalar, `#` a comment.
    TokenStart,
    /// Inside a plain scalar (which runs on across blanks): quotes are text.
    Scalar,
    /// Inside an anchor, alias or tag, which ends at a blank.
    Property,
}

/// Refuses a document whose flow collections nest deeper than [`MAX_FLOW_DEPTH`]; the
/// error names the line.
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut mode = Mode::Normal;
    let mut at = At::TokenStart;
    let mut after_blank = true;
    // Indentation of the current line, and whether its first non-space byte was seen.
    let mut indent = 0usize;
    let mut in_indent = true;
    // A block scalar header (`|`, `>`) on this line: its content starts on the next one.
    let mut block_header: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        if in_indent {
            if b == b' ' {
                indent += 1;
            } else {
                in_indent = false;
            }
        }
        match mode {
            Mode::Block { indent: header } => {
                // A line indented more than its header's, or blank, is content.
                if !in_indent && b != b'\n' && b != b'\r' && indent <= header {
                    mode = Mode::Normal;
                    at = At::TokenStart;
                    after_blank = true;
                    continue;
                }
            }
            Mode::Single => {
                if b == b'\'' {
                    if next == Some(b'\'') {
                        i += 1;
                    } else {
                        mode = Mode::Normal;
                        at = At::Scalar;
                        after_blank = false;
                    }
                }
            }
            Mode::Double => match b {
                b'\\' => {
                    if next == Some(b'\n') {
                        line += 1;
                        start_line(&mut indent, &mut in_indent);
                    }
                    i += 1;
                }
                b'"' => {
                    mode = Mode::Normal;
                    at = At::Scalar;
                    after_blank = false;
                }
                _ => {}
            },
            Mode::Comment => {
                if b == b'\n' {
                    mode = Mode::Normal;
                    continue;
                }
            }
            Mode::Normal => {
                let token_start = at == At::TokenStart;
                match b {
                    b'\n' => {
                        at = At::TokenStart;
                        after_blank = true;
                        if let Some(header) = block_header.take() {
                            mode = Mode::Block { indent: header };
                        }
                    }
                    b' ' | b'\t' | b'\r' => {
                        after_blank = true;
                        if at == At::Property {
                            at = At::TokenStart;
                        }
                    }
                    b'#' if token_start || after_blank => mode = Mode::Comment,
                    b'\'' if token_start => mode = Mode::Single,
                    b'"' if token_start => mode = Mode::Double,
                    b'[' | b'{' if token_start || depth > 0 => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Err(format!(
                                "flow collections ([…] or {{…}}) nest more than {MAX_FLOW_DEPTH} levels deep by \
                                 line {line}; write the file in block style"
                            ));
                        }
                        at = At::TokenStart;
                    }
                    b']' | b'}' | b',' if depth > 0 => {
                        if b != b',' {
                            depth -= 1;
                        }
                        at = At::TokenStart;
                    }
                    // A value indicator: followed by a blank, or anywhere in flow context.
                    b':' if depth > 0 || next.is_none_or(|n| matches!(n, b' ' | b'\t' | b'\r' | b'\n')) => {
                        at = At::TokenStart;
                    }
                    b'-' | b'?' if token_start && next.is_none_or(|n| matches!(n, b' ' | b'\t' | b'\r' | b'\n')) => {}
                    b'|' | b'>' if token_start && depth == 0 => {
                        block_header = Some(indent);
                        at = At::Scalar;
                    }
                    b'&' | b'*' | b'!' if token_start => at = At::Property,
                    _ => {
                        if token_start {
                            at = At::Scalar;
                        }
                    }
                }
                if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    after_blank = false;
                }
            }
        }
        if b == b'\n' {
            line += 1;
            start_line(&mut indent, &mut in_indent);
        }
        i += 1;
    }
    Ok(())
}

fn start_line(indent: &mut usize, in_indent: &mut bool) {
    *indent = 0;
    *in_indent = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(doc: &str) -> bool {
        check(doc.as_bytes()).is_ok()
    }

    #[test]
    fn nesting_past_the_limit_is_refused_and_up_to_it_accepted() {
        for opener in ["[", "{", "{a: ", "[{"] {
            let doc = format!("namespaces: {}", opener.repeat(MAX_FLOW_DEPTH + 1));
            assert!(check(doc.as_bytes()).is_err(), "{opener}");
        }
        // Nesting up to the limit is fine, and so is any amount of flat flow style.
        let at_limit = format!("x: {}{}", "[".repeat(MAX_FLOW_DEPTH), "]".repeat(MAX_FLOW_DEPTH));
        check(at_limit.as_bytes()).expect("at the limit");
        check("x: [[], {}, [a]]\n".repeat(100_000).as_bytes()).expect("flat");
        check(include_bytes!("../../tests/fixtures/namespaces.vm-spawn.yaml")).expect("the reference file");
        check(include_bytes!("../../namespaces.example.yaml")).expect("the example file");
        check(include_bytes!("../../tests/fixtures/anchors.vm-spawn.yaml")).expect("the targets file");
        // Balanced brackets in quotes and comments do not add up.
        let quoted = "d: \"[]]][[\"\ne: '{}'\n# ]]]]\nf: don't [x]\n".repeat(1_000);
        check(quoted.as_bytes()).expect("balanced text");
    }

    #[test]
    fn ordinary_files_with_many_quoted_flow_mappings_pass() {
        // One flow mapping per line, quoted values: every line closes what it opens.
        let mut doc = String::from("namespaces:\n");
        for i in 0..10_000 {
            doc.push_str(&format!(
                "  \"ns{i}\":\n    cadence:\n      fast: {{target: \"local:j{i}\", every: '1s'}}\n      cold: {{\"target\":\"exec:x\",\"every\":\"1d\"}}\n"
            ));
        }
        assert!(depth_ok(&doc));
        assert!(serde_yaml::from_str::<serde_yaml::Value>(&doc).is_ok(), "the test writes real YAML");
        // Quotes and brackets inside plain scalars are text; a comment needs a blank before it.
        let plain = "title: It is 'great' [x] {y\nnote: don't [\nurl: http://h/a#b'c\n".repeat(100);
        assert!(depth_ok(&plain));
        // A block scalar's text is skipped, whatever quotes and brackets it holds.
        let block: String =
            (0..100).map(|i| format!("a{i}:\n  description: |\n    it's [[[[ \"open\n    {{{{ ' \n  b: 1\n")).collect();
        assert!(depth_ok(&block));
        assert!(serde_yaml::from_str::<serde_yaml::Value>(&block).is_ok(), "the test writes real YAML");
    }

    #[test]
    fn a_block_scalar_does_not_hide_the_nesting_after_it() {
        let doc = format!("a: |\n  text ' \"\nb: {}", "[".repeat(MAX_FLOW_DEPTH + 1));
        assert!(!depth_ok(&doc));
        let doc = format!("a: >-\n  text\n\n  more\nb: {}", "{x: ".repeat(MAX_FLOW_DEPTH + 1));
        assert!(!depth_ok(&doc));
    }

    #[test]
    fn no_quoting_trick_hides_real_nesting_from_the_pre_scan() {
        // Each level opens a real collection and holds a closing bracket the YAML scanner
        // does not see as one: quoted, in a comment, in a tag, after an apostrophe that is
        // part of a plain scalar.
        for level in [
            "[\"]\", ",
            "['] ''', ",
            "[a'b, ']', ",
            "[# ]]\n",
            "{\"}\": ",
            "[\"\\\"]\", ",
            "[a\"b, \"]\", ",
            "[!t ",
            "[&a ",
            "[\n  'x]', ",
        ] {
            let doc = format!("namespaces: {}", level.repeat(MAX_FLOW_DEPTH + 1));
            assert!(check(doc.as_bytes()).is_err(), "{level:?} hid the nesting");
        }
    }

    /// A small deterministic generator; `VMSH_SEED` replays a run.
    struct XorShift(u64);

    impl XorShift {
        fn from_env() -> Self {
            let seed = std::env::var("VMSH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
            println!("seed {seed} (set VMSH_SEED to replay)");
            XorShift(seed | 1)
        }

        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// A random flow-style node nested `depth` levels deep, with brackets hidden in quotes,
    /// comments and plain scalars along the way.
    fn flow_node(rng: &mut XorShift, depth: usize, out: &mut String) {
        const SCALARS: &[&str] =
            &["x", "a'b", "a\"b", "a#b", "a!b", "'q]}'", "'it''s ]'", "\"]}\\\"[\"", "\"\\\\\"", "!t x", "&a x"];
        const GAPS: &[&str] = &[" ", "", " # ]]}}\n ", "\n  "];
        if depth == 0 {
            out.push_str(SCALARS[rng.below(SCALARS.len())]);
            return;
        }
        let map = rng.below(2) == 0;
        out.push(if map { '{' } else { '[' });
        let deep_at = rng.below(3);
        for i in 0..3 {
            out.push_str(GAPS[rng.below(GAPS.len())]);
            if map {
                out.push_str(&format!("k{i}: "));
            }
            let inner = if i == deep_at { depth - 1 } else { rng.below(2).min(depth - 1) };
            flow_node(rng, inner, out);
            if i < 2 {
                out.push_str(", ");
            }
        }
        out.push(if map { '}' } else { ']' });
    }

    #[test]
    fn the_pre_scan_bounds_the_nesting_of_random_flow_documents_from_above() {
        let mut rng = XorShift::from_env();
        for case in 0..400 {
            let depth = 1 + rng.below(2 * MAX_FLOW_DEPTH);
            let mut doc = String::from("namespaces: ");
            flow_node(&mut rng, depth, &mut doc);
            if depth > MAX_FLOW_DEPTH {
                assert!(check(doc.as_bytes()).is_err(), "case {case}: depth {depth} passed:\n{doc}");
            }
            // The generator writes real YAML, so the depth above is the parser's too.
            if depth < 100 {
                let parsed = serde_yaml::from_str::<serde_yaml::Value>(&doc);
                assert!(parsed.is_ok(), "case {case}: the generator wrote invalid YAML ({parsed:?}):\n{doc}");
            }
        }
    }
}
