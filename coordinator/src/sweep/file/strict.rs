//! Sweep-file TOML, read strictly: a value of the wrong type is an error (`epochs = "5"`,
//! `version = 1.4`, `nesterov = "yes"`), never coerced, and every error says where it is —
//! `line:column`, the key path (`training.epochs`, `grid.epsilons[2]`) and why.
//!
//! Why not the `config` crate (which still reads process settings): it converts between types
//! (`"5"` → 5, `1.4` → 1, `true` → 1) and forgets where a value came from. The `toml` crate's
//! deserializer keeps each value's span; the key path is found by walking the parsed document
//! to the innermost key or value that holds the span, because serde's error carries only the
//! span. Everything quoted from the file in a message is cut short ([`MAX_QUOTED`]): a 200 KB
//! line must not become a 200 KB error (through `submit` a long one would crowd out the reason).

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::{SWEEP_FILE_VERSION, SweepFile};

/// Most characters of an error message (file text quoted in it included).
pub const MAX_QUOTED: usize = 240;

/// Where in the file an error is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line and column (in characters) of the error's first byte; `None` when the
    /// error concerns the whole file (an empty one).
    pub at: Option<(usize, usize)>,
    /// The key path (`training.epochs`, `grid.epsilons[1]`), when the error is inside a key.
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "{line}:{column}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Parses `text` as a sweep file: the TOML syntax, then `version` (so an old or future file
/// gets a version error, not a key error), then every key and type.
pub fn parse(text: &str) -> Result<SweepFile, ParseError> {
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(e) => return Err(error_at(text, &e)),
    };
    check_version(text, &document)?;
    SweepFile::deserialize(toml::de::Deserializer::from(document)).map_err(|e| error_at(text, &e))
}

/// `version = 1`, exactly: an integer, present, the one this build reads.
fn check_version(text: &str, document: &toml::Spanned<DeTable<'_>>) -> Result<(), ParseError> {
    let Some(version) = document.get_ref().get("version") else {
        return Err(ParseError {
            at: None,
            key: None,
            message: format!("missing `version = {SWEEP_FILE_VERSION}` at the top of the file"),
        });
    };
    let fail = |message: String| ParseError {
        at: Some(line_column(text, version.span().start)),
        key: Some("version".to_owned()),
        message,
    };
    match version.get_ref() {
        DeValue::Integer(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
            Ok(v) if v == i64::from(SWEEP_FILE_VERSION) => Ok(()),
            _ => Err(fail(format!(
                "unsupported sweep file version {} (this build reads version {SWEEP_FILE_VERSION})",
                cut(n.as_str())
            ))),
        },
        other => Err(fail(format!(
            "expected an integer (`version = {SWEEP_FILE_VERSION}`), found {} {}",
            article(other.type_str()),
            cut(quoted(text, version.span()).as_str())
        ))),
    }
}

/// A `toml` error as a [`ParseError`]: position, key path, and a message in the file's terms.
fn error_at(text: &str, e: &toml::de::Error) -> ParseError {
    let Some(span) = e.span() else {
        return ParseError {
            at: None,
            key: None,
            message: cut(&reword(e.message())),
        };
    };
    // A document that did not parse still has a best-effort tree to find the key in.
    let (document, _) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    if !key_path(document.get_ref(), &span, &mut path) {
        path.clear();
    }
    let key = if path.is_empty() {
        line_key(text, span.start)
    } else {
        Some(join(&path))
    };
    ParseError {
        at: Some(line_column(text, span.start)),
        key,
        message: cut(&reword(e.message())),
    }
}

/// The key assigned on the line of byte `at`, under the `[table]` above it: how a syntax error
/// the parser could not place in a tree (nesting past its recursion limit) still names a key.
fn line_key(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.split('\n').next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let simple = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'"' | b' '))
    };
    if !simple(key) {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| simple(t));
    Some(cut_to(
        &match table {
            Some(table) => format!("{table}.{key}"),
            None => key.to_owned(),
        },
        64,
    ))
}

/// One step of a key path.
enum Step {
    Key(String),
    Index(usize),
}

fn join(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{:?}", cut_to(k, 64)));
                }
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// Appends to `path` the keys (and array indices) leading to the innermost entry of `table`
/// whose key or value holds `span`; whether one does. A `[table]`'s own span is its header
/// only, so tables are searched whatever their span.
fn key_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Step>) -> bool {
    for (key, value) in table.iter() {
        path.push(Step::Key(key.get_ref().to_string()));
        if contains(&key.span(), span) || value_path(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn value_path(
    value: &toml::Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => key_path(table, span, path) || contains(&value.span(), span),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                if value_path(item, span, path) {
                    return true;
                }
                path.pop();
            }
            contains(&value.span(), span)
        }
        _ => contains(&value.span(), span),
    }
}

/// 1-based line and column (in characters) of byte `at` of `text`.
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The file's text at `span`, cut short.
fn quoted(text: &str, span: Range<usize>) -> String {
    text.get(span).map_or_else(String::new, |s| cut_to(s, 64))
}

/// `s` cut to [`MAX_QUOTED`] characters.
fn cut(s: &str) -> String {
    cut_to(s, MAX_QUOTED)
}

/// `s` cut to `max` characters, with `… (N bytes)` when cut.
pub fn cut_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()),
    }
}

fn article(noun: &str) -> String {
    match noun.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {noun}"),
        _ => format!("a {noun}"),
    }
}

/// serde's wording in the file's terms: `invalid type: string "5", expected u32` becomes
/// `expected an integer in 0..=4294967295, found a string "5"`; `invalid value: integer
/// `4294967296`, expected u32` says the number is out of range. Other messages pass through.
fn reword(message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, found {}",
            expected_word(expected),
            found_word(found)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let word = expected_word(expected);
        if word != expected {
            return format!("{} is out of range: expected {word}", found_word(found));
        }
        return format!("expected {expected}, found {}", found_word(found));
    }
    // `unknown variant `Linf`, expected `linf` or `l2`` (and unknown fields): the closest.
    for prefix in ["unknown variant `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, expected)) = rest.split_once('`')
        {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return format!("{message}{}", advsweep_core::suggest::hint(name, known));
        }
    }
    message.to_owned()
}

/// serde's name of the type wanted, as a user would say it.
fn expected_word(expected: &str) -> String {
    match expected {
        "u8" => "an integer in 0..=255".to_owned(),
        "u16" => "an integer in 0..=65535".to_owned(),
        "u32" => format!("an integer in 0..={}", u32::MAX),
        "u64" => format!("an integer in 0..={}", u64::MAX),
        "i32" => format!("an integer in {}..={}", i32::MIN, i32::MAX),
        "i64" => format!("an integer in {}..={}", i64::MIN, i64::MAX),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        struct_name if struct_name.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's description of the value found (`string "5"`, `integer `7``, `floating point
/// `1.5``, `boolean `true``, `sequence`, `map`), with an article.
fn found_word(found: &str) -> String {
    for (serde_word, ours) in [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
    ] {
        if let Some(rest) = found.strip_prefix(serde_word)
            && (rest.is_empty() || rest.starts_with(' '))
        {
            // serde's `integer `1e20` as i128`: the width is ours, not the user's business.
            let rest = rest
                .strip_suffix(" as i128")
                .or_else(|| rest.strip_suffix(" as u128"))
                .unwrap_or(rest);
            return format!("{ours}{}", cut_to(rest, 64));
        }
    }
    cut_to(found, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_from_one() {
        assert_eq!(line_column("a = 1\nbé = 2", 0), (1, 1));
        assert_eq!(line_column("a = 1\nbé = 2", 6), (2, 1));
        assert_eq!(line_column("a = 1\nbé = 2", 10), (2, 4));
        assert_eq!(line_column("", 5), (1, 1));
    }

    #[test]
    fn serde_wording_is_reworded() {
        assert_eq!(
            reword("invalid type: string \"5\", expected u32"),
            "expected an integer in 0..=4294967295, found a string \"5\""
        );
        assert_eq!(
            reword("invalid value: integer `4294967296`, expected u32"),
            "an integer `4294967296` is out of range: expected an integer in 0..=4294967295"
        );
        assert_eq!(
            reword("invalid type: floating point `1.5`, expected a boolean"),
            "expected a boolean, found a float `1.5`"
        );
        assert_eq!(reword("missing field `name`"), "missing field `name`");
    }

    #[test]
    fn long_text_is_cut_at_a_character() {
        let s = "é".repeat(300);
        let c = cut_to(&s, 10);
        assert!(
            c.starts_with(&"é".repeat(10)) && c.ends_with("(600 bytes)"),
            "{c}"
        );
        assert_eq!(cut_to("short", 10), "short");
    }
}
