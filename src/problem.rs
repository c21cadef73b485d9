//! What every config loader (switchyard.toml, topics, webhook sources,
//! handlers) reports and how it reads the values they share, so that every
//! file's problems read alike: the file, the key, and why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in a config file: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl ConfigProblem {
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

/// A duration longer than zero, written like `example` ("15s", "7d");
/// the error is the reason to report.
pub fn duration(text: &str, example: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{text:?} must be longer than zero")),
        Err(err) => Err(format!(
            "{text:?} is not a duration like \"{example}\" ({err})"
        )),
    }
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
    use super::Piece;

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
}
