//! Reading config files: a TOML file into its raw struct, a folder of them,
//! or one file shared by two owners (`switchyard.toml`: the server and the
//! broker). Every error names the file, the line and column, the key, and
//! says what is wrong in users' words, not serde's ("a whole number ≥ 0",
//! not "usize").

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigProblem, Position, Problems};

/// The text of a config file.
pub fn read_text(file: &Path) -> Result<String, ConfigProblem> {
    std::fs::read_to_string(file)
        .map_err(|err| ConfigProblem::new(file, "", format!("cannot read: {err}")))
}

/// Reads `file` into `R`.
pub fn read<R: DeserializeOwned>(file: &Path) -> Result<R, ConfigProblem> {
    parse(file, &read_text(file)?)
}

/// Parses `text`, the contents of `file`, into `R`.
pub fn parse<R: DeserializeOwned>(file: &Path, text: &str) -> Result<R, ConfigProblem> {
    toml::from_str(text).map_err(|err| problem(file, text, &err))
}

/// Parses `text` into two owners' parts: `A` takes the top-level keys it
/// declares, `B` the others. A key that neither declares is reported with
/// every key there is, as one struct with `deny_unknown_fields` would.
pub fn parse_split<A: DeserializeOwned, B: DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<(A, B), Vec<ConfigProblem>> {
    let root = DeTable::parse(text).map_err(|err| vec![problem(file, text, &err)])?;
    let span = root.span();
    let mut rest = root.into_inner();
    let (a_keys, b_keys) = (keys_of::<A>(), keys_of::<B>());
    let every_key = b_keys.iter().chain(a_keys).copied().collect::<Vec<_>>();
    let unknown: Vec<ConfigProblem> = rest
        .keys()
        .filter(|key| !every_key.contains(&key.get_ref().as_ref()))
        .map(|key| ConfigProblem {
            at: Some(position(text, key.span().start)),
            ..ConfigProblem::new(
                file,
                key_name(key.get_ref()),
                format!(
                    "unknown key `{}`, expected one of {}",
                    key.get_ref(),
                    backquoted(&every_key)
                ),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let claimed: Vec<String> = rest
        .keys()
        .filter(|key| a_keys.contains(&key.get_ref().as_ref()))
        .map(|key| key.get_ref().to_string())
        .collect();
    let mut taken = DeTable::new();
    for key in claimed {
        let (key, value) = rest.remove_entry(key.as_str()).expect("a key just listed");
        taken.insert(key, value);
    }
    let a = deserialize_part(file, text, &span, taken)?;
    let b = deserialize_part(file, text, &span, rest)?;
    Ok((a, b))
}

/// `R` from `part`, some of the keys of `text`.
fn deserialize_part<'i, R: DeserializeOwned>(
    file: &Path,
    text: &'i str,
    span: &Range<usize>,
    part: DeTable<'i>,
) -> Result<R, Vec<ConfigProblem>> {
    let part = toml::de::Deserializer::from(Spanned::new(span.clone(), part));
    R::deserialize(part).map_err(|err| vec![problem(file, text, &err)])
}

/// Every `*.toml` file in `dir`, in name order, each read into `R`. A file
/// that does not read is reported and left out, so that one load lists the
/// problems of every file. A missing `dir` is no files when `missing_ok`;
/// `what` names the folder in the problem ("topics").
pub fn read_dir<R: DeserializeOwned>(
    dir: &Path,
    what: &str,
    missing_ok: bool,
    problems: &mut Problems,
) -> Vec<(PathBuf, R)> {
    let mut files = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect::<Vec<_>>(),
        Err(err) if missing_ok && err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            problems.push(ConfigProblem::new(
                dir,
                "",
                format!("cannot read the {what} directory: {err}"),
            ));
            Vec::new()
        }
    };
    files.sort();
    files
        .into_iter()
        .filter_map(|file| match read(&file) {
            Ok(raw) => Some((file, raw)),
            Err(problem) => {
                problems.push(problem);
                None
            }
        })
        .collect()
}

/// The keys a struct deserialized from a TOML table takes (its serde
/// field names), read from its `Deserialize` implementation.
pub fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(KeyProbe(&mut keys));
    keys
}

/// A deserializer that only listens for the field names a struct asks for.
struct KeyProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for KeyProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only the keys were wanted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A TOML error of `file` as a problem: where, which key, and why in plain
/// words.
fn problem(file: &Path, text: &str, err: &toml::de::Error) -> ConfigProblem {
    let mut problem = ConfigProblem::new(file, "", plain(err.message()));
    // An empty span at the start stands for the whole file (a key missing
    // from its top level): no place to point at.
    if let Some(span) = err.span().filter(|span| span.end > 0) {
        problem.at = Some(position(text, span.start));
        if let Ok(root) = DeTable::parse(text) {
            let (key, datetime) = key_at(root.get_ref(), &span);
            problem.key = key;
            // serde sees a TOML date-time as a table.
            if datetime && let Some(rest) = problem.reason.strip_prefix("a table is not") {
                problem.reason = format!("a date-time is not{rest}");
            }
        }
    }
    problem
}

fn position(text: &str, offset: usize) -> Position {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The path (`webhooks[0].scheme`) of the innermost key or value that holds
/// `span` ("" when none does: the whole file), and whether that is a
/// date-time value.
fn key_at(root: &DeTable<'_>, span: &Range<usize>) -> (String, bool) {
    let mut best: Option<Place> = None;
    walk_table(root, "", span, &mut best);
    best.map_or_else(Default::default, |place| (place.path, place.datetime))
}

/// The innermost key or value found so far that holds an error's span.
struct Place {
    size: usize,
    path: String,
    datetime: bool,
}

fn walk_table(table: &DeTable<'_>, path: &str, span: &Range<usize>, best: &mut Option<Place>) {
    for (key, value) in table {
        let path = match path {
            "" => key_name(key.get_ref()),
            _ => format!("{path}.{}", key_name(key.get_ref())),
        };
        consider(&key.span(), &path, false, span, best);
        walk_value(value, &path, span, best);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    span: &Range<usize>,
    best: &mut Option<Place>,
) {
    let datetime = matches!(value.get_ref(), DeValue::Datetime(_));
    consider(&value.span(), path, datetime, span, best);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, span, best),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{index}]"), span, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` when its `place` holds `span` more tightly than the best so
/// far (or as tightly and deeper).
fn consider(
    place: &Range<usize>,
    path: &str,
    datetime: bool,
    span: &Range<usize>,
    best: &mut Option<Place>,
) {
    let holds = place.start <= span.start && span.end <= place.end;
    let size = place.end - place.start;
    if holds && best.as_ref().is_none_or(|best| size <= best.size) {
        *best = Some(Place {
            size,
            path: path.to_owned(),
            datetime,
        });
    }
}

/// A key as it is written in a path: bare when it can be, else quoted.
fn key_name(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn backquoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A serde or TOML message in users' words: TOML's names for keys, tables
/// and lists, and what a value should be instead of a Rust type.
pub fn plain(message: &str) -> String {
    let message = message
        .replacen("unknown field", "unknown key", 1)
        .replacen("missing field", "missing key", 1)
        .replacen("duplicate field", "duplicate key", 1)
        .replacen(", there are no fields", ": this table takes no keys", 1);
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(kind)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return format!("{} is not {}", plain_found(found), plain_expected(expected));
        }
    }
    message
}

/// serde's `Unexpected`: "string \"x\"", "integer `5`", "sequence".
fn plain_found(found: &str) -> String {
    for prefix in ["string ", "integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(prefix) {
            return value.trim_matches('`').to_owned();
        }
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's `expected` text: a Rust type, or a visitor's own words.
fn plain_expected(expected: &str) -> String {
    let range = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    match expected {
        "usize" | "u64" | "u128" => "a whole number ≥ 0".to_owned(),
        "u32" => range(0, u32::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u8" => range(0, u8::MAX.into()),
        "isize" | "i64" | "i128" => "a whole number".to_owned(),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "f64" | "f32" => "a number".to_owned(),
        "a borrowed string" | "a string" | "a character" => "a string".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "path string" => "a path".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        name: String,
        #[serde(default)]
        partitions: usize,
        #[serde(default)]
        rate: Option<f64>,
        #[serde(default)]
        open: bool,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        table: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        count: u32,
    }

    fn error(text: &str) -> String {
        parse::<Raw>(Path::new("f.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_say_where_which_key_and_why_in_plain_words() {
        assert_eq!(
            error("name = \"a\"\npartitions = \"two\"\n"),
            "f.toml:2:14: partitions: \"two\" is not a whole number ≥ 0"
        );
        assert_eq!(
            error("name = \"a\"\npartitions = -1\n"),
            "f.toml:2:14: partitions: -1 is not a whole number ≥ 0"
        );
        assert_eq!(error("name = 5\n"), "f.toml:1:8: name: 5 is not a string");
        assert_eq!(
            error("name = 1979-05-27\n"),
            "f.toml:1:8: name: a date-time is not a string"
        );
        assert_eq!(
            error("name = \"a\"\nopen = \"yes\"\n"),
            "f.toml:2:8: open: \"yes\" is not true or false"
        );
        assert_eq!(
            error("name = \"a\"\nrate = \"fast\"\n"),
            "f.toml:2:8: rate: \"fast\" is not a number"
        );
        assert_eq!(
            error("name = \"a\"\nitems = \"x\"\n"),
            "f.toml:2:9: items: \"x\" is not a list"
        );
        assert_eq!(
            error("name = \"a\"\n[[items]]\ncount = -2\n"),
            "f.toml:3:9: items[0].count: -2 is not a whole number from 0 to 4294967295"
        );
        assert_eq!(
            error("name = \"a\"\n[table]\nk = 1\n"),
            "f.toml:3:5: table.k: 1 is not a string"
        );
        let unknown = error("name = \"a\"\npartitons = 2\n");
        assert!(
            unknown.starts_with("f.toml:2:1: partitons: unknown key `partitons`, expected one of"),
            "{unknown}"
        );
        assert_eq!(error("partitions = 1\n"), "f.toml: missing key `name`");
        assert_eq!(
            error("name = \"a\"\n[[items]]\n"),
            "f.toml:2:1: items[0]: missing key `count`"
        );
        assert_eq!(
            error("name = \"a\n"),
            "f.toml:1:10: invalid basic string, expected `\"`"
        );
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Server {
        listen: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Backend {
        broker: Option<String>,
        #[serde(default)]
        redis: BTreeMap<String, u32>,
    }

    #[test]
    fn a_shared_file_splits_by_owner_and_refuses_keys_neither_takes() {
        let path = Path::new("s.toml");
        let (backend, server): (Backend, Server) =
            parse_split(path, "listen = \"x\"\nbroker = \"redis\"\n[redis]\na = 1\n").unwrap();
        assert_eq!(server.listen.as_deref(), Some("x"));
        assert_eq!(backend.broker.as_deref(), Some("redis"));
        assert_eq!(backend.redis["a"], 1);

        let problems = parse_split::<Backend, Server>(path, "brokr = 1\n").unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "s.toml:1:1: brokr: unknown key `brokr`, expected one of `listen`, `broker`, `redis`"
        );
        let problems = parse_split::<Backend, Server>(path, "[redis]\na = \"x\"\n").unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "s.toml:2:5: redis.a: \"x\" is not a whole number from 0 to 4294967295"
        );
    }

    #[test]
    fn keys_are_the_serde_field_names() {
        assert_eq!(keys_of::<Server>(), ["listen"]);
        assert_eq!(keys_of::<Backend>(), ["broker", "redis"]);
    }
}
