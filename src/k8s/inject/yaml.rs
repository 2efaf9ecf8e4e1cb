//! A small YAML document model for `podns inject`: parse, edit, emit.
//!
//! Why not serde: Kubernetes reads manifests as YAML 1.1 (`sigs.k8s.io/yaml` over go-yaml v2),
//! where plain `yes`, `on`, `y` are booleans and `0755` is octal, while every maintained Rust
//! YAML crate resolves YAML 1.2. Converting to typed values and back would re-type such
//! scalars. This model keeps each scalar's text and style exactly as written, so an edited
//! document means to Kubernetes what the original meant; only comments, anchors (expanded) and
//! flow layout are lost, and only in documents that `podns inject` changes (the others are
//! copied byte for byte by the caller).
//!
//! The parser is `saphyr-parser` (a maintained, pure-Rust, YAML 1.2 conformant event parser):
//! its events carry the style of every scalar, which is what this model needs.

use std::collections::HashMap;
use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

/// How a scalar is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted, as read from the input: written back verbatim so YAML 1.1 readers resolve it
    /// to the same type as before.
    Plain,
    /// `'...'`
    SingleQuoted,
    /// `"..."`
    DoubleQuoted,
    /// `|` or `>` block in the input; written as a literal block.
    Block,
    /// A string podns made: plain when that cannot be read as anything but this string,
    /// else double-quoted.
    Str,
    /// A number or boolean podns made: written plain.
    Raw,
}

/// A scalar: its text as the YAML value (after unescaping), style and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub value: String,
    pub style: Style,
    /// `!!str`, `!custom` or `!<uri>`, as written before the value.
    pub tag: Option<String>,
}

/// A YAML node. Mappings keep their keys in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A string value (quoted when needed).
    pub fn str(s: impl Into<String>) -> Node {
        Node::Scalar(Scalar { value: s.into(), style: Style::Str, tag: None })
    }

    /// A number or boolean, written as is.
    pub fn raw(s: impl Into<String>) -> Node {
        Node::Scalar(Scalar { value: s.into(), style: Style::Raw, tag: None })
    }

    /// A mapping from string keys.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
        Node::Map(entries.into_iter().map(|(k, v)| (Node::str(k), v)).collect())
    }

    /// The scalar text, for scalars.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(&s.value),
            _ => None,
        }
    }

    /// True for an explicit or implicit null (`key:`, `~`, `null`).
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(Scalar { value, style: Style::Plain | Style::Raw, tag: None })
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// True when a YAML 1.1 reader (Kubernetes) reads this scalar as boolean true.
    pub fn is_true(&self) -> bool {
        matches!(self, Node::Scalar(Scalar { value, style: Style::Plain | Style::Raw, tag: None })
            if matches!(value.as_str(), "true" | "True" | "TRUE" | "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"))
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of `key` in a mapping, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// Follows a path of mapping keys, mutably.
    pub fn path_mut(&mut self, keys: &[&str]) -> Option<&mut Node> {
        keys.iter().try_fold(self, |node, key| node.get_mut(key))
    }

    /// The string value of `key`, when it is a scalar.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Node::as_str)
    }

    /// Sets `key` to `value`: in place when present, else before the key `before` when that
    /// exists, else at the end. Does nothing on a non-mapping.
    pub fn set(&mut self, key: &str, value: Node, before: Option<&str>) {
        let Node::Map(entries) = self else { return };
        if let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            *v = value;
            return;
        }
        let at = before.and_then(|b| entries.iter().position(|(k, _)| k.as_str() == Some(b))).unwrap_or(entries.len());
        entries.insert(at, (Node::str(key), value));
    }

    /// Removes `key` from a mapping, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let Node::Map(entries) = self else { return None };
        let at = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(entries.remove(at).1)
    }

    /// True for an empty mapping or sequence, or a null.
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Node::Map(e) => e.is_empty(),
            Node::Seq(i) => i.is_empty(),
            Node::Scalar(_) => self.is_null(),
        }
    }

    /// The mapping under `key`, created (or made from a null) when missing. `None` when the
    /// value exists and is not a mapping.
    pub fn map_entry(&mut self, key: &str, before: Option<&str>) -> Option<&mut Node> {
        self.collection_entry(key, before, Node::Map(Vec::new()))
    }

    /// The sequence under `key`, created (or made from a null) when missing. `None` when the
    /// value exists and is not a sequence.
    pub fn seq_entry(&mut self, key: &str, before: Option<&str>) -> Option<&mut Node> {
        self.collection_entry(key, before, Node::Seq(Vec::new()))
    }

    fn collection_entry(&mut self, key: &str, before: Option<&str>, empty: Node) -> Option<&mut Node> {
        if !matches!(self, Node::Map(_)) {
            return None;
        }
        let usable = match self.get(key) {
            None => false,
            Some(v) if v.is_null() => false,
            Some(v) => std::mem::discriminant(v) == std::mem::discriminant(&empty),
        };
        if !usable {
            if self.get(key).is_some_and(|v| !v.is_null()) {
                return None;
            }
            self.set(key, empty, before);
        }
        self.get_mut(key)
    }
}

/// A parse error with its 1-based line in the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses every document of `text`.
pub fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut last_line;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| ParseError { line: e.marker().line(), message: e.info().to_owned() })?;
        last_line = span.start.line();
        let done = match event {
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                let tag = tag.map(|t| tag_text(&t));
                Some((Node::Scalar(Scalar { value: value.into_owned(), style, tag }), anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame { node: Node::Seq(Vec::new()), key: None, anchor });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame { node: Node::Map(Vec::new()), key: None, anchor });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let mut frame = stack
                    .pop()
                    .ok_or_else(|| ParseError { line: last_line, message: "unbalanced collection".into() })?;
                if let Node::Map(entries) = &mut frame.node {
                    resolve_merge_keys(entries);
                }
                Some((frame.node, frame.anchor))
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| ParseError { line: last_line, message: "alias to an unknown anchor".into() })?;
                Some((node, 0))
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {
                None
            }
        };
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame { node: Node::Seq(items), .. }) => items.push(node),
            Some(Frame { node: Node::Map(entries), key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
            Some(Frame { node: Node::Scalar(_), .. }) => unreachable!("scalars are never frames"),
        }
    }
    Ok(docs)
}

/// Resolves YAML 1.1 merge keys (`<<: *base`, `<<: [*a, *b]`), as Kubernetes's YAML reader
/// (go-yaml) does: the merged mappings' entries are added unless the mapping has the key itself,
/// and of several merged mappings the first wins (<https://yaml.org/type/merge.html>). Without
/// this, `hostNetwork: true` arriving through a merge key would be invisible to the checks.
fn resolve_merge_keys(entries: &mut Vec<(Node, Node)>) {
    let is_merge =
        |k: &Node| matches!(k, Node::Scalar(Scalar { value, style: Style::Plain, tag: None }) if value == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = std::mem::take(entries).into_iter().partition(|(k, _)| is_merge(k));
    for (_, value) in merges {
        let sources = match value {
            Node::Map(m) => vec![m],
            Node::Seq(items) => {
                items.into_iter().filter_map(|i| if let Node::Map(m) = i { Some(m) } else { None }).collect()
            }
            Node::Scalar(_) => Vec::new(),
        };
        for source in sources {
            for (k, v) in source {
                if !own.iter().any(|(o, _)| o.as_str().is_some() && o.as_str() == k.as_str()) {
                    own.push((k, v));
                }
            }
        }
    }
    *entries = own;
}

struct Frame {
    node: Node,
    key: Option<Node>,
    anchor: usize,
}

fn tag_text(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" || tag.handle.is_empty() {
        format!("!{}", tag.suffix)
    } else if tag.handle.starts_with('!') {
        format!("{}{}", tag.handle, tag.suffix)
    } else {
        format!("!<{}{}>", tag.handle, tag.suffix)
    }
}

/// Writes `node` as a block-style YAML document (no `---`), ending with a newline.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    match node {
        Node::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0, false),
        Node::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        Node::Map(_) => out.push_str("{}\n"),
        Node::Seq(_) => out.push_str("[]\n"),
        Node::Scalar(s) => {
            write_scalar(&mut out, s, 0, false);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Writes the entries of a mapping at column `col`; with `inline`, the first key goes on the
/// current line (after a sequence dash).
fn write_map(out: &mut String, entries: &[(Node, Node)], col: usize, mut inline: bool) {
    for (key, value) in entries {
        if !inline {
            indent(out, col);
        }
        inline = false;
        match key {
            Node::Scalar(s) if s.style != Style::Block && !s.value.contains('\n') && !s.value.is_empty() => {
                write_scalar(out, s, col, true)
            }
            Node::Scalar(s) => write_double_quoted(out, &s.value),
            // Kubernetes objects are JSON: their keys are strings. A collection key has no
            // JSON meaning, so it is written as the quoted text of its block form.
            other => write_double_quoted(out, emit(other).trim_end()),
        }
        out.push(':');
        write_value(out, value, col, false);
    }
}

/// Writes a value after `key:` (a mapping entry whose key starts at `col`) or after `-` (a
/// sequence item at `col`): scalars and empty collections on the same line; a non-empty mapping
/// on the next lines, except after `-`, where its first entry shares the dash's line.
fn write_value(out: &mut String, value: &Node, col: usize, after_dash: bool) {
    match value {
        Node::Scalar(s) if is_empty_plain(s) => out.push('\n'),
        Node::Scalar(s) => {
            out.push(' ');
            write_scalar(out, s, col + 2, false);
            out.push('\n');
        }
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) => {
            out.push(if after_dash { ' ' } else { '\n' });
            write_map(out, entries, col + 2, after_dash);
        }
        Node::Seq(items) => {
            out.push('\n');
            write_seq(out, items, col + 2);
        }
    }
}

fn write_seq(out: &mut String, items: &[Node], col: usize) {
    for item in items {
        indent(out, col);
        out.push('-');
        write_value(out, item, col, true);
    }
}

fn is_empty_plain(s: &Scalar) -> bool {
    s.value.is_empty() && s.tag.is_none() && matches!(s.style, Style::Plain | Style::Raw)
}

/// Writes a scalar; `content_col` is the indentation of a block scalar's lines.
fn write_scalar(out: &mut String, s: &Scalar, content_col: usize, is_key: bool) {
    if let Some(tag) = &s.tag {
        out.push_str(tag);
        out.push(' ');
    }
    let v = s.value.as_str();
    let multiline = v.contains('\n');
    match s.style {
        Style::Plain | Style::Raw if is_safe_verbatim_plain(v) => out.push_str(v),
        Style::Str if is_unambiguous_plain(v) => out.push_str(v),
        // A string podns made that has double quotes and no single ones (the JSON of
        // podns.io/original) reads better single-quoted than with every `"` escaped.
        Style::Str if !multiline && v.contains('"') && !v.contains('\'') && v.chars().all(is_printable) => {
            out.push('\'');
            out.push_str(v);
            out.push('\'');
        }
        Style::SingleQuoted if !multiline && v.chars().all(is_printable) => {
            out.push('\'');
            out.push_str(&v.replace('\'', "''"));
            out.push('\'');
        }
        Style::Block | Style::Plain | Style::Str if multiline && !is_key && can_be_literal(v) => {
            write_literal(out, v, content_col)
        }
        _ => write_double_quoted(out, v),
    }
}

/// A plain scalar read from the input can be written back as is unless it spanned lines or
/// would now read differently (the parser has already checked the rest of its syntax).
fn is_safe_verbatim_plain(v: &str) -> bool {
    !v.is_empty()
        && !v.contains('\n')
        && !v.starts_with([' ', '\t'])
        && !v.ends_with([' ', '\t', ':'])
        && !v.contains(": ")
        && !v.contains(" #")
        && v.chars().all(is_printable)
}

/// Words that YAML 1.1 or 1.2 readers resolve to booleans or null.
const SPECIAL_WORDS: [&str; 25] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on",
    "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// A string podns made is written plain only when no YAML 1.1 or 1.2 reader could read it as
/// anything else: it starts with a letter or `/` (or is a `--flag`), uses a small character set
/// and is not a boolean or null word.
fn is_unambiguous_plain(v: &str) -> bool {
    let first_ok = match v.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '/' => true,
        Some('-') => v.starts_with("--") && v.len() > 2,
        Some(c) if c.is_ascii_digit() => is_quantity(v) || is_dotted_numbers(v),
        _ => false,
    };
    first_ok
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "._/:@=+-".contains(c))
        && !v.ends_with(':')
        && !SPECIAL_WORDS.contains(&v)
}

/// Digits in three or more dot-separated groups, such as an IPv4 address: YAML's float
/// patterns allow one dot only.
fn is_dotted_numbers(v: &str) -> bool {
    v.split('.').count() >= 3 && v.split('.').all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
}

/// Digits then letters, such as the Kubernetes quantities `20m` and `32Mi`: no YAML reader takes
/// them for numbers unless the letters start an exponent or a base prefix.
fn is_quantity(v: &str) -> bool {
    let letters = v.trim_start_matches(|c: char| c.is_ascii_digit());
    !letters.is_empty()
        && letters.chars().all(|c| c.is_ascii_alphabetic())
        && !letters.starts_with(['e', 'E', 'x', 'X', 'o', 'O', 'b', 'B'])
}

fn is_printable(c: char) -> bool {
    c == '\t' || !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

/// A literal block keeps text whose first line does not start with white space (that would
/// need an indentation indicator) and that has no line of white space only (whose indentation
/// a reader could take for the block's).
fn can_be_literal(v: &str) -> bool {
    !v.starts_with([' ', '\t', '\n'])
        && v.chars().all(|c| c == '\n' || is_printable(c))
        && !v.split('\n').any(|l| !l.is_empty() && l.trim().is_empty())
}

/// A literal block scalar with the chomping indicator that keeps `v` exactly.
fn write_literal(out: &mut String, v: &str, content_col: usize) {
    let body = v.trim_end_matches('\n');
    let trailing = v.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, content_col);
            out.push_str(line);
        }
    }
    // With `|+`, newlines beyond the one that ends the last line are empty lines.
    for _ in 1..trailing {
        out.push('\n');
    }
}

fn write_double_quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let docs = parse(text).expect("parses");
        assert_eq!(docs.len(), 1);
        emit(&docs[0])
    }

    /// Values compared without styles: what a reader gets.
    fn values(node: &Node) -> Node {
        match node {
            Node::Scalar(s) => Node::str(s.value.clone()),
            Node::Seq(items) => Node::Seq(items.iter().map(values).collect()),
            Node::Map(entries) => Node::Map(entries.iter().map(|(k, v)| (values(k), values(v))).collect()),
        }
    }

    #[test]
    fn keeps_plain_yaml11_scalars_plain() {
        let out = round_trip("a: yes\nb: 0755\nc: on\nd: '0755'\ne: \"y\"\nf: 1e3\n");
        assert_eq!(out, "a: yes\nb: 0755\nc: on\nd: '0755'\ne: \"y\"\nf: 1e3\n");
    }

    #[test]
    fn made_strings_are_quoted_when_ambiguous() {
        let node = Node::map([
            ("a", Node::str("53")),
            ("b", Node::str("true")),
            ("c", Node::str("y")),
            ("d", Node::str("--upstream=10.96.0.10")),
            ("e", Node::str("ghcr.io/podns/podns:0.1.0")),
            ("f", Node::str("-5")),
            ("g", Node::str("a: b")),
            ("h", Node::raw("53")),
            ("i", Node::str("32Mi")),
            ("j", Node::str("1e3")),
            ("k", Node::str("line one\nline two\n")),
            ("l", Node::str("127.0.0.1")),
            ("m", Node::str("1.5")),
        ]);
        assert_eq!(
            emit(&node),
            "a: \"53\"\nb: \"true\"\nc: \"y\"\nd: --upstream=10.96.0.10\ne: ghcr.io/podns/podns:0.1.0\nf: \"-5\"\ng: \"a: b\"\nh: 53\ni: 32Mi\nj: \"1e3\"\nk: |\n  line one\n  line two\nl: 127.0.0.1\nm: \"1.5\"\n"
        );
    }

    #[test]
    fn block_scalars_keep_their_text() {
        for text in [
            "k: |\n  line one\n    indented\n\n  last\n",
            "k: |-\n  no newline at end\n",
            "k: |+\n  keep\n\n\nn: 1\n",
            "k: >\n  folded\n  text\n",
            "k:\n  - |2\n     leading space\n    next\n",
            "k: |\n  a\n     \n  b\n",
            "k: \"tab\\there\\u0001\"\n",
            "k: plain\n  continued\n\n  paragraph\n",
        ] {
            let original = parse(text).expect("parses");
            let emitted = emit(&original[0]);
            let again = parse(&emitted).unwrap_or_else(|e| panic!("re-parse of {emitted:?}: {e:?}"));
            assert_eq!(values(&again[0]), values(&original[0]), "{text:?} became {emitted:?}");
        }
    }

    #[test]
    fn nested_collections_round_trip() {
        let text = "a:\n  - b: 1\n    c:\n      - x\n      -\n        - y\n  - []\n  - {}\nd: {e: [1, 2], f: {g: h}}\n\"k: 1\": v\n";
        let original = parse(text).expect("parses");
        let emitted = emit(&original[0]);
        assert_eq!(values(&parse(&emitted).expect("re-parses")[0]), values(&original[0]), "{emitted}");
    }

    #[test]
    fn anchors_are_expanded() {
        let out = round_trip("a: &x {b: 1}\nc: *x\n");
        assert_eq!(out, "a:\n  b: 1\nc:\n  b: 1\n");
    }

    #[test]
    fn tags_are_kept() {
        let out = round_trip("a: !!str 123\nb: !custom x\n");
        assert_eq!(out, "a: !!str 123\nb: !custom x\n");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse("a: 1\nb: [\n").expect_err("unterminated flow sequence");
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn map_entries_are_created_in_place() {
        let mut node = parse("spec:\n  containers: []\n").expect("parses").remove(0);
        let spec = node.get_mut("spec").expect("spec");
        spec.seq_entry("initContainers", Some("containers")).expect("seq");
        spec.set("dnsPolicy", Node::str("None"), None);
        assert!(spec.map_entry("containers", None).is_none(), "a sequence is not a mapping");
        assert_eq!(emit(&node), "spec:\n  initContainers: []\n  containers: []\n  dnsPolicy: None\n");
    }

    #[test]
    fn json_strings_are_single_quoted_and_read_back() {
        let node = Node::map([("a", Node::str(r#"{"k":["v"],"n":null}"#)), ("b", Node::str(r#"it's "x""#))]);
        let text = emit(&node);
        assert_eq!(text, "a: '{\"k\":[\"v\"],\"n\":null}'\nb: \"it's \\\"x\\\"\"\n");
        let back = parse(&text).unwrap();
        assert_eq!(back[0].get_str("a"), node.get_str("a"));
        assert_eq!(back[0].get_str("b"), node.get_str("b"));
    }
}
