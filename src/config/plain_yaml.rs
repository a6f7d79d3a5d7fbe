//! A reader for the plain subset of YAML that namespace pieces are written in.
//!
//! A reload that changes every one of 100,000 namespaces spent most of its time in the YAML
//! parser, which builds a list of events before any value and costs microseconds per small
//! piece. Pieces are nearly always written in a narrow subset: block mappings, block
//! sequences of scalars, one-line flow collections and one-line scalars. This reads that
//! subset into a tree that borrows its strings from the text, and gives up (`None`) at
//! anything else, so the caller falls back to serde_yaml. [`deserialize`] reads types
//! straight from that tree: building a `serde_yaml::Value` first (a hash map per mapping,
//! a string per scalar) would cost more than the parse.
//!
//! Whatever it returns must be exactly what serde_yaml 0.9 makes of the same text, so it
//! refuses rather than guesses: escapes, anchors, tags, block scalars, multi-line scalars,
//! duplicate keys, and every plain scalar that serde_yaml might read as something other
//! than a string (floats, signed, hexadecimal, octal or binary numbers, leading zeros).

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
#[cfg(test)]
use serde_yaml::{Mapping, Value};

/// Nesting beyond this is refused: serde_yaml has a recursion limit of its own, and the
/// reader recurses.
const MAX_DEPTH: usize = 32;

/// Longest key accepted, in bytes: libyaml refuses a key spanning more than 1024 characters.
const MAX_KEY: usize = 1000;

/// Most entries in one mapping: duplicates are found by comparing each key with the
/// others, which a huge mapping would make slow.
const MAX_ENTRIES: usize = 64;

/// `text` as serde_yaml reads it, or `None` when it uses anything outside the subset: the
/// reference that [`deserialize`] is held to, which the tests hold to serde_yaml.
#[cfg(test)]
pub(crate) fn read(text: &[u8]) -> Option<Value> {
    tree(text).map(|node| node.to_value())
}

/// A `T` read from `text` as `serde_yaml::from_value` reads it from the `serde_yaml::Value`
/// of the text, without making that value; `None` when the text is outside the subset or
/// `T` does not fit.
pub(crate) fn deserialize<T: DeserializeOwned>(text: &[u8]) -> Option<T> {
    T::deserialize(&tree(text)?).ok()
}

fn tree(text: &[u8]) -> Option<Node<'_>> {
    let src = printable(text)?;
    let mut reader = Reader { src, bytes: text, pos: 0, depth: 0 };
    let first = reader.peek()?;
    let node = reader.block_mapping(first.indent)?;
    match reader.peek() {
        Some(_) => None,
        None => Some(node),
    }
}

/// A YAML node of the subset; scalars are already resolved, keys are always scalars.
#[derive(Debug, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    Int(u64),
    Str(&'a str),
    Seq(Vec<Node<'a>>),
    Map(Vec<(Node<'a>, Node<'a>)>),
}

#[cfg(test)]
impl Node<'_> {
    fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(n) => Value::Number((*n).into()),
            Node::Str(s) => Value::String((*s).to_string()),
            Node::Seq(items) => Value::Sequence(items.iter().map(Node::to_value).collect()),
            Node::Map(entries) => {
                Value::Mapping(entries.iter().map(|(k, v)| (k.to_value(), v.to_value())).collect::<Mapping>())
            }
        }
    }
}

/// Adds an entry; `None` for a key already there (serde_yaml refuses it) or too many entries.
fn insert<'a>(map: &mut Vec<(Node<'a>, Node<'a>)>, key: Node<'a>, value: Node<'a>) -> Option<()> {
    if map.len() >= MAX_ENTRIES || map.iter().any(|(k, _)| *k == key) {
        return None;
    }
    map.push((key, value));
    Some(())
}

/// `text` as a string when libyaml would read every character of it as we do: no control
/// characters but line feeds (tabs and carriage returns change where things end), and none
/// of the characters libyaml takes as line breaks or a byte order mark.
fn printable(text: &[u8]) -> Option<&str> {
    let mut ascii = true;
    for &b in text {
        if (b < 0x20 && b != b'\n') || b == 0x7f {
            return None;
        }
        ascii &= b < 0x80;
    }
    let src = std::str::from_utf8(text).ok()?;
    if !ascii
        && src
            .chars()
            .any(|c| matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'))
    {
        return None;
    }
    Some(src)
}

/// A line holding something other than blanks or a comment.
#[derive(Clone, Copy)]
struct Line {
    /// Spaces before its content.
    indent: usize,
    /// Offset of its content.
    start: usize,
    /// Offset of its end, before any line feed.
    end: usize,
    /// Offset of the next line.
    next: usize,
}

struct Reader<'a> {
    src: &'a str,
    bytes: &'a [u8],
    /// Start of the first line not yet read.
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// The next line with content, skipping blank and comment lines for good.
    fn peek(&mut self) -> Option<Line> {
        while self.pos < self.bytes.len() {
            let at = self.pos;
            let rest = self.bytes.get(at..)?;
            let len = rest.iter().position(|b| *b == b'\n');
            let end = len.map_or(self.bytes.len(), |n| at + n);
            let next = len.map_or(self.bytes.len(), |n| at + n + 1);
            let line = self.bytes.get(at..end)?;
            let indent = line.iter().take_while(|b| **b == b' ').count();
            match line.get(indent) {
                None | Some(b'#') => self.pos = next,
                Some(_) => return Some(Line { indent, start: at + indent, end, next }),
            }
        }
        None
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.bytes.get(at).copied()
    }

    fn text(&self, from: usize, to: usize) -> Option<&'a str> {
        self.src.get(from..to)
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// The entries of a block mapping whose keys stand at `indent`.
    fn block_mapping(&mut self, indent: usize) -> Option<Node<'a>> {
        self.enter()?;
        let mut map = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let (key, after) = self.block_key(line)?;
            self.pos = line.next;
            let value = match self.inline_value(after, line.end)? {
                Some(v) => v,
                None => self.nested(indent)?,
            };
            insert(&mut map, key, value)?;
        }
        self.depth -= 1;
        Some(Node::Map(map))
    }

    /// What follows a key with nothing after it on its line: a deeper block, a sequence at
    /// the key's own indentation, or null.
    fn nested(&mut self, indent: usize) -> Option<Node<'a>> {
        let Some(line) = self.peek() else { return Some(Node::Null) };
        let dash = self.is_dash(line);
        if line.indent > indent {
            if dash { self.block_sequence(line.indent) } else { self.block_mapping(line.indent) }
        } else if line.indent == indent && dash {
            self.block_sequence(indent)
        } else {
            Some(Node::Null)
        }
    }

    fn is_dash(&self, line: Line) -> bool {
        self.byte(line.start) == Some(b'-') && (line.start + 1 == line.end || self.byte(line.start + 1) == Some(b' '))
    }

    /// The items of a block sequence whose dashes stand at `indent`; each is one line.
    fn block_sequence(&mut self, indent: usize) -> Option<Node<'a>> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return None;
            }
            if !self.is_dash(line) {
                break;
            }
            self.pos = line.next;
            // An empty item would take the lines below it as its value.
            items.push(self.inline_value(line.start + 1, line.end)??);
        }
        self.depth -= 1;
        Some(Node::Seq(items))
    }

    /// A block mapping key and the offset just past its `:`.
    fn block_key(&self, line: Line) -> Option<(Node<'a>, usize)> {
        let start = line.start;
        let (key, colon) = match self.byte(start)? {
            q @ (b'"' | b'\'') => {
                let close = self.quoted_end(start, line.end, q)?;
                (Node::Str(self.text(start + 1, close)?), close + 1)
            }
            _ => {
                let mut at = start;
                loop {
                    match self.byte(at) {
                        Some(b':') if matches!(self.byte(at + 1), Some(b' ' | b'\n') | None) => break,
                        Some(b'#') if self.byte(at.checked_sub(1)?) == Some(b' ') => return None,
                        Some(b'\n') | None => return None,
                        Some(_) => at += 1,
                    }
                }
                let raw = self.text(start, at)?.trim_end_matches(' ');
                if raw == "<<" {
                    return None;
                }
                (plain(raw)?, at)
            }
        };
        if colon - start > MAX_KEY || self.byte(colon) != Some(b':') {
            return None;
        }
        if !matches!(self.byte(colon + 1), Some(b' ' | b'\n') | None) {
            return None;
        }
        Some((key, colon + 1))
    }

    /// The offset of the quote closing the scalar opened at `open`, on the same line;
    /// `None` for escapes (double quotes) or doubled quotes (single quotes).
    fn quoted_end(&self, open: usize, end: usize, quote: u8) -> Option<usize> {
        let body = self.bytes.get(open + 1..end)?;
        let len = body.iter().position(|b| *b == quote || (quote == b'"' && *b == b'\\'))?;
        let close = open + 1 + len;
        if self.byte(close)? != quote || (quote == b'\'' && self.byte(close + 1) == Some(b'\'')) {
            return None;
        }
        Some(close)
    }

    /// The value written on a line from `from` to `end`: `Some(None)` when there is none
    /// (only blanks or a comment), `None` when it is outside the subset.
    fn inline_value(&mut self, from: usize, end: usize) -> Option<Option<Node<'a>>> {
        let mut at = from;
        while self.byte(at) == Some(b' ') && at < end {
            at += 1;
        }
        if at == end || self.byte(at) == Some(b'#') {
            // `#` right after a `:` or `-` would not start a comment, but those never get here.
            return (at > from || at == end).then_some(None);
        }
        if at == from {
            return None;
        }
        let (value, after) = match self.byte(at)? {
            q @ (b'"' | b'\'') => {
                let close = self.quoted_end(at, end, q)?;
                (Node::Str(self.text(at + 1, close)?), close + 1)
            }
            b'{' | b'[' => self.flow(at, end)?,
            _ => {
                let mut stop = at;
                while stop < end && !(self.byte(stop) == Some(b'#') && self.byte(stop - 1) == Some(b' ')) {
                    stop += 1;
                }
                let raw = self.text(at, stop)?.trim_end_matches(' ');
                // `: ` or a final `:` would make it a key: a mapping where a scalar stands.
                if raw.contains(": ") || raw.ends_with(':') {
                    return None;
                }
                return Some(Some(plain(raw)?));
            }
        };
        self.rest_is_blank(after, end)?;
        Some(Some(value))
    }

    /// Only blanks, or blanks and a comment, from `at` to `end`.
    fn rest_is_blank(&self, at: usize, end: usize) -> Option<()> {
        let mut i = at;
        while i < end && self.byte(i) == Some(b' ') {
            i += 1;
        }
        (i == end || (i > at && self.byte(i) == Some(b'#'))).then_some(())
    }

    fn skip_spaces(&self, mut at: usize, end: usize) -> usize {
        while at < end && self.byte(at) == Some(b' ') {
            at += 1;
        }
        at
    }

    /// A flow collection opening at `at` and closing on the same line: its value and the
    /// offset past its closing bracket.
    fn flow(&mut self, at: usize, end: usize) -> Option<(Node<'a>, usize)> {
        self.enter()?;
        let close = if self.byte(at)? == b'{' { b'}' } else { b']' };
        let mut i = self.skip_spaces(at + 1, end);
        let value = if close == b'}' {
            let mut map = Vec::new();
            if self.byte(i) == Some(b'}') {
                i += 1;
            } else {
                loop {
                    let (key, after) = self.flow_key(i, end)?;
                    let (value, after) = self.flow_node(self.skip_spaces(after, end), end, b'}')?;
                    insert(&mut map, key, value)?;
                    let (next, closed) = self.flow_next(after, end, b'}')?;
                    i = next;
                    if closed {
                        break;
                    }
                }
            }
            Node::Map(map)
        } else {
            let mut items = Vec::new();
            if self.byte(i) == Some(b']') {
                i += 1;
            } else {
                loop {
                    let (value, after) = self.flow_node(i, end, b']')?;
                    items.push(value);
                    let (next, closed) = self.flow_next(after, end, b']')?;
                    i = next;
                    if closed {
                        break;
                    }
                }
            }
            Node::Seq(items)
        };
        self.depth -= 1;
        Some((value, i))
    }

    /// Past the `,` (and blanks) after an entry, or past the closing bracket (and then
    /// true); `None` for a trailing comma or anything else.
    fn flow_next(&self, at: usize, end: usize, close: u8) -> Option<(usize, bool)> {
        let i = self.skip_spaces(at, end);
        match self.byte(i) {
            Some(b) if b == close && i < end => Some((i + 1, true)),
            Some(b',') if i < end => {
                let next = self.skip_spaces(i + 1, end);
                match self.byte(next) {
                    Some(b) if next < end && b != close && b != b',' => Some((next, false)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A key in a flow mapping and the offset past its `: `.
    fn flow_key(&self, at: usize, end: usize) -> Option<(Node<'a>, usize)> {
        let (key, colon) = match self.byte(at)? {
            q @ (b'"' | b'\'') => {
                let close = self.quoted_end(at, end, q)?;
                (Node::Str(self.text(at + 1, close)?), close + 1)
            }
            _ => {
                let stop = self.flow_plain_end(at, end, b'}', true)?;
                let raw = self.text(at, stop)?.trim_end_matches(' ');
                if raw == "<<" {
                    return None;
                }
                (plain(raw)?, stop)
            }
        };
        if colon - at > MAX_KEY || self.byte(colon) != Some(b':') || self.byte(colon + 1) != Some(b' ') {
            return None;
        }
        Some((key, colon + 2))
    }

    /// A value in a flow collection closed by `close`, and the offset past it.
    fn flow_node(&mut self, at: usize, end: usize, close: u8) -> Option<(Node<'a>, usize)> {
        if at >= end {
            return None;
        }
        match self.byte(at)? {
            q @ (b'"' | b'\'') => {
                let quote = self.quoted_end(at, end, q)?;
                Some((Node::Str(self.text(at + 1, quote)?), quote + 1))
            }
            b'{' | b'[' => self.flow(at, end),
            _ => {
                let stop = self.flow_plain_end(at, end, close, false)?;
                let raw = self.text(at, stop)?.trim_end_matches(' ');
                Some((plain(raw)?, stop))
            }
        }
    }

    /// Where a plain scalar in a flow collection starting at `at` ends: at `: ` when it is a
    /// key, at `,` or `close` when it is a value. `None` at any character whose meaning there
    /// is not plain.
    fn flow_plain_end(&self, at: usize, end: usize, close: u8, key: bool) -> Option<usize> {
        let mut i = at;
        while i < end {
            match self.byte(i)? {
                b':' => match self.byte(i + 1) {
                    Some(b' ') if key => return Some(i),
                    Some(c) if c.is_ascii_alphanumeric() => {}
                    _ => return None,
                },
                b',' if !key => return Some(i),
                b if b == close && !key => return Some(i),
                // After a blank, `#` starts a comment, which would leave the collection open.
                b'#' if self.byte(i - 1) == Some(b' ') => return None,
                b'{' | b'}' | b'[' | b']' | b',' | b'?' => return None,
                _ => {}
            }
            i += 1;
        }
        None
    }
}

/// A plain scalar resolved as serde_yaml resolves it, or `None` when it might be anything
/// but null, a boolean, a non-negative decimal integer or a string, or starts with a
/// character that means something in YAML.
fn plain(s: &str) -> Option<Node<'_>> {
    let bytes = s.as_bytes();
    let first = *bytes.first()?;
    match s {
        "null" | "Null" | "NULL" | "~" => return Some(Node::Null),
        "true" | "True" | "TRUE" => return Some(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Node::Bool(false)),
        _ => {}
    }
    if first.is_ascii_digit() {
        if bytes.iter().all(u8::is_ascii_digit) {
            // serde_yaml reads `012` as a string; refused rather than copied.
            if bytes.len() > 1 && first == b'0' {
                return None;
            }
            return s.parse::<u64>().ok().map(Node::Int);
        }
        if first == b'0' && matches!(bytes.get(1), Some(b'x' | b'o' | b'b')) {
            return None;
        }
        if float_like(bytes) {
            return None;
        }
        return Some(Node::Str(s));
    }
    if first.is_ascii_alphabetic() || first == b'_' || first == b'/' || first >= 0x80 {
        // Rust's float parser reads these; serde_yaml then keeps them as strings because
        // they are not finite, but that is one reasoning step too many to rely on.
        for word in ["inf", "infinity", "nan"] {
            if s.eq_ignore_ascii_case(word) {
                return None;
            }
        }
        return Some(Node::Str(s));
    }
    None
}

/// Whether `s` (starting with a digit) might parse as a float: a loose superset of
/// `digits[.digits][e[sign]digits]`.
fn float_like(s: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
    };
    digits(&mut i);
    if s.get(i) == Some(&b'.') {
        i += 1;
        digits(&mut i);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        digits(&mut i);
    }
    i == s.len()
}

type Error = de::value::Error;

fn invalid<T>(node: &Node<'_>, exp: &dyn de::Expected) -> Result<T, Error> {
    let unexpected = match node {
        Node::Null => de::Unexpected::Unit,
        Node::Bool(b) => de::Unexpected::Bool(*b),
        Node::Int(n) => de::Unexpected::Unsigned(*n),
        Node::Str(s) => de::Unexpected::Str(s),
        Node::Seq(_) => de::Unexpected::Seq,
        Node::Map(_) => de::Unexpected::Map,
    };
    Err(de::Error::invalid_type(unexpected, exp))
}

fn visit_seq<'de, V: Visitor<'de>>(items: &[Node<'_>], visitor: V) -> Result<V::Value, Error> {
    let mut access = Items(items.iter());
    let value = visitor.visit_seq(&mut access)?;
    match access.0.len() {
        0 => Ok(value),
        _ => Err(de::Error::invalid_length(items.len(), &"fewer elements in sequence")),
    }
}

fn visit_map<'de, V: Visitor<'de>>(entries: &[(Node<'_>, Node<'_>)], visitor: V) -> Result<V::Value, Error> {
    let mut access = Entries { entries: entries.iter(), value: None };
    let value = visitor.visit_map(&mut access)?;
    match access.entries.len() {
        0 => Ok(value),
        _ => Err(de::Error::invalid_length(entries.len(), &"fewer elements in map")),
    }
}

// Each method answers as serde_yaml's `Deserializer for Value` does (or fails where that is
// not needed), so a type reads from the tree what it would read from `read`'s value.
impl<'de> Deserializer<'de> for &Node<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(n) => visitor.visit_u64(*n),
            Node::Str(s) => visitor.visit_str(s),
            Node::Seq(items) => visit_seq(items, visitor),
            Node::Map(entries) => visit_map(entries, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Bool(b) => visitor.visit_bool(*b),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Int(n) => visitor.visit_u64(*n),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Str(s) => visitor.visit_str(s),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_unit(),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Seq(items) => visit_seq(items, visitor),
            Node::Null => visit_seq(&[], visitor),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Map(entries) => visit_map(entries, visitor),
            Node::Null => visit_map(&[], visitor),
            other => invalid(other, &visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // serde_yaml's enums from plain strings are not needed here: the caller falls back.
        invalid(self, &visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        invalid(self, &visitor)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        invalid(self, &visitor)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
}

struct Items<'n, 'a>(std::slice::Iter<'n, Node<'a>>);

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|item| seed.deserialize(item)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'n, 'a> {
    entries: std::slice::Iter<'n, (Node<'a>, Node<'a>)>,
    value: Option<&'n Node<'a>>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::namespaces::NamespaceSpec;

    /// `read`'s answer, checked against serde_yaml whenever there is one: the same value,
    /// keys in the same order.
    fn checked(text: &str) -> Option<Value> {
        let got = read(text.as_bytes())?;
        let want = match serde_yaml::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => panic!("read accepted what serde_yaml refuses ({e}):\n{text}"),
        };
        assert_eq!(got, want, "{text}");
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{text}");
        Some(got)
    }

    /// `deserialize`'s answer for a namespace piece, checked against `from_value` of `read`'s:
    /// the same namespaces whenever it has one.
    fn typed(text: &str) -> Option<BTreeMap<String, NamespaceSpec>> {
        let got = deserialize::<BTreeMap<String, NamespaceSpec>>(text.as_bytes());
        let via_value = read(text.as_bytes()).map(serde_yaml::from_value::<BTreeMap<String, NamespaceSpec>>);
        if let Some(got) = &got {
            let Some(Ok(want)) = via_value else { panic!("deserialize read what from_value refuses:\n{text}") };
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{text}");
        } else if let Some(Ok(want)) = via_value {
            panic!("deserialize refused what from_value reads ({want:?}):\n{text}");
        }
        // The tree read as a Value, through `deserialize_any`, is `read`'s value too.
        if let Some(value) = deserialize::<Value>(text.as_bytes()) {
            assert_eq!(Some(&value), read(text.as_bytes()).as_ref(), "{text}");
        }
        got
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Mapping(entries.into_iter().collect())
    }

    #[test]
    fn a_usual_piece_reads_to_its_tree() {
        let text = "  \"bench:ns000001\":\n    cadence:\n      fast: {target: \"local:j01\", every: \"3600s\"}\n      strong: {target: \"local:j01\", every: \"34*fast\"}\n      cold: {target: \"local:j01\", every: \"1d\"}\n";
        let cadence = |every: &str| map(vec![(s("target"), s("local:j01")), (s("every"), s(every))]);
        let want = map(vec![(
            s("bench:ns000001"),
            map(vec![(
                s("cadence"),
                map(vec![(s("fast"), cadence("3600s")), (s("strong"), cadence("34*fast")), (s("cold"), cadence("1d"))]),
            )]),
        )]);
        assert_eq!(checked(text), Some(want));
    }

    #[test]
    fn block_sequences_comments_and_plain_scalars_read_as_serde_yaml_reads_them() {
        let text = "  dao:vaultmesh:   # the ledger\n    description: Anchors, hourly [primary] it's \"fine\"\n\n    # quorum\n    witnesses:\n      min_required: 2\n      allowlist:\n      - did:key:z6Mkabc\n      - 'did:vm:b'  # second\n    schema_policy:\n      allow:\n        - ledger.append@1.0.x\n    cadence:\n      fast:\n        target: eip155:1\n        every: 89s\n        confirmations: 12\n        policyOID: 1.3.6.1.4.1\n        jitter:\n      cold: {target: 'rfc3161:tsa', every: 2 * fast, x: [a, \"b\", [], {}]}\n";
        let want = map(vec![(
            s("dao:vaultmesh"),
            map(vec![
                (s("description"), s("Anchors, hourly [primary] it's \"fine\"")),
                (
                    s("witnesses"),
                    map(vec![
                        (s("min_required"), Value::Number(2.into())),
                        (s("allowlist"), Value::Sequence(vec![s("did:key:z6Mkabc"), s("did:vm:b")])),
                    ]),
                ),
                (s("schema_policy"), map(vec![(s("allow"), Value::Sequence(vec![s("ledger.append@1.0.x")]))])),
                (
                    s("cadence"),
                    map(vec![
                        (
                            s("fast"),
                            map(vec![
                                (s("target"), s("eip155:1")),
                                (s("every"), s("89s")),
                                (s("confirmations"), Value::Number(12.into())),
                                (s("policyOID"), s("1.3.6.1.4.1")),
                                (s("jitter"), Value::Null),
                            ]),
                        ),
                        (
                            s("cold"),
                            map(vec![
                                (s("target"), s("rfc3161:tsa")),
                                (s("every"), s("2 * fast")),
                                (
                                    s("x"),
                                    Value::Sequence(vec![
                                        s("a"),
                                        s("b"),
                                        Value::Sequence(vec![]),
                                        Value::Mapping(Mapping::new()),
                                    ]),
                                ),
                            ]),
                        ),
                    ]),
                ),
            ]),
        )]);
        assert_eq!(checked(text), Some(want));
    }

    #[test]
    fn plain_scalars_resolve_as_serde_yaml_resolves_them() {
        for (scalar, want) in [
            ("null", Value::Null),
            ("Null", Value::Null),
            ("NULL", Value::Null),
            ("~", Value::Null),
            ("true", Value::Bool(true)),
            ("True", Value::Bool(true)),
            ("FALSE", Value::Bool(false)),
            ("0", Value::Number(0.into())),
            ("10000", Value::Number(10_000.into())),
            ("18446744073709551615", Value::Number(u64::MAX.into())),
            ("yes", s("yes")),
            ("off", s("off")),
            ("nULL", s("nULL")),
            ("89s", s("89s")),
            ("1d", s("1d")),
            ("1_000", s("1_000")),
            ("34*fast", s("34*fast")),
            ("1.2.3", s("1.2.3")),
            ("2024-01-01", s("2024-01-01")),
            ("12:30", s("12:30")),
            ("eip155:1", s("eip155:1")),
            ("a#b", s("a#b")),
            ("a #b", s("a")),
            ("ünï ☃", s("ünï ☃")),
            ("/var/x", s("/var/x")),
        ] {
            assert_eq!(checked(&format!("k: {scalar}\n")), Some(map(vec![(s("k"), want.clone())])), "{scalar}");
            assert_eq!(checked(&format!("{scalar}: 1\n")).is_some(), scalar != "a #b", "{scalar} as a key");
        }
        assert_eq!(checked("k:\n"), Some(map(vec![(s("k"), Value::Null)])));
        assert_eq!(checked("k: \"\"\n"), Some(map(vec![(s("k"), s(""))])));
        assert_eq!(checked("k: 'null'\n"), Some(map(vec![(s("k"), s("null"))])));
        assert_eq!(checked("1: a\n"), Some(map(vec![(Value::Number(1.into()), s("a"))])));
    }

    #[test]
    fn anything_that_might_not_be_a_string_is_refused() {
        for scalar in [
            "012",
            "00",
            "1e3",
            "1E3",
            "1.5",
            "1.",
            ".5",
            ".inf",
            ".NaN",
            "-.inf",
            "inf",
            "NaN",
            "Infinity",
            "-1",
            "+1",
            "-0",
            "0x1f",
            "0o17",
            "0b101",
            "18446744073709551616",
            "1e",
            "-x",
        ] {
            assert_eq!(checked(&format!("k: {scalar}\n")), None, "{scalar}");
            assert_eq!(checked(&format!("k: [{scalar}]\n")), None, "[{scalar}]");
        }
    }

    #[test]
    fn constructs_outside_the_subset_are_refused() {
        for text in [
            "",
            "# only a comment\n",
            "just a scalar\n",
            "- a\n",
            "{a: 1}\n",
            "k: \"a\\nb\"\n",
            "k: 'it''s'\n",
            "'it''s': 1\n",
            "k: &a x\n",
            "k: *a\n",
            "k: !tag x\n",
            "k: !!str 1\n",
            "k: |\n  text\n",
            "k: >\n  text\n",
            "k: a\n  continued\n",
            "k: \"a\n  b\"\n",
            "k: {a: 1,\n  b: 2}\n",
            "k: {a: 1,}\n",
            "k: {a}\n",
            "k: {a: }\n",
            "k: {\"a\":1}\n",
            "k: [a: 1]\n",
            "k: [a, b] x\n",
            "k: \"a\" b\n",
            "k: \"a\"# c\n",
            "k: a: b\n",
            "k: a:\n",
            "k: - a\n",
            "k: ? a\n",
            "k: % a\n",
            "k: @a\n",
            "k: `a`\n",
            "k: ,a\n",
            "k:\n  -\n",
            "k:\n  - a: 1\n",
            "k:\n  - - a\n",
            "k:\n    a: 1\n  b: 2\n",
            "k: 1\n  b: 2\n",
            "a: 1\nb: 2\na: 3\n",
            "k: {a: 1, a: 2}\n",
            "~: 1\nnull: 2\n",
            "<<: {a: 1}\n",
            "? a\n: 1\n",
            "---\nk: 1\n",
            "k: 1\n...\n",
            "%YAML 1.2\n---\nk: 1\n",
            "k:\tv\n",
            "k: v\r\n",
            "\u{feff}k: v\n",
            "k: a\u{85}b\n",
            "k: a\u{2028}b\n",
            "k: a\u{7}b\n",
            "  a: 1\nb: 2\n",
            "\"k\" : 1\n",
            "k:v\n",
            "a #b: 1\n",
        ] {
            assert_eq!(checked(text), None, "{text:?}");
        }
        assert_eq!(read(b"k: \xff\n"), None);
        let long = format!("{}: 1\n", "k".repeat(1_100));
        assert_eq!(checked(&long), None, "a key longer than libyaml takes");
        let deep = format!("k: {}{}\n", "[".repeat(40), "]".repeat(40));
        assert_eq!(checked(&deep), None, "nesting deeper than the limit");
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const COMMON: &[&str] = &[
        "\"local:j01\"",
        "local:j01",
        "\"3600s\"",
        "89s",
        "1d",
        "34*fast",
        "\"34*fast\"",
        "eip155:1",
        "btc:mainnet",
        "12",
        "0",
        "2",
        "did:key:z6MkhaXgBZD",
        "'did:vm:arbiter:a'",
        "ledger.append@1.0.x",
        "\"\"",
        "Clearing house",
        "1.3.6.1.4.1.4146",
        "\"a: b # c\"",
        "'x #y'",
        "x y z",
        "ünï ☃",
        "a#b",
        "true",
        "null",
        "~",
    ];

    const TRICKY: &[&str] = &[
        "True",
        "TRUE",
        "False",
        "yes",
        "no",
        "on",
        "Off",
        "y",
        "NULL",
        "Null",
        "nULL",
        "012",
        "00",
        "0x1f",
        "0o17",
        "0b101",
        "1e3",
        "1E+3",
        "1.5",
        ".5",
        "1.",
        ".inf",
        "-.Inf",
        ".NaN",
        "inf",
        "nan",
        "Infinity",
        "-1",
        "+1",
        "-0",
        "+0x1",
        "1_000",
        "1e",
        "1.2.3",
        "2024-01-01",
        "12:30",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "&a x",
        "*a",
        "!t x",
        "!!str 5",
        "|",
        ">",
        "%x",
        "@x",
        "`x`",
        "-",
        "- x",
        "?x",
        "? x",
        ",x",
        "x,y",
        "[x",
        "x]",
        "{x}",
        "x}",
        "a: b",
        "a:",
        "a:b",
        "a :b",
        "a #b",
        "#c",
        "\"a\\\"b\"",
        "\"a\\nb\"",
        "'it''s'",
        "'a\\b'",
        "\"it's\"",
        "'say \"hi\"'",
        "\" spaced \"",
        "<<",
        "=",
        "_x",
        "/p",
        "x  y",
        "\"unclosed",
        "'unclosed",
        "é:1",
        "a,b",
        "a?b",
        "[a, b]",
        "{a: 1}",
        "[]",
        "{}",
        "[a, [b, {c: d}]]",
        "{a: [1, 2], b: {c: ~}}",
        "{a: 1,}",
        "[a,]",
        "{a}",
        "[a: 1]",
        "{\"a\":1}",
        "{a: 1, a: 2}",
        "[a, b] x",
    ];

    const KEYS: &[&str] = &[
        "target",
        "every",
        "cadence",
        "fast",
        "strong",
        "cold",
        "description",
        "allowlist",
        "\"bench:ns000001\"",
        "bench:ns000002",
        "'quoted key'",
        "a b",
        "x",
        "y",
    ];

    const TRICKY_KEYS: &[&str] = &[
        "null",
        "~",
        "1",
        "012",
        "true",
        "yes",
        "-a",
        "\"a\\\"b\"",
        "'it''s'",
        "<<",
        "?x",
        "&a x",
        "1.5",
        "\"k\" ",
        "a #b",
        "é",
        "a:b:",
        "[a]",
        "{a: 1}",
        "'a': 'b'",
    ];

    fn scalar(rng: &mut Rng, tricky: bool) -> &'static str {
        if tricky && rng.chance(30) { rng.pick(TRICKY) } else { rng.pick(COMMON) }
    }

    fn key(rng: &mut Rng, tricky: bool) -> &'static str {
        if tricky && rng.chance(10) { rng.pick(TRICKY_KEYS) } else { rng.pick(KEYS) }
    }

    fn flow(rng: &mut Rng, tricky: bool, depth: usize) -> String {
        let n = rng.below(4);
        let mut parts = Vec::new();
        let as_map = rng.chance(60);
        for _ in 0..n {
            let value = if depth < 2 && rng.chance(15) {
                flow(rng, tricky, depth + 1)
            } else {
                scalar(rng, tricky).to_string()
            };
            parts.push(if as_map { format!("{}: {value}", key(rng, tricky)) } else { value });
        }
        let sep = if rng.chance(20) { "," } else { ", " };
        let body = parts.join(sep);
        let pad = if rng.chance(20) { " " } else { "" };
        if as_map { format!("{{{pad}{body}{pad}}}") } else { format!("[{pad}{body}{pad}]") }
    }

    fn comment(rng: &mut Rng, tricky: bool) -> &'static str {
        if tricky && rng.chance(10) {
            return rng.pick(&["# glued", "#", " #", "x # y"]);
        }
        rng.pick(&["", "", "", "  # note", " #x", "   # a: b {"])
    }

    /// Lines of a block mapping at `indent`.
    fn mapping(rng: &mut Rng, out: &mut String, indent: usize, depth: usize, tricky: bool) {
        let n = 1 + rng.below(4);
        let mut used: Vec<&str> = Vec::new();
        for _ in 0..n {
            let pad = |rng: &mut Rng| {
                let odd = tricky && rng.chance(5);
                " ".repeat(if odd { indent + 1 } else { indent })
            };
            if rng.chance(10) {
                out.push_str(&format!("{}\n", rng.pick(&["", "   ", "# comment", "      # deep comment", "#"])));
            }
            let k = if tricky && !used.is_empty() && rng.chance(5) {
                used[0]
            } else {
                let mut k = key(rng, tricky);
                while used.contains(&k) {
                    k = key(rng, tricky);
                }
                k
            };
            used.push(k);
            let p = pad(rng);
            match rng.below(10) {
                0..=3 => out.push_str(&format!("{p}{k}: {}{}\n", scalar(rng, tricky), comment(rng, tricky))),
                4 | 5 => out.push_str(&format!("{p}{k}: {}{}\n", flow(rng, tricky, 0), comment(rng, tricky))),
                6 => {
                    out.push_str(&format!("{p}{k}:{}\n", comment(rng, tricky)));
                    let at = indent + if rng.chance(50) { 0 } else { 2 };
                    for _ in 0..1 + rng.below(3) {
                        let item = if rng.chance(15) { flow(rng, tricky, 1) } else { scalar(rng, tricky).to_string() };
                        out.push_str(&format!("{}- {item}{}\n", " ".repeat(at), comment(rng, tricky)));
                    }
                }
                7 => out.push_str(&format!("{p}{k}:{}\n", comment(rng, tricky))),
                _ if depth < 3 => {
                    out.push_str(&format!("{p}{k}:{}\n", comment(rng, tricky)));
                    let step = if tricky { rng.pick(&["2", "2", "1", "4"]) } else { "2" };
                    mapping(
                        rng,
                        out,
                        indent + step.len().max(usize::from(step.as_bytes()[0] - b'0')),
                        depth + 1,
                        tricky,
                    );
                }
                _ => out.push_str(&format!("{p}{k}: {}\n", scalar(rng, tricky))),
            }
        }
    }

    fn piece(rng: &mut Rng) -> (String, bool) {
        let tricky = rng.chance(50);
        let indent = if tricky { rng.pick(&["2", "2", "0", "4", "1"]) } else { "2" };
        let indent = usize::from(indent.as_bytes()[0] - b'0');
        let mut out = String::new();
        let name = if tricky && rng.chance(20) {
            rng.pick(TRICKY_KEYS).to_string()
        } else {
            format!("\"bench:ns{:06}\"", rng.below(1_000_000))
        };
        out.push_str(&format!("{}{name}:{}\n", " ".repeat(indent), comment(rng, tricky)));
        mapping(rng, &mut out, indent + 2, 0, tricky);
        if tricky && rng.chance(5) {
            out = out.replacen(' ', rng.pick(&["\t", "\r", " \n"]), 1 + rng.below(3));
        }
        (out, tricky)
    }

    /// `text` with a few characters that mean something in YAML put in, taken out or
    /// swapped, to reach the corners a generator of whole constructs does not.
    fn mutated(rng: &mut Rng, text: &str) -> String {
        const MEANINGFUL: &[u8] = b" :#-\"'{}[],\n\n  a0.&*!|>?%@`\\~";
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() + 1);
            let c = MEANINGFUL[rng.below(MEANINGFUL.len())];
            match rng.below(3) {
                0 => bytes.insert(at, c),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ if at < bytes.len() => bytes[at] = c,
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    const FIELD_VALUES: &[&str] = &[
        "\"local:j01\"",
        "local:j01",
        "eip155:1",
        "\"3600s\"",
        "89s",
        "34*fast",
        "'1d'",
        "12",
        "0",
        "3",
        "10001",
        "4294967296",
        "~",
        "null",
        "true",
        "\"12\"",
        "\"\"",
        "1.5",
        "012",
        "-1",
        "[a]",
        "{a: b}",
        "[]",
        "x y",
    ];

    /// Mostly a value that fits the field, sometimes any.
    fn field(rng: &mut Rng, good: &[&'static str]) -> &'static str {
        if rng.chance(90) { rng.pick(good) } else { rng.pick(FIELD_VALUES) }
    }

    /// One cadence, as a flow or a block mapping at `indent`.
    fn cadence_fields(rng: &mut Rng, indent: usize) -> String {
        let target = field(rng, &["\"local:j01\"", "local:j01", "'local:x'"]);
        let mut fields = vec![("target", target), ("every", field(rng, &["\"3600s\"", "89s", "34*fast", "1d"]))];
        for (name, good) in [
            ("confirmations", &["12", "0", "10000", "~"][..]),
            ("policyOID", &["\"\"", "1.3.6.1.4.1"][..]),
            ("jitter", &["10%", "\"5s\""][..]),
            ("unknown", &["1"][..]),
        ] {
            if rng.chance(15) {
                fields.push((name, field(rng, good)));
            }
        }
        if rng.chance(50) {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!(" {{{}}}\n", body.join(", "))
        } else {
            let pad = " ".repeat(indent);
            fields.iter().map(|(k, v)| format!("\n{pad}{k}: {v}")).collect::<String>() + "\n"
        }
    }

    /// A piece shaped like a namespace, with fields that fit its types or do not.
    fn namespace_piece(rng: &mut Rng) -> String {
        let mut out = format!("  \"bench:ns{:06}\":\n", rng.below(1_000_000));
        if rng.chance(40) {
            out.push_str(&format!("    description: {}\n", field(rng, &["Clearing house", "\"a: b\"", "~"])));
        }
        if rng.chance(30) {
            out.push_str(&format!("    witnesses:\n      min_required: {}\n      allowlist:", field(rng, &["1", "2"])));
            if rng.chance(50) {
                out.push_str(&format!(" [{}, did:key:z6Mk]\n", field(rng, &["did:vm:a", "'did:vm:c'"])));
            } else {
                out.push_str(&format!("\n      - {}\n      - did:vm:b\n", field(rng, &["did:vm:a", "\"did:vm:c\""])));
            }
        }
        if rng.chance(20) {
            out.push_str("    schema_policy: {allow: [ledger.append@1.0.x]}\n");
        }
        out.push_str("    cadence:\n");
        for kind in ["fast", "strong", "cold"] {
            if kind == "fast" || rng.chance(60) {
                out.push_str(&format!("      {kind}:{}", cadence_fields(rng, 8)));
            }
        }
        out
    }

    #[test]
    fn namespace_pieces_deserialize_as_from_value_reads_them() {
        let mut rng = Rng(0x005e_ed0f_5eed);
        let mut read_typed = 0;
        for _ in 0..5_000 {
            let text = namespace_piece(&mut rng);
            checked(&text);
            read_typed += usize::from(typed(&text).is_some());
            typed(&mutated(&mut rng, &text));
        }
        assert!(read_typed > 2_000, "only {read_typed} namespace pieces deserialized");
    }

    #[test]
    fn generated_pieces_read_as_serde_yaml_reads_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut valid, mut accepted, mut clean, mut clean_accepted) = (0, 0, 0, 0);
        for _ in 0..5_000 {
            let (text, tricky) = piece(&mut rng);
            let wrong = mutated(&mut rng, &text);
            checked(&wrong);
            typed(&wrong);
            typed(&text);
            let parsed = serde_yaml::from_str::<Value>(&text).is_ok();
            let got = checked(&text);
            if parsed {
                valid += 1;
                accepted += usize::from(got.is_some());
                if !tricky {
                    clean += 1;
                    clean_accepted += usize::from(got.is_some());
                }
            }
        }
        assert!(valid > 2_500, "{valid} of 5,000 generated pieces are valid YAML");
        assert!(accepted * 2 > valid, "read accepts only {accepted} of {valid} valid pieces");
        assert_eq!(clean_accepted, clean, "every plain piece is read");
    }

    #[test]
    fn the_namespaces_of_the_example_and_fixtures_read_as_serde_yaml_reads_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files =
            vec![root.join("namespaces.example.yaml"), root.join("tests/fixtures/namespaces.vm-spawn.yaml")];
        let corpus = root.join("tests/fixtures/corpus/namespaces");
        let mut listed: Vec<_> =
            std::fs::read_dir(&corpus).expect("corpus").map(|e| e.expect("entry").path()).collect();
        listed.sort();
        files.extend(listed);
        // Pieces written with what the subset leaves out on purpose.
        let refused = ["valid-aliases.yaml", "valid-all-cadences-block.yaml", "valid-quoted-names.yaml"];
        let mut read_pieces = 0;
        for file in files {
            let doc = std::fs::read_to_string(&file).expect("fixture");
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(ranges) = super::super::split::entries(doc.as_bytes()) else { continue };
            for range in ranges {
                let text = &doc[range];
                let got = checked(text);
                let spec = typed(text);
                if name.starts_with("valid-") && got.is_some() {
                    assert!(spec.is_some(), "{name}: not deserialized:\n{text}");
                }
                let valid = serde_yaml::from_str::<Value>(text).is_ok();
                if valid && !name.starts_with("invalid-") && !refused.contains(&name) {
                    assert!(got.is_some(), "{name}: not read:\n{text}");
                }
                read_pieces += usize::from(got.is_some());
            }
        }
        assert!(read_pieces > 50, "only {read_pieces} pieces read");
    }
}
