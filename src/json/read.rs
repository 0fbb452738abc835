//! Typed fields out of a parsed JSON configuration ([`crate::json::Value`]), with errors that name the
//! field's path (`routes[1].status.request_body`, `collector.flush_ms`).
//!
//! Every section of the configuration (edge, AMQP, collector plugin) is read the same way:
//!
//! ```text
//! let mut o = Object::new(value, "collector", &["cluster", "authority", "path"])?; // unknown keys rejected
//! let cluster = o.req_string("cluster")?;          // missing: `collector.cluster: missing field `cluster``
//! let authority = o.opt_string("authority")?;      // absent or null: None
//! let path = o.string_or("path", "/v1/traces")?;   // absent: the default; null: an error
//! o.finish()?;
//! ```
//!
//! The rules are those of the serde derives they replace: a field with a default (`string_or`, `bool_or`,
//! ...) must have the right type when present, `null` included; an optional field (`opt_*`) also accepts
//! `null` as "not set". Integers must be written as integers (`1.0` and `1e3` are not) and be within the
//! field's type (negative numbers never are). Objects whose keys are data (`attributes`, `sla`) come back as
//! `(key, value)` pairs sorted by key.

use crate::error::{ConfigError, ConfigErrorKind};
use crate::json::Value;

/// The path of a member: `parent.name`, or `name` at the top of the document.
pub fn member_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The path of an array element: `parent[i]`.
pub fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `invalid type: string "x", expected a boolean`, at `path`.
pub fn invalid_type(v: &Value, path: &str, expected: &str) -> ConfigError {
    ConfigError::at(
        path,
        ConfigErrorKind::InvalidType {
            found: v.describe(),
            expected: expected.to_string(),
        },
    )
}

fn invalid_value(n: &crate::json::Number, path: &str, expected: String) -> ConfigError {
    ConfigError::at(
        path,
        ConfigErrorKind::InvalidValue {
            found: n.as_str().to_string(),
            expected,
        },
    )
}

/// A JSON object read field by field. Keys not in the field list are rejected up front (so a misspelt key
/// is reported before what its absence causes); [`Object::finish`] checks that every field given was read.
pub struct Object {
    path: String,
    fields: &'static [&'static str],
    /// Members not read yet.
    members: Vec<(String, Value)>,
}

impl Object {
    /// `v` must be an object whose keys are all in `fields`.
    pub fn new(
        v: Value,
        path: &str,
        fields: &'static [&'static str],
    ) -> Result<Object, ConfigError> {
        let Value::Object(members) = v else {
            return Err(invalid_type(&v, path, "an object"));
        };
        if let Some((key, _)) = members.iter().find(|(k, _)| !fields.contains(&k.as_str())) {
            return Err(unknown_field(path, key, fields));
        }
        Ok(Object {
            path: path.to_string(),
            fields,
            members,
        })
    }

    /// The path of the field `name` of this object.
    pub fn path_of(&self, name: &str) -> String {
        member_path(&self.path, name)
    }

    /// The value of `name` (`null` included), taken out of the object; `None` when absent.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.members.iter().position(|(k, _)| k == name)?;
        Some(self.members.swap_remove(i).1)
    }

    /// The value of `name` under its first spelling present; two spellings at once are an error.
    pub fn take_aliased(
        &mut self,
        name: &str,
        aliases: &[&str],
    ) -> Result<Option<Value>, ConfigError> {
        let mut found = self.take(name);
        for alias in aliases {
            if let Some(v) = self.take(alias) {
                if found.is_some() {
                    return Err(ConfigError::new(
                        self.path_of(name),
                        format!("duplicate field `{name}` (also spelt `{alias}`)"),
                    ));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    /// A required field, with its path.
    pub fn required(&mut self, name: &str) -> Result<(Value, String), ConfigError> {
        match self.take(name) {
            Some(v) => Ok((v, self.path_of(name))),
            None => Err(ConfigError::at(
                self.path_of(name),
                ConfigErrorKind::MissingField(name.to_string()),
            )),
        }
    }

    /// An optional field converted by `f`; absent or `null` is `None`.
    pub fn opt<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(Value, &str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => f(v, &self.path_of(name)).map(Some),
        }
    }

    /// A field with a default converted by `f`; absent is the default, `null` goes to `f` (and is refused).
    pub fn or_else<T>(
        &mut self,
        name: &str,
        default: impl FnOnce() -> T,
        f: impl FnOnce(Value, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.take(name) {
            None => Ok(default()),
            Some(v) => f(v, &self.path_of(name)),
        }
    }

    pub fn req_string(&mut self, name: &str) -> Result<String, ConfigError> {
        let (v, path) = self.required(name)?;
        string(v, &path)
    }

    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        self.opt(name, string)
    }

    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.opt(name, boolean)
    }

    pub fn opt_u32(&mut self, name: &str) -> Result<Option<u32>, ConfigError> {
        self.opt(name, uint32)
    }

    pub fn opt_usize(&mut self, name: &str) -> Result<Option<usize>, ConfigError> {
        self.opt(name, uint_size)
    }

    pub fn opt_strings(&mut self, name: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.opt(name, strings)
    }

    pub fn string_or(&mut self, name: &str, default: &str) -> Result<String, ConfigError> {
        self.or_else(name, || default.to_string(), string)
    }

    pub fn bool_or(&mut self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.or_else(name, || default, boolean)
    }

    pub fn u64_or(&mut self, name: &str, default: u64) -> Result<u64, ConfigError> {
        self.or_else(name, || default, uint64)
    }

    pub fn u32_or(&mut self, name: &str, default: u32) -> Result<u32, ConfigError> {
        self.or_else(name, || default, uint32)
    }

    pub fn usize_or(&mut self, name: &str, default: usize) -> Result<usize, ConfigError> {
        self.or_else(name, || default, uint_size)
    }

    pub fn f64_or(&mut self, name: &str, default: f64) -> Result<f64, ConfigError> {
        self.or_else(name, || default, float)
    }

    /// Every field in the list must have been read: a field listed but never read would be silently
    /// ignored, so it is refused like an unknown one.
    pub fn finish(self) -> Result<(), ConfigError> {
        match self.members.first() {
            None => Ok(()),
            Some((key, _)) => Err(unknown_field(&self.path, key, self.fields)),
        }
    }
}

fn unknown_field(path: &str, key: &str, fields: &[&str]) -> ConfigError {
    let list = fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let expected = match fields {
        [] => "there are no fields".to_string(),
        [_] => format!("expected {list}"),
        _ => format!("expected one of {list}"),
    };
    ConfigError::at(
        member_path(path, key),
        ConfigErrorKind::UnknownField {
            key: key.to_string(),
            expected,
        },
    )
}

pub fn string(v: Value, path: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(invalid_type(&other, path, "a string")),
    }
}

pub fn boolean(v: Value, path: &str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(invalid_type(&other, path, "a boolean")),
    }
}

/// A non-negative integer up to `max`.
fn uint(v: &Value, path: &str, max: u64) -> Result<u64, ConfigError> {
    let Value::Number(n) = v else {
        return Err(invalid_type(v, path, "a non-negative integer"));
    };
    match n.as_u64() {
        Some(x) if x <= max => Ok(x),
        Some(_) => Err(invalid_value(n, path, format!("an integer at most {max}"))),
        None if n.is_integer() => Err(invalid_value(
            n,
            path,
            format!("a non-negative integer at most {max}"),
        )),
        None => Err(invalid_value(
            n,
            path,
            "a whole number (no fraction, no exponent)".to_string(),
        )),
    }
}

pub fn uint64(v: Value, path: &str) -> Result<u64, ConfigError> {
    uint(&v, path, u64::MAX)
}

pub fn uint32(v: Value, path: &str) -> Result<u32, ConfigError> {
    let x = uint(&v, path, u64::from(u32::MAX))?;
    u32::try_from(x).map_err(|_| invalid_type(&v, path, "a 32-bit unsigned integer"))
}

pub fn uint_size(v: Value, path: &str) -> Result<usize, ConfigError> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    let x = uint(&v, path, max)?;
    usize::try_from(x).map_err(|_| invalid_type(&v, path, "a size"))
}

pub fn float(v: Value, path: &str) -> Result<f64, ConfigError> {
    match v {
        Value::Number(n) => Ok(n.as_f64()),
        other => Err(invalid_type(&other, path, "a number")),
    }
}

/// An array, each element with its path.
pub fn array(v: Value, path: &str) -> Result<Vec<(Value, String)>, ConfigError> {
    match v {
        Value::Array(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, index_path(path, i)))
            .collect()),
        other => Err(invalid_type(&other, path, "an array")),
    }
}

pub fn strings(v: Value, path: &str) -> Result<Vec<String>, ConfigError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| string(v, &index_path(path, i)))
            .collect(),
        other => Err(invalid_type(&other, path, "an array of strings")),
    }
}

/// An object whose keys are data: `(key, f(value))` pairs, sorted by key.
pub fn map<T>(
    v: Value,
    path: &str,
    mut f: impl FnMut(Value, &str) -> Result<T, ConfigError>,
) -> Result<Vec<(String, T)>, ConfigError> {
    let Value::Object(members) = v else {
        return Err(invalid_type(&v, path, "an object"));
    };
    // Keys are unique (the parser refuses duplicates); an insertion keeps the code small where a slice
    // sort would add several kilobytes to the filter for objects of a few keys.
    let mut out: Vec<(String, T)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        let t = f(v, &member_path(path, &k))?;
        let at = out.partition_point(|(o, _)| *o < k);
        out.insert(at, (k, t));
    }
    Ok(out)
}

/// One of a fixed set of strings (`"mask"`), as its value.
pub fn variant<T: Copy>(v: Value, path: &str, variants: &[(&str, T)]) -> Result<T, ConfigError> {
    let s = string(v, path)?;
    variants
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let list = variants
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            ConfigError::new(
                path,
                format!("unknown variant `{s}`, expected one of {list}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str, fields: &'static [&'static str]) -> Result<Object, ConfigError> {
        Object::new(crate::json::parse(json.as_bytes()).unwrap(), "s", fields)
    }

    #[test]
    fn unknown_keys_are_refused_up_front() {
        let e = obj(r#"{"a":1,"colour":2}"#, &["a", "b"]).err().unwrap();
        assert_eq!(e.field, "s.colour");
        assert_eq!(
            e.message(),
            "unknown field `colour`, expected one of `a`, `b`"
        );
        let e = obj(r#"{"x":1}"#, &["a"]).err().unwrap();
        assert_eq!(e.message(), "unknown field `x`, expected `a`");
        // A listed field never read is refused too.
        let o = obj(r#"{"a":1}"#, &["a"]).unwrap();
        assert_eq!(o.finish().unwrap_err().field, "s.a");
        let e = Object::new(Value::Null, "", &["a"]).err().unwrap();
        assert_eq!(e.message(), "invalid type: null, expected an object");
    }

    #[test]
    fn typed_getters() {
        let mut o = obj(
            r#"{"s":"x","b":true,"n":7,"f":0.25,"l":["a","b"],"z":null,"neg":-1,"frac":1.5,"exp":1e3,"big":4294967296}"#,
            &["s", "b", "n", "f", "l", "z", "neg", "frac", "exp", "big", "absent"],
        )
        .unwrap();
        assert_eq!(o.req_string("s").unwrap(), "x");
        assert!(o.bool_or("b", false).unwrap());
        assert_eq!(o.u64_or("n", 1).unwrap(), 7);
        assert_eq!(o.f64_or("f", 1.0).unwrap(), 0.25);
        assert_eq!(o.opt_strings("l").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(o.opt_string("z").unwrap(), None);
        assert_eq!(o.u32_or("absent", 9).unwrap(), 9);
        let e = o.u64_or("neg", 0).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message().contains("-1")),
            ("s.neg", true)
        );
        let e = o.usize_or("frac", 0).unwrap_err();
        assert!(e.message().contains("whole number"), "{e}");
        assert!(o.u64_or("exp", 0).is_err());
        let e = o.u32_or("big", 0).unwrap_err();
        assert!(e.message().contains("at most 4294967295"), "{e}");
        o.finish().unwrap();
    }

    #[test]
    fn required_null_and_defaults() {
        let mut o = obj(r#"{"d":null}"#, &["r", "d"]).unwrap();
        let e = o.req_string("r").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message().as_str()),
            ("s.r", "missing field `r`")
        );
        // A defaulted field refuses null, as the serde derives did.
        let e = o.bool_or("d", true).unwrap_err();
        assert_eq!(e.message(), "invalid type: null, expected a boolean");
    }

    #[test]
    fn aliases_and_maps() {
        let mut o = obj(r#"{"b":1,"a":2}"#, &["a", "b"]).unwrap();
        assert!(o.take_aliased("a", &["b"]).is_err());
        let m = map(
            crate::json::parse(br#"{"z":"1","a":"2"}"#).unwrap(),
            "m",
            string,
        )
        .unwrap();
        assert_eq!(m, [("a".into(), "2".into()), ("z".into(), "1".into())]);
        let e = map(crate::json::parse(br#"{"k":1}"#).unwrap(), "m", string).unwrap_err();
        assert_eq!(e.field, "m.k");
        let e = variant(
            Value::String("blur".into()),
            "v",
            &[("off", 0), ("mask", 1)],
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "unknown variant `blur`, expected one of `off`, `mask`"
        );
    }
}
