//! The config kit: what every config loader (switchyard.toml, topics,
//! webhook sources, handlers, each broker backend's settings) reports, the
//! [`Problems`] collector they report into, and the readers of the values
//! they share (durations, sizes, environment variables, one-of choices), so
//! that every file's problems read alike: the file, the key, and why.
//! Reading the TOML files themselves is [`files`].

pub mod files;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// One problem in a config file: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
    /// Where in the file, when it is known (TOML syntax and type errors).
    pub at: Option<Position>,
}

/// A place in a text file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl ConfigProblem {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            key: key.into(),
            reason: reason.into(),
            at: None,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = self.at {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Collects the problems of one config file (and of the files it stands
/// for, such as a folder's), so that a load reports every problem rather
/// than the first. Each reader returns a usable value (the default) after
/// reporting, so that validation goes on.
#[derive(Debug)]
pub struct Problems {
    file: PathBuf,
    found: Vec<ConfigProblem>,
}

impl Problems {
    /// Problems of `file`: keys reported with [`Problems::problem`] are its.
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            found: Vec::new(),
        }
    }

    /// Reports a problem with `key` of this file.
    pub fn problem(&mut self, key: &str, reason: impl Into<String>) {
        self.found.push(ConfigProblem::new(&self.file, key, reason));
    }

    /// Reports a problem of any file.
    pub fn push(&mut self, problem: ConfigProblem) {
        self.found.push(problem);
    }

    /// The value of another loader's result, whose problems join these.
    pub fn take<T>(&mut self, result: Result<T, Vec<ConfigProblem>>) -> Option<T> {
        result
            .map_err(|mut found| self.found.append(&mut found))
            .ok()
    }

    /// `value` when nothing was reported, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<ConfigProblem>> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(self.found)
        }
    }

    /// A duration longer than zero (see [`duration`]), or `default` when
    /// none is given or after reporting why `text` is not one.
    pub fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        self.optional_duration(key, text, default)
            .unwrap_or(default)
    }

    /// A duration longer than zero, if one is given; the error's example is
    /// `example`.
    pub fn optional_duration(
        &mut self,
        key: &str,
        text: Option<&str>,
        example: Duration,
    ) -> Option<Duration> {
        let text = text?;
        duration(text, &format_duration(example))
            .map_err(|reason| self.problem(key, reason))
            .ok()
    }

    /// A size given as text (a flag), in bytes; `None` after reporting why
    /// it is not one.
    pub fn size(&mut self, key: &str, text: &str) -> Option<u64> {
        parse_size(text)
            .map_err(|reason| self.problem(key, reason))
            .ok()
    }

    /// The value of the environment variable `name`, or "" after reporting
    /// that it is not set.
    pub fn env(&mut self, key: &str, name: &str) -> String {
        env_value(name).unwrap_or_else(|| {
            self.problem(key, format!("environment variable {name} is not set"));
            String::new()
        })
    }

    /// The value `text` names among `choices`; `None` after reporting the
    /// names it could have been.
    pub fn one_of<T: Clone>(&mut self, key: &str, text: &str, choices: &[(&str, T)]) -> Option<T> {
        let found = choices.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            self.problem(key, format!("{text:?} is not {}", either(&names)));
        }
        found.map(|(_, value)| value.clone())
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn either(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The one duration parser: "500ms", "15s", "1h 30m", "7d" (humantime's
/// forms). The error names the text and an example, to report as it is.
pub fn parse_duration(text: &str, example: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration like \"{example}\" ({err})"))
}

/// A duration longer than zero, written like `example` ("15s", "7d");
/// the error is the reason to report.
pub fn duration(text: &str, example: &str) -> Result<Duration, String> {
    match parse_duration(text, example)? {
        d if d.is_zero() => Err(format!("{text:?} must be longer than zero")),
        d => Ok(d),
    }
}

/// A duration the way users write it: "10ms", "5m", "1day".
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The one size parser: a number of bytes, or "1MiB", "64 KB" (bytesize's
/// forms). The error names the text and an example.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("{text:?} is not a size like \"1MiB\""))
}

/// A size in a config file: a whole number of bytes, or a string for
/// [`parse_size`]. Its errors read like a flag's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"1MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Size, E> {
                u64::try_from(bytes)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{bytes} is not a size like \"1MiB\"")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Size, E> {
                parse_size(text).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// The value of an environment variable, when it is set and not empty (an
/// unset variable in docker-compose arrives empty).
pub fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// What the help of the flag `--long` states as its default (the text of
/// its `[default: …]`), for tests that keep help texts and constants agreed.
#[cfg(test)]
pub(crate) fn stated_default(command: &clap::Command, long: &str) -> Option<String> {
    let arg = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))?;
    let help = arg.get_help()?.to_string();
    let (_, rest) = help.split_once("[default: ")?;
    let end = rest.find([']', ','])?;
    Some(rest[..end].to_owned())
}

/// A piece of a `{…}` template: text, or the name between braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// Splits a template such as `https://x/{data/id}` or `{timestamp}.{body}`
/// into its pieces; an unclosed `{` is the error.
pub fn template(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            pieces.push(Piece::Literal(&rest[..start]));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
        pieces.push(Piece::Placeholder(&rest[start + 1..start + end]));
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{Piece, Problems, Size};

    #[test]
    fn templates_split_into_text_and_placeholders() {
        assert_eq!(
            super::template("a{b}c{d}").unwrap(),
            [
                Piece::Literal("a"),
                Piece::Placeholder("b"),
                Piece::Literal("c"),
                Piece::Placeholder("d")
            ]
        );
        assert!(super::template("x{open").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn durations_name_the_text_and_an_example() {
        assert_eq!(
            super::duration("90s", "1m"),
            Ok(std::time::Duration::from_secs(90))
        );
        let zero = super::duration("0s", "1m").unwrap_err();
        assert!(zero.contains("longer than zero"), "{zero}");
        let bad = super::duration("soon", "1m").unwrap_err();
        assert!(
            bad.starts_with("\"soon\" is not a duration like \"1m\""),
            "{bad}"
        );
    }

    #[test]
    fn readers_report_by_key_and_fall_back_to_the_default() {
        let mut problems = Problems::new(Path::new("s.toml"));
        let default = Duration::from_millis(10);
        assert_eq!(problems.duration("a", None, default), default);
        assert_eq!(
            problems.duration("a", Some("2s"), default),
            Duration::from_secs(2)
        );
        assert_eq!(problems.duration("b", Some("soon"), default), default);
        assert_eq!(problems.size("c", "1KiB"), Some(1024));
        assert_eq!(problems.size("d", "lots"), None);
        let choices = [("always", 1), ("interval", 2)];
        assert_eq!(problems.one_of("e", "interval", &choices), Some(2));
        assert_eq!(problems.one_of("f", "never", &choices), None);
        let found = problems.finish(()).unwrap_err();
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "s.toml: b: \"soon\" is not a duration like \"10ms\" (expected number at 0)",
                "s.toml: d: \"lots\" is not a size like \"1MiB\"",
                "s.toml: f: \"never\" is not \"always\" or \"interval\"",
            ]
        );
    }

    #[test]
    fn sizes_are_numbers_or_text() {
        #[derive(serde::Deserialize)]
        struct File {
            size: Size,
        }
        let size = |text: &str| toml::from_str::<File>(text).map(|file| file.size.0);
        assert_eq!(size("size = 1024").unwrap(), 1024);
        assert_eq!(size("size = \"1MiB\"").unwrap(), 1 << 20);
        assert!(
            size("size = -1")
                .unwrap_err()
                .message()
                .contains("not a size")
        );
        assert!(
            size("size = \"lots\"")
                .unwrap_err()
                .message()
                .contains("not a size")
        );
    }

    #[test]
    fn choices_read_as_a_list() {
        assert_eq!(super::either(&["a"]), "\"a\"");
        assert_eq!(super::either(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
