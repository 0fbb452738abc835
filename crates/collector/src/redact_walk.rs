//! The redaction of OTLP attributes and values with the edge's [`Redactor`]: what the key rules decide for
//! an attribute key (remembered per key in a [`KeyCache`]), and the walk over a list of attributes (nested
//! arrays and key-value lists included) and over free text, with `url.path`, `url.query`, `http.target`
//! and `url.full` redacted per segment and parameter. The processing calls it on every span, event, link,
//! status message, resource and scope of a batch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

use ordertrace::redact::{KeyAction, Redacted, Redactor};
use ordertrace::template;

use crate::stats::Stats;

/// Semantic-convention keys that the collector sees on SDK spans (the edge never emits them) and whose last
/// word is a built-in deny word (`name`). Their values are free text for the detectors instead of being
/// dropped. A configured `deny_keys` entry that matches still wins.
pub const COLLECTOR_SEMCONV_KEYS: &[&str] = &[
    "deployment.environment.name",
    "thread.name",
    "process.runtime.name",
    "telemetry.distro.name",
    "network.protocol.name",
    "db.name",
    "db.system.name",
    "db.collection.name",
    "db.operation.name",
    "code.function.name",
    "container.image.name",
    "container.runtime.name",
    "host.image.name",
    "k8s.cluster.name",
    "k8s.replicaset.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.job.name",
    "k8s.cronjob.name",
    "faas.name",
    "graphql.operation.name",
    "db.stored_procedure.name",
    "network.interface.name",
    "user_agent.name",
    "messaging.consumer.group.name",
    "messaging.operation.name",
    "messaging.destination_publish.name",
    "messaging.destination.subscription.name",
    "otel.library.name",
    "net.peer.name",
    "net.host.name",
    "source.address",
    "destination.address",
    "server.socket.address",
];

pub(crate) const NO_KEEP: fn(usize) -> bool = |_| false;

enum Verdict {
    Same,
    Changed,
    Drop,
}

/// What the key rules decide for an attribute key, as the collector applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyDecision {
    /// Allowed (`order.id`): the value is kept verbatim.
    Verbatim,
    /// Denied or pseudonymised: [`Redactor::attribute`] decides, whatever the value.
    Keyed,
    /// A [`COLLECTOR_SEMCONV_KEYS`] key: free text for the detectors.
    FreeText,
    /// No key rule: the detectors decide ([`Redactor::attribute`] when they find something).
    Detect,
}

/// The most keys remembered; later new keys are decided each time (a batch with endless distinct keys
/// cannot grow the plugin's memory).
const KEY_CACHE_MAX: usize = 4096;

/// Key decisions of the keys seen so far: SDK spans repeat the same few dozen keys, and a key rule lookup
/// costs more than scanning a short value. A deterministic hasher: the plugin needs no random seed.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    map: HashMap<String, KeyDecision, BuildHasherDefault<DefaultHasher>>,
}

impl KeyCache {
    fn decide(&mut self, r: &Redactor, key: &str) -> KeyDecision {
        if let Some(d) = self.map.get(key) {
            return *d;
        }
        let d = match r.key_rule(key) {
            Some((KeyAction::Allow, _)) => KeyDecision::Verbatim,
            Some((KeyAction::Deny, rule))
                if (rule == "name" || rule == "address")
                    && COLLECTOR_SEMCONV_KEYS.contains(&key) =>
            {
                KeyDecision::FreeText
            }
            Some((KeyAction::Deny | KeyAction::Pseudonymise, _)) => KeyDecision::Keyed,
            Some((KeyAction::Detect, _)) | None => KeyDecision::Detect,
        };
        if self.map.len() < KEY_CACHE_MAX {
            self.map.insert(key.to_string(), d);
        }
        d
    }
}

/// What the redaction of one batch works with.
pub(crate) struct Ctx<'a> {
    pub(crate) r: &'a Redactor,
    pub(crate) keys: &'a mut KeyCache,
    pub(crate) stats: &'a mut Stats,
}

impl Ctx<'_> {
    /// Redact a list of attributes in place; a dropped attribute counts in `dropped`. True if anything
    /// changed.
    pub(crate) fn redact_kvs(
        &mut self,
        kvs: &mut Vec<KeyValue>,
        dropped: &mut u32,
        keep: &dyn Fn(usize) -> bool,
    ) -> bool {
        if !self.r.is_enabled() || kvs.is_empty() {
            return false;
        }
        let mut changed = false;
        let before = kvs.len();
        kvs.retain_mut(|kv| {
            let Some(v) = kv.value.as_mut() else {
                return true;
            };
            match self.redact_value(&kv.key, v, keep) {
                Verdict::Same => true,
                Verdict::Changed => {
                    self.stats.values_redacted += 1;
                    changed = true;
                    true
                }
                Verdict::Drop => false,
            }
        });
        let removed = before - kvs.len();
        if removed > 0 {
            self.stats.attributes_dropped += removed as u64;
            *dropped = dropped.saturating_add(u32::try_from(removed).unwrap_or(u32::MAX));
            changed = true;
        }
        changed
    }

    fn redact_value(
        &mut self,
        key: &str,
        v: &mut AnyValue,
        keep: &dyn Fn(usize) -> bool,
    ) -> Verdict {
        let Some(value) = v.value.as_mut() else {
            return Verdict::Same;
        };
        let decision = self.keys.decide(self.r, key);
        let text_form = match value {
            Value::StringValue(s) => return self.redact_string(key, decision, s, keep),
            Value::ArrayValue(a) => {
                let mut out = Verdict::Same;
                for e in &mut a.values {
                    match self.redact_value(key, e, &NO_KEEP) {
                        Verdict::Drop => return Verdict::Drop,
                        Verdict::Changed => out = Verdict::Changed,
                        Verdict::Same => {}
                    }
                }
                return out;
            }
            Value::KvlistValue(l) => {
                let before = l.values.len();
                let mut out = Verdict::Same;
                l.values.retain_mut(|kv| {
                    let Some(v) = kv.value.as_mut() else {
                        return true;
                    };
                    match self.redact_value(&kv.key, v, &NO_KEEP) {
                        Verdict::Drop => false,
                        Verdict::Changed => {
                            out = Verdict::Changed;
                            true
                        }
                        Verdict::Same => true,
                    }
                });
                return if l.values.len() != before {
                    Verdict::Changed
                } else {
                    out
                };
            }
            // A number can be a phone or a card; a key rule applies whatever the type. Numbers below
            // 10^9 have too few digits for any detector, so only their key decides.
            Value::IntValue(i) => match decision {
                KeyDecision::Keyed => i.to_string(),
                KeyDecision::Detect | KeyDecision::FreeText
                    if i.unsigned_abs() >= 1_000_000_000 =>
                {
                    i.to_string()
                }
                _ => return Verdict::Same,
            },
            Value::BoolValue(b) if decision == KeyDecision::Keyed => b.to_string(),
            Value::DoubleValue(d) if decision == KeyDecision::Keyed => d.to_string(),
            Value::BytesValue(_) if decision == KeyDecision::Keyed => String::new(),
            _ => return Verdict::Same,
        };
        let out = match decision {
            KeyDecision::FreeText => Redacted::Keep(self.r.text(&text_form)),
            _ => self.r.attribute(key, &text_form),
        };
        match out {
            Redacted::Drop => Verdict::Drop,
            Redacted::Keep(Cow::Borrowed(_)) => Verdict::Same,
            Redacted::Keep(Cow::Owned(s)) => {
                *value = Value::StringValue(s);
                Verdict::Changed
            }
        }
    }

    fn redact_string(
        &mut self,
        key: &str,
        decision: KeyDecision,
        s: &mut String,
        keep: &dyn Fn(usize) -> bool,
    ) -> Verdict {
        let r = self.r;
        let out = match (key, decision) {
            (_, KeyDecision::Verbatim) => return Verdict::Same,
            (_, KeyDecision::Keyed) => match r.attribute(key, s) {
                Redacted::Drop => return Verdict::Drop,
                Redacted::Keep(c) => c,
            },
            ("url.path", _) => r.url_path(s, keep),
            ("url.query", _) => r.url_query(s),
            ("http.target", _) => redact_target(r, s, keep),
            ("url.full" | "http.url", _) => redact_url(r, s, keep),
            (_, KeyDecision::FreeText) => r.text(s),
            // The detectors alone; when they find something, `attribute` gives the exact outcome (a
            // `drop` detector drops the attribute rather than the text).
            (_, KeyDecision::Detect) => match r.text(s) {
                Cow::Borrowed(_) => return Verdict::Same,
                Cow::Owned(_) => match r.attribute(key, s) {
                    Redacted::Drop => return Verdict::Drop,
                    Redacted::Keep(c) => c,
                },
            },
        };
        match out {
            Cow::Borrowed(_) => Verdict::Same,
            Cow::Owned(new) => {
                *s = new;
                Verdict::Changed
            }
        }
    }

    pub(crate) fn redact_text(&mut self, s: &mut String) -> bool {
        if s.is_empty() {
            return false;
        }
        match self.r.text(s) {
            Cow::Borrowed(_) => false,
            Cow::Owned(new) => {
                *s = new;
                self.stats.values_redacted += 1;
                true
            }
        }
    }
}

/// `http.target`: `path?query`.
fn redact_target<'a>(r: &Redactor, t: &'a str, keep: &dyn Fn(usize) -> bool) -> Cow<'a, str> {
    let (path, query) = template::split_path_query(t);
    let p = r.url_path(path, keep);
    let q = query.map(|q| r.url_query(q));
    if matches!(p, Cow::Borrowed(_)) && q.as_ref().is_none_or(|q| matches!(q, Cow::Borrowed(_))) {
        return Cow::Borrowed(t);
    }
    let mut out = p.into_owned();
    if let Some(q) = q {
        out.push('?');
        out.push_str(&q);
    }
    Cow::Owned(out)
}

/// The pieces of an absolute URL (`scheme://authority/path?query#fragment`); a string without `://` is
/// all path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `scheme://` (empty without one).
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

pub fn split_url(url: &str) -> UrlParts<'_> {
    let (scheme, after) = match url.find("://") {
        Some(i) => url.split_at_checked(i + 3).unwrap_or(("", url)),
        None => ("", url),
    };
    let (authority, rest) = if scheme.is_empty() {
        ("", after)
    } else {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        after.split_at_checked(end).unwrap_or((after, ""))
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    UrlParts {
        scheme,
        userinfo,
        host,
        path,
        query,
        fragment,
    }
}

/// `url.full` / `http.url`: credentials become `REDACTED:REDACTED` (as the semantic conventions ask), the
/// path per segment, the query per parameter, the fragment as free text.
fn redact_url<'a>(r: &Redactor, url: &'a str, keep: &dyn Fn(usize) -> bool) -> Cow<'a, str> {
    let u = split_url(url);
    let creds = u.userinfo.filter(|x| *x != "REDACTED:REDACTED").is_some();
    let path = r.url_path(u.path, keep);
    let query = u.query.map(|q| r.url_query(q));
    let fragment = u.fragment.map(|f| r.text(f));
    let borrowed =
        |c: &Option<Cow<'_, str>>| c.as_ref().is_none_or(|c| matches!(c, Cow::Borrowed(_)));
    if !creds && matches!(path, Cow::Borrowed(_)) && borrowed(&query) && borrowed(&fragment) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(u.scheme);
    if u.userinfo.is_some() {
        out.push_str("REDACTED:REDACTED@");
    }
    out.push_str(u.host);
    out.push_str(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&q);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&f);
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "redact_walk_tests.rs"]
mod tests;
