//! Redaction and pseudonymisation: no personal or secret data leaves the proxy.
//!
//! Every string ordertrace emits passes through a [`Redactor`] before it is encoded: attribute values
//! ([`Redactor::attribute`]: key rules, then value detectors), free text such as span and event names or
//! error messages ([`Redactor::text`]), `url.path` ([`Redactor::url_path`]: template variables such as the
//! order id are kept), `url.query` ([`Redactor::url_query`]: per parameter) and, at a public edge, the
//! inbound `baggage` header ([`Redactor::filter_baggage`]).
//!
//! The configuration is the `redaction` key of the plugin configuration ([`RawRedaction`], unknown fields
//! rejected), compiled once by [`Redactor::compile`] into an immutable [`Redactor`]. Everything is
//! on by default except the IP detector; `user.id`, `operator.id` and `partner.id` are pseudonymised by
//! default, so a configuration must give the HMAC key (`redaction.hmac_key`) or turn those off. See
//! docs/redaction.md for what is removed, what is kept and the known limits.
//!
//! The detectors are hand-written scanners (no regex: the filter is a size-budgeted wasm module). A value
//! with nothing to redact costs one linear scan and comes back as `Cow::Borrowed`: **`Borrowed` always means
//! "unchanged"**, every change comes back `Owned`.

use std::borrow::Cow;
use std::fmt;

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::json::read::{self, Object};
use crate::json::Value;

mod detectors;
mod keys;
mod span;
mod url;

pub use detectors::Detector;
pub use keys::{
    KeyAction, DEFAULT_ALLOW_KEYS, DEFAULT_DENY_KEYS, DEFAULT_PSEUDONYMISE_KEYS, SEMCONV_KEYS,
};
pub use span::{encode_span, redact_span, PRE_REDACTED};

use detectors::DetectorSet;
use keys::{KeyRules, UserLists};

/// What replaces a dropped query value, a masked denied attribute, or a free text with a `drop` match.
pub const REDACTED: &str = "[redacted]";

/// The prefix of every pseudonym (`h:` then 16 lowercase hex digits).
pub const PSEUDONYM_PREFIX: &str = "h:";

/// The shortest accepted HMAC key, in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 16;

// ---------------------------------------------------------------------------------------------
// Configuration

/// What to do with a match (a detector) or a key (`deny_key_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Detector not run.
    Off,
    /// Remove the attribute (in free text: the whole text becomes `[redacted]`; in a query: the value).
    Drop,
    /// Replace the match by `[email]`, `[phone]`, … (a denied key's value by `[redacted]`).
    Mask,
    /// Replace the match by its keyed HMAC-SHA256 pseudonym `h:<16 hex>`.
    Hash,
}

impl Action {
    /// Every action with its configuration spelling.
    pub const ALL: [(&'static str, Action); 4] = [
        ("off", Action::Off),
        ("drop", Action::Drop),
        ("mask", Action::Mask),
        ("hash", Action::Hash),
    ];

    /// Reads `"off"`, `"drop"`, `"mask"` or `"hash"`.
    pub fn from_value(v: Value, path: &str) -> Result<Action, ConfigError> {
        read::variant(v, path, &Action::ALL)
    }

    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Drop => "drop",
            Action::Mask => "mask",
            Action::Hash => "hash",
        }
    }
}

/// `redaction.detectors`: an action per detector. Unset: `mask`, except `ip`: `off`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawDetectors {
    pub email: Option<Action>,
    pub phone: Option<Action>,
    pub card: Option<Action>,
    pub iban: Option<Action>,
    pub inn: Option<Action>,
    pub snils: Option<Action>,
    pub ip: Option<Action>,
    pub jwt: Option<Action>,
    pub bearer: Option<Action>,
}

impl RawDetectors {
    pub fn from_value(v: Value, path: &str) -> Result<RawDetectors, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "email", "phone", "card", "iban", "inn", "snils", "ip", "jwt", "bearer",
            ],
        )?;
        let raw = RawDetectors {
            email: o.opt("email", Action::from_value)?,
            phone: o.opt("phone", Action::from_value)?,
            card: o.opt("card", Action::from_value)?,
            iban: o.opt("iban", Action::from_value)?,
            inn: o.opt("inn", Action::from_value)?,
            snils: o.opt("snils", Action::from_value)?,
            ip: o.opt("ip", Action::from_value)?,
            jwt: o.opt("jwt", Action::from_value)?,
            bearer: o.opt("bearer", Action::from_value)?,
        };
        o.finish()?;
        Ok(raw)
    }

    fn get(&self, d: Detector) -> Option<Action> {
        match d {
            Detector::Email => self.email,
            Detector::Phone => self.phone,
            Detector::Card => self.card,
            Detector::Iban => self.iban,
            Detector::Inn => self.inn,
            Detector::Snils => self.snils,
            Detector::Ip => self.ip,
            Detector::Jwt => self.jwt,
            Detector::Bearer => self.bearer,
        }
    }
}

/// The action of a detector when the configuration does not name one.
pub fn default_action(d: Detector) -> Action {
    match d {
        Detector::Ip => Action::Off,
        _ => Action::Mask,
    }
}

/// `redaction.baggage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBaggage {
    /// Baggage keys kept at a public edge (exact, ASCII case-insensitive). Default: `["order.id"]`.
    pub public_allow: Option<Vec<String>>,
}

impl RawBaggage {
    pub fn from_value(v: Value, path: &str) -> Result<RawBaggage, ConfigError> {
        let mut o = Object::new(v, path, &["public_allow"])?;
        let raw = RawBaggage {
            public_allow: o.opt_strings("public_allow")?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// The `redaction` key of the plugin configuration. Every field is optional.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawRedaction {
    /// Default true. `false` turns every rule off (and needs no key).
    pub enabled: Option<bool>,
    /// The HMAC key, inline: what the proxy filter uses (it cannot read environment variables or files).
    pub hmac_key: Option<String>,
    /// The name of an environment variable holding the key (native side: CLI, collector).
    pub hmac_key_env: Option<String>,
    /// A file holding the key (native side). A trailing newline is ignored.
    pub hmac_key_file: Option<String>,
    pub detectors: RawDetectors,
    /// Added to [`DEFAULT_DENY_KEYS`].
    pub deny_keys: Option<Vec<String>>,
    /// `drop` (default) or `mask`.
    pub deny_key_action: Option<Action>,
    /// Added to [`DEFAULT_ALLOW_KEYS`].
    pub allow_keys: Option<Vec<String>>,
    /// Added to [`DEFAULT_PSEUDONYMISE_KEYS`]. Also spelt `pseudonymize_keys`.
    pub pseudonymise_keys: Option<Vec<String>>,
    pub baggage: RawBaggage,
}

impl fmt::Debug for RawRedaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRedaction")
            .field("enabled", &self.enabled)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<set>"))
            .field("hmac_key_env", &self.hmac_key_env)
            .field("hmac_key_file", &self.hmac_key_file)
            .field("detectors", &self.detectors)
            .field("deny_keys", &self.deny_keys)
            .field("deny_key_action", &self.deny_key_action)
            .field("allow_keys", &self.allow_keys)
            .field("pseudonymise_keys", &self.pseudonymise_keys)
            .field("baggage", &self.baggage)
            .finish()
    }
}

impl RawRedaction {
    /// Reads the `redaction` object (at `path`); unknown keys are rejected.
    pub fn from_value(v: Value, path: &str) -> Result<RawRedaction, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "enabled",
                "hmac_key",
                "hmac_key_env",
                "hmac_key_file",
                "detectors",
                "deny_keys",
                "deny_key_action",
                "allow_keys",
                "pseudonymise_keys",
                "pseudonymize_keys",
                "baggage",
            ],
        )?;
        let raw = RawRedaction {
            enabled: o.opt_bool("enabled")?,
            hmac_key: o.opt_string("hmac_key")?,
            hmac_key_env: o.opt_string("hmac_key_env")?,
            hmac_key_file: o.opt_string("hmac_key_file")?,
            detectors: o.or_else("detectors", RawDetectors::default, RawDetectors::from_value)?,
            deny_keys: o.opt_strings("deny_keys")?,
            deny_key_action: o.opt("deny_key_action", Action::from_value)?,
            allow_keys: o.opt_strings("allow_keys")?,
            pseudonymise_keys: match o.take_aliased("pseudonymise_keys", &["pseudonymize_keys"])? {
                None | Some(Value::Null) => None,
                Some(v) => Some(read::strings(v, &o.path_of("pseudonymise_keys"))?),
            },
            baggage: o.or_else("baggage", RawBaggage::default, RawBaggage::from_value)?,
        };
        o.finish()?;
        Ok(raw)
    }

    /// Parses a JSON `redaction` object alone (tests); errors name `redaction.<field>`.
    pub fn from_json(bytes: &[u8]) -> Result<RawRedaction, ConfigError> {
        let v = crate::json::parse(bytes)
            .map_err(|e| ConfigError::at("redaction", ConfigErrorKind::NotJson(e.to_string())))?;
        RawRedaction::from_value(v, "redaction")
    }

    /// The defaults with a fixed, public test key. Never use it in a deployment: anyone can recompute its
    /// pseudonyms.
    pub fn default_for_tests() -> RawRedaction {
        RawRedaction {
            hmac_key: Some("ordertrace-test-key-not-secret".to_string()),
            ..RawRedaction::default()
        }
    }
}

/// Where the native side should read the HMAC key from (see [`Redactor::compile_with_key_resolver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacKeySource<'a> {
    /// `redaction.hmac_key_env`: an environment variable name.
    Env(&'a str),
    /// `redaction.hmac_key_file`: a file path.
    File(&'a str),
}

impl HmacKeySource<'_> {
    /// Read the key with the standard library (the CLI and the collector use this as their resolver).
    /// The error never contains the key.
    pub fn read_std(&self) -> Result<String, String> {
        match self {
            HmacKeySource::Env(name) => {
                std::env::var(name).map_err(|e| format!("environment variable {name}: {e}"))
            }
            HmacKeySource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
            }
        }
    }

    fn field(&self) -> &'static str {
        match self {
            HmacKeySource::Env(_) => "redaction.hmac_key_env",
            HmacKeySource::File(_) => "redaction.hmac_key_file",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled

type HmacSha256 = Hmac<Sha256>;

/// A keyed HMAC-SHA256, prepared once (the key schedule is done at compile time; each pseudonym clones it).
#[derive(Clone)]
struct Pseudonymiser {
    mac: HmacSha256,
}

impl Pseudonymiser {
    fn new(key: &[u8]) -> Self {
        // HMAC pads a key shorter than the block with zeros and hashes a longer one first (RFC 2104): doing
        // it here gives the block-sized key the infallible constructor wants.
        let mut block = Key::<HmacSha256>::default();
        if key.len() > block.len() {
            let digest = Sha256::digest(key);
            block
                .iter_mut()
                .zip(digest.iter())
                .for_each(|(d, s)| *d = *s);
        } else {
            block.iter_mut().zip(key.iter()).for_each(|(d, s)| *d = *s);
        }
        Pseudonymiser {
            mac: <HmacSha256 as KeyInit>::new(&block),
        }
    }

    fn pseudonym(&self, value: &[u8]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.mac.clone();
        mac.update(value);
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(18);
        out.push_str(PSEUDONYM_PREFIX);
        for b in tag.iter().take(8) {
            for nibble in [b >> 4, b & 0x0f] {
                out.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        }
        out
    }

    /// A fingerprint of the key (8 hex digits) to check that every Envoy and the collector use the same
    /// one. It is an HMAC output: it tells nothing about the key.
    fn key_id(&self) -> String {
        self.pseudonym(b"ordertrace/key-id")
            .chars()
            .skip(PSEUDONYM_PREFIX.len())
            .take(8)
            .collect()
    }
}

/// The keyed pseudonym of `value`: `h:` and the first 8 bytes of HMAC-SHA256(key, value) in lowercase hex.
/// The same key and value give the same pseudonym on every Envoy and in the collector.
pub fn hmac_pseudonym(key: &[u8], value: &str) -> String {
    Pseudonymiser::new(key).pseudonym(value.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyOrigin {
    None,
    Inline,
    Env(String),
    File(String),
}

/// The result of redacting an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redacted<'a> {
    /// Emit the attribute with this value (`Borrowed`: unchanged).
    Keep(Cow<'a, str>),
    /// Do not emit the attribute.
    Drop,
}

/// The compiled redaction rules. Immutable; every method takes `&self`.
#[derive(Clone)]
pub struct Redactor {
    enabled: bool,
    actions: [(Detector, Action); 9],
    on: DetectorSet,
    keys: KeyRules,
    deny_action: Action,
    baggage_allow: Vec<String>,
    hmac: Option<Pseudonymiser>,
    key_origin: KeyOrigin,
    /// Key rules resolved once for the attribute keys the filter emits on every span, so the per-span
    /// path compares a few short strings instead of splitting each key into words.
    hot_keys: Vec<(&'static str, Option<KeyAction>)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("enabled", &self.enabled)
            .field("actions", &self.actions)
            .field("deny_action", &self.deny_action)
            .field("baggage_allow", &self.baggage_allow)
            .field("hmac_key", &self.hmac.as_ref().map(|p| p.key_id()))
            .finish_non_exhaustive()
    }
}

enum Scrub<'a> {
    Keep(Cow<'a, str>),
    Drop,
}

fn push_range(out: &mut String, s: &str, start: usize, end: usize) {
    match s.get(start..end) {
        Some(x) => out.push_str(x),
        // Unreachable: matches start and end next to ASCII bytes. Keep the text rather than lose it.
        None => out.push_str(&String::from_utf8_lossy(
            s.as_bytes().get(start..end).unwrap_or_default(),
        )),
    }
}

impl Redactor {
    /// Redaction off: every method returns its input unchanged.
    pub fn disabled() -> Redactor {
        Redactor {
            enabled: false,
            actions: Detector::ALL.map(|d| (d, Action::Off)),
            on: DetectorSet::default(),
            keys: KeyRules::default(),
            deny_action: Action::Drop,
            baggage_allow: Vec::new(),
            hmac: None,
            key_origin: KeyOrigin::None,
            hot_keys: Vec::new(),
        }
    }

    /// Compile the configuration as the proxy filter does: the HMAC key must be inline
    /// (`redaction.hmac_key`); `hmac_key_env` / `hmac_key_file` cannot be read here and are an error when a
    /// key is needed.
    /// Resolves the key rules of `keys` once, for the attribute keys the caller emits on (nearly) every
    /// span (`order::attrs::emitted()`): a message's two spans carry about a dozen, so looking their
    /// rules up per span was most of the redaction cost per message. Decisions do not change.
    pub fn with_hot_keys(mut self, keys: impl Iterator<Item = &'static str>) -> Redactor {
        self.hot_keys = keys
            .map(|k| (k, self.keys.lookup(k).map(|r| r.action)))
            .collect();
        self
    }

    pub fn compile(raw: &RawRedaction) -> Result<Redactor, ConfigError> {
        Self::compile_with_key_resolver(raw, &mut |src| {
            Err(match src {
                HmacKeySource::Env(_) => "the proxy filter cannot read environment variables",
                HmacKeySource::File(_) => "the proxy filter cannot read files",
            }
            .to_string()
                + "; put the key in redaction.hmac_key of the plugin configuration (hmac_key_env and \
                   hmac_key_file are for the ordertrace CLI and the collector)")
        })
    }

    /// Compile on the native side: `resolve` reads `hmac_key_env` / `hmac_key_file` (pass
    /// `&mut |s| s.read_std()` to use the process environment and file system). It is only called when a
    /// key is needed and the configuration names one of those sources. A trailing newline is removed.
    pub fn compile_with_key_resolver(
        raw: &RawRedaction,
        resolve: &mut dyn FnMut(HmacKeySource<'_>) -> Result<String, String>,
    ) -> Result<Redactor, ConfigError> {
        let enabled = raw.enabled.unwrap_or(true);

        let actions = Detector::ALL.map(|d| (d, raw.detectors.get(d).unwrap_or(default_action(d))));
        let on = actions
            .iter()
            .filter(|(_, a)| *a != Action::Off)
            .fold(DetectorSet::default(), |set, (d, _)| set.with(*d));

        let deny_action = raw.deny_key_action.unwrap_or(Action::Drop);
        if !matches!(deny_action, Action::Drop | Action::Mask) {
            return Err(ConfigError::new(
                "redaction.deny_key_action",
                format!(
                    "`{}` is not an action for denied keys: use `drop` (remove the attribute) or `mask` (emit \
                     it as {REDACTED}); to pseudonymise a key list it in pseudonymise_keys, to emit it as it is \
                     list it in allow_keys",
                    deny_action.name()
                ),
            ));
        }

        let keys = KeyRules::build(&UserLists {
            allow: raw.allow_keys.as_deref(),
            deny: raw.deny_keys.as_deref(),
            pseudonymise: raw.pseudonymise_keys.as_deref(),
        })?;

        let baggage_allow = match &raw.baggage.public_allow {
            None => vec!["order.id".to_string()],
            Some(list) => {
                for (i, k) in list.iter().enumerate() {
                    let bad = k.is_empty()
                        || k.bytes().any(|c| {
                            c <= b' ' || matches!(c, b',' | b';' | b'=' | b'"' | b'\\') || c >= 0x7f
                        });
                    if bad {
                        return Err(ConfigError::new(
                            format!("redaction.baggage.public_allow[{i}]"),
                            format!("`{k}` is not a baggage key: use a token such as `order.id`"),
                        ));
                    }
                }
                list.clone()
            }
        };

        let sources: Vec<&str> = [
            raw.hmac_key.as_ref().map(|_| "hmac_key"),
            raw.hmac_key_env.as_ref().map(|_| "hmac_key_env"),
            raw.hmac_key_file.as_ref().map(|_| "hmac_key_file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if sources.len() > 1 {
            return Err(ConfigError::new(
                "redaction.hmac_key",
                format!(
                    "set only one of redaction.hmac_key, hmac_key_env, hmac_key_file (found {}): every Envoy and \
                     the collector must use one and the same key",
                    sources.join(", ")
                ),
            ));
        }

        if !enabled {
            return Ok(Redactor::disabled());
        }

        let mut needed_by: Vec<String> = Vec::new();
        let pseudonymised: Vec<&str> = keys
            .iter()
            .filter(|r| r.action == KeyAction::Pseudonymise)
            .map(|r| r.text.as_str())
            .collect();
        if !pseudonymised.is_empty() {
            needed_by.push(format!("pseudonymise_keys ({})", pseudonymised.join(", ")));
        }
        for (d, a) in &actions {
            if *a == Action::Hash {
                needed_by.push(format!("detectors.{}=hash", d.name()));
            }
        }

        let (key, key_origin): (Option<(String, &str)>, KeyOrigin) =
            match (&raw.hmac_key, &raw.hmac_key_env, &raw.hmac_key_file) {
                (Some(k), _, _) => (Some((k.clone(), "redaction.hmac_key")), KeyOrigin::Inline),
                (None, Some(name), _) => (
                    resolve_key(resolve, HmacKeySource::Env(name), !needed_by.is_empty())?,
                    KeyOrigin::Env(name.clone()),
                ),
                (None, None, Some(path)) => (
                    resolve_key(resolve, HmacKeySource::File(path), !needed_by.is_empty())?,
                    KeyOrigin::File(path.clone()),
                ),
                (None, None, None) => (None, KeyOrigin::None),
            };

        let hmac = match key {
            Some((k, field)) => {
                if k.len() < MIN_HMAC_KEY_BYTES {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "the HMAC key is {} bytes long; use at least {MIN_HMAC_KEY_BYTES} random bytes, e.g. \
                             the output of `openssl rand -hex 32`",
                            k.len()
                        ),
                    ));
                }
                Some(Pseudonymiser::new(k.as_bytes()))
            }
            None if needed_by.is_empty() => None,
            None => {
                let field = match key_origin {
                    KeyOrigin::Env(_) => "redaction.hmac_key_env",
                    KeyOrigin::File(_) => "redaction.hmac_key_file",
                    _ => "redaction.hmac_key",
                };
                return Err(ConfigError::new(
                    field,
                    format!(
                        "a secret HMAC key is required by {}: set redaction.hmac_key to the same secret of at \
                         least {MIN_HMAC_KEY_BYTES} bytes on every Envoy and the collector (e.g. `openssl rand \
                         -hex 32`); or move those keys to deny_keys (drop them) or allow_keys (emit them as \
                         they are); or set redaction.enabled to false",
                        needed_by.join(" and ")
                    ),
                ));
            }
        };

        let hot_keys = Vec::new();
        Ok(Redactor {
            enabled,
            actions,
            on,
            keys,
            deny_action,
            baggage_allow,
            hmac,
            key_origin,
            hot_keys,
        })
    }

    /// Is redaction on?
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The action configured for a detector (`off` when redaction is disabled).
    pub fn action(&self, d: Detector) -> Action {
        self.actions
            .iter()
            .find(|(x, _)| *x == d)
            .map(|(_, a)| *a)
            .unwrap_or(Action::Off)
    }

    /// The key rule that decides for `key` and the name it matched (as configured), if any. For
    /// `ordertrace check` to warn that a configured attribute will be dropped or hashed.
    pub fn key_rule(&self, key: &str) -> Option<(KeyAction, &str)> {
        if !self.enabled {
            return None;
        }
        self.keys.lookup(key).map(|r| (r.action, r.text.as_str()))
    }

    /// An attribute `(key, value)` about to be emitted. Key rules first: an allow-listed key (`order.id`)
    /// keeps its value verbatim, a pseudonymised key (`user.id`) gets `h:<16 hex>`, a denied key (`email`)
    /// is dropped or masked (`[redacted]`); any other key's value passes the detectors (a `drop` match drops
    /// the attribute). Keys match case-insensitively on their trailing words (see docs/redaction.md).
    pub fn attribute<'a>(&self, key: &str, value: &'a str) -> Redacted<'a> {
        if !self.enabled {
            return Redacted::Keep(Cow::Borrowed(value));
        }
        let rule = match self.hot_keys.iter().find(|(k, _)| *k == key) {
            Some((_, action)) => *action,
            None => self.keys.lookup(key).map(|r| r.action),
        };
        match rule {
            Some(KeyAction::Allow) => Redacted::Keep(Cow::Borrowed(value)),
            Some(KeyAction::Pseudonymise) => Redacted::Keep(self.pseudonymise_value(value)),
            Some(KeyAction::Deny) if self.deny_action == Action::Drop => Redacted::Drop,
            Some(KeyAction::Deny) => Redacted::Keep(if value.is_empty() || value == REDACTED {
                Cow::Borrowed(value)
            } else {
                Cow::Owned(REDACTED.to_string())
            }),
            Some(KeyAction::Detect) | None => match self.scrub(value) {
                Scrub::Keep(v) => Redacted::Keep(v),
                Scrub::Drop => Redacted::Drop,
            },
        }
    }

    /// Free text (span names, event names, error messages): value detectors only. Each match is replaced
    /// (`[email]`, `h:…`); a match whose action is `drop` turns the whole text into `[redacted]`.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.scrub(text) {
            Scrub::Keep(v) => v,
            Scrub::Drop => Cow::Owned(REDACTED.to_string()),
        }
    }

    /// Bytes that may not be UTF-8 (header values): decoded lossily (invalid sequences become U+FFFD), then
    /// [`Redactor::text`].
    pub fn bytes(&self, b: &[u8]) -> String {
        let s = String::from_utf8_lossy(b);
        self.text(&s).into_owned()
    }

    /// The pseudonym of `value` under this configuration's key, or None when no key is configured.
    pub fn pseudonym(&self, value: &str) -> Option<String> {
        self.hmac.as_ref().map(|p| p.pseudonym(value.as_bytes()))
    }

    fn pseudonymise_value<'a>(&self, v: &'a str) -> Cow<'a, str> {
        if v.is_empty() || detectors::is_pseudonym(v) {
            Cow::Borrowed(v)
        } else {
            Cow::Owned(self.pseudonym_bytes(v.as_bytes()))
        }
    }

    fn pseudonym_bytes(&self, v: &[u8]) -> String {
        match &self.hmac {
            Some(p) => p.pseudonym(v),
            // Unreachable: compile() requires a key when anything hashes. Never emit the value.
            None => REDACTED.to_string(),
        }
    }

    /// What replaces a match of `kind` (bytes `m`) under its action.
    fn replacement(&self, kind: Detector, m: &[u8]) -> String {
        match self.action(kind) {
            Action::Hash => self.pseudonym_bytes(&detectors::normalise(kind, m)),
            Action::Drop => REDACTED.to_string(),
            Action::Mask | Action::Off => kind.mask().to_string(),
        }
    }

    /// Detectors over free text. When something was replaced, the result is scanned again until nothing
    /// changes: a replacement can make its neighbour a match (in `2001:db8::john@x.com` the address only ends
    /// cleanly once the e-mail is `[email]`). This costs one more scan, only for values that had PII; it is
    /// what makes `text(text(x)) == text(x)` hold. If it has not settled after a few passes (never seen), the
    /// whole text is withheld.
    fn scrub<'a>(&self, t: &'a str) -> Scrub<'a> {
        const MAX_PASSES: usize = 4;
        let mut current = match self.scrub_once(t) {
            Scrub::Keep(Cow::Owned(s)) => s,
            other => return other,
        };
        for _ in 1..MAX_PASSES {
            match self.scrub_once(&current) {
                Scrub::Keep(Cow::Borrowed(_)) => return Scrub::Keep(Cow::Owned(current)),
                Scrub::Keep(Cow::Owned(next)) => current = next,
                Scrub::Drop => return Scrub::Drop,
            }
        }
        Scrub::Keep(Cow::Owned(REDACTED.to_string()))
    }

    fn scrub_once<'a>(&self, t: &'a str) -> Scrub<'a> {
        if !self.enabled {
            return Scrub::Keep(Cow::Borrowed(t));
        }
        let b = t.as_bytes();
        if !may_hold_pii(b, self.on.has(Detector::Ip)) {
            return Scrub::Keep(Cow::Borrowed(t));
        }
        let Some(mut hit) = detectors::find(b, 0, false, self.on) else {
            return Scrub::Keep(Cow::Borrowed(t));
        };
        let mut out = String::with_capacity(t.len() + 8);
        let mut pos = 0;
        loop {
            if self.action(hit.kind) == Action::Drop {
                return Scrub::Drop;
            }
            push_range(&mut out, t, pos, hit.start);
            out.push_str(
                &self.replacement(hit.kind, b.get(hit.start..hit.end).unwrap_or_default()),
            );
            pos = hit.end;
            match detectors::find(b, pos, true, self.on) {
                Some(h) => hit = h,
                None => break,
            }
        }
        push_range(&mut out, t, pos, t.len());
        Scrub::Keep(Cow::Owned(out))
    }

    /// Human-readable lines for `ordertrace check`: detectors and their actions, the key lists, the HMAC key
    /// source and fingerprint (never the key), the baggage policy.
    pub fn describe(&self) -> Vec<String> {
        if !self.enabled {
            return vec![
                "disabled (redaction.enabled = false): attributes, names, paths, queries and baggage are \
                 emitted as they are"
                    .to_string(),
            ];
        }
        let mut out = vec!["enabled".to_string()];
        let detectors: Vec<String> = Detector::ALL
            .iter()
            .map(|d| format!("{}={}", d.name(), self.action(*d).name()))
            .collect();
        out.push(format!("detectors: {}", detectors.join(" ")));
        let lists = [
            (
                KeyAction::Allow,
                "allow_keys (value kept verbatim, detectors skipped)".to_string(),
            ),
            (
                KeyAction::Pseudonymise,
                "pseudonymise_keys (value replaced by h:<16 hex>, keyed HMAC-SHA256)".to_string(),
            ),
            (
                KeyAction::Deny,
                format!(
                    "deny_keys ({})",
                    if self.deny_action == Action::Mask {
                        "value replaced by [redacted]"
                    } else {
                        "attribute dropped"
                    }
                ),
            ),
            (
                KeyAction::Detect,
                "semantic-convention keys exempt from deny_keys (detectors still run)".to_string(),
            ),
        ];
        for (action, label) in lists {
            let (builtin, configured) = self.keys.names(action);
            let mut line = format!("{label}: {}", builtin.join(", "));
            if !configured.is_empty() {
                line.push_str(&format!("; configured: {}", configured.join(", ")));
            }
            out.push(line);
        }
        out.push(
            "keys match case-insensitively on their trailing words: customer.email, customerEmail, \
             customer_email and X-Customer-Email all end in `email`; the longest matching rule wins"
                .to_string(),
        );
        let source = match &self.key_origin {
            KeyOrigin::None => "none".to_string(),
            KeyOrigin::Inline => "inline (redaction.hmac_key)".to_string(),
            KeyOrigin::Env(n) => format!("environment variable {n} (redaction.hmac_key_env)"),
            KeyOrigin::File(p) => format!("file {p} (redaction.hmac_key_file)"),
        };
        out.push(match &self.hmac {
            Some(p) => format!(
                "hmac key: {source}, key id {} (must be the same on every Envoy and the collector)",
                p.key_id()
            ),
            None if self.key_origin == KeyOrigin::None => {
                "hmac key: none (nothing is pseudonymised)".to_string()
            }
            None => format!("hmac key: {source}, not read (nothing is pseudonymised)"),
        });
        out.push(format!(
            "baggage at a public edge: only {} kept (exact key, case-insensitive), and only when the value \
             trips no detector; properties removed",
            self.baggage_allow.join(", ")
        ));
        out
    }
}

/// Read a key from the environment or a file through the resolver, when it is needed.
fn resolve_key(
    resolve: &mut dyn FnMut(HmacKeySource<'_>) -> Result<String, String>,
    src: HmacKeySource<'_>,
    needed: bool,
) -> Result<Option<(String, &'static str)>, ConfigError> {
    if !needed {
        return Ok(None);
    }
    let field = src.field();
    let key = resolve(src)
        .map_err(|e| ConfigError::new(field, format!("cannot read the HMAC key: {e}")))?;
    let key = key
        .strip_suffix("\r\n")
        .or_else(|| key.strip_suffix('\n'))
        .unwrap_or(&key)
        .to_string();
    if key.is_empty() {
        return Err(ConfigError::new(field, "the HMAC key is empty"));
    }
    Ok(Some((key, field)))
}

#[cfg(test)]
mod tests;

/// A cheap first look that rules out every detector at once: each needs an `@` (e-mail), two or more
/// digits (phone, card, IBAN check digits, INN, SNILS, IPv4, percent-encoded forms), `eyJ` (JWT),
/// `bearer`, or — with the IP detector on — a `:` (IPv6). Most attribute values (methods, routes,
/// service names, statuses) have none of these, and then cost one pass over their bytes.
fn may_hold_pii(b: &[u8], ip_on: bool) -> bool {
    let mut digits = 0u32;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'@' => return true,
            b'0'..=b'9' => {
                digits += 1;
                if digits >= 2 {
                    return true;
                }
            }
            b':' if ip_on => return true,
            b'e' if b.get(i + 1..i + 3) == Some(&b"yJ"[..]) => return true,
            b'b' | b'B'
                if b.get(i + 1..i + 6)
                    .is_some_and(|r| r.eq_ignore_ascii_case(b"earer")) =>
            {
                return true
            }
            _ => {}
        }
    }
    false
}
