//! The configuration error every loader returns (the Envoy modules, the Collector plugin, `ordertrace
//! check`): the field it is about and what is wrong, as a kind tests can match. `Display` is what people
//! read — `routes[2].status.request_body: JSON pointer …` — in Envoy's log, the WIT error and the CLI.
//!
//! Imports only the two parsers whose errors it wraps (`template`, `jsonscan`), which import nothing of ours.

use std::fmt;

use crate::jsonscan::PointerError;
use crate::template::TemplateError;

/// A configuration error: the field (a path into the JSON config, empty for the document itself) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub kind: ConfigErrorKind,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The document is not JSON (the message gives the line and column).
    NotJson(String),
    /// A key the object does not have; `expected` lists the ones it does.
    UnknownField { key: String, expected: String },
    /// A required field is absent.
    MissingField(String),
    /// A value of the wrong JSON type.
    InvalidType { found: String, expected: String },
    /// A number out of range or not whole.
    InvalidValue { found: String, expected: String },
    /// A path template that does not parse.
    Template(TemplateError),
    /// A JSON pointer that does not parse.
    Pointer(PointerError),
    /// Any other rule the value breaks, said in words.
    Invalid(String),
}

impl ConfigError {
    /// A field that breaks a rule, said in words ([`ConfigErrorKind::Invalid`]).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::at(field, ConfigErrorKind::Invalid(message.into()))
    }

    pub fn at(field: impl Into<String>, kind: ConfigErrorKind) -> Self {
        ConfigError {
            field: field.into(),
            kind,
        }
    }

    /// What is wrong, without the field: the text after `field: ` in [`Display`](fmt::Display).
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigErrorKind::NotJson(m) => write!(f, "not valid JSON: {m}"),
            ConfigErrorKind::UnknownField { key, expected } => {
                write!(f, "unknown field `{key}`, {expected}")
            }
            ConfigErrorKind::MissingField(name) => write!(f, "missing field `{name}`"),
            ConfigErrorKind::InvalidType { found, expected } => {
                write!(f, "invalid type: {found}, expected {expected}")
            }
            ConfigErrorKind::InvalidValue { found, expected } => {
                write!(f, "invalid value: {found}, expected {expected}")
            }
            ConfigErrorKind::Template(e) => f.write_str(&e.message),
            ConfigErrorKind::Pointer(e) => f.write_str(&e.message),
            ConfigErrorKind::Invalid(m) => f.write_str(m),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.field, self.kind)
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_field_then_message() {
        let e = ConfigError::at(
            "routes[0].x",
            ConfigErrorKind::UnknownField {
                key: "x".into(),
                expected: "expected `name`".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "routes[0].x: unknown field `x`, expected `name`"
        );
        assert_eq!(e.message(), "unknown field `x`, expected `name`");
        let doc = ConfigError::at("", ConfigErrorKind::NotJson("at line 1 column 1".into()));
        assert_eq!(doc.to_string(), "not valid JSON: at line 1 column 1");
        let t = ConfigError::at(
            "routes[1].path",
            ConfigErrorKind::Template(TemplateError {
                template: "/a/{".into(),
                message: "unclosed `{`".into(),
            }),
        );
        assert_eq!(t.to_string(), "routes[1].path: unclosed `{`");
    }
}
