//! Key rules: which attribute, JSON or query-parameter names are allowed, pseudonymised or denied.
//!
//! A key and every configured name are cut into lowercase *words*: at any ASCII character that is not a
//! letter or digit (`.`, `_`, `-`, `/`, space, …), at camelCase humps (`customerEmail` → customer email,
//! `HTTPStatus` → http status) and between letters and digits (`address2` → address 2). Trailing words that
//! are only digits are ignored (`phone2`, `email_1` end in `phone`, `email`). A rule matches a key when the
//! key's words *end with* the rule's words: `email` matches `email`, `customer.email`, `customerEmail`,
//! `X-Customer-Email`, `/customer/email`; `user.id` matches `userId`, `user_id`, `order.user.id`.
//! When several rules match, the one with the most words wins (`service.name` beats `name`).

use std::cmp::Ordering;

use crate::error::ConfigError;
use crate::order::attrs;

/// What the key rules decide for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// An id the traces exist for (`order.id`): the value is emitted verbatim, detectors are skipped.
    Allow,
    /// The value is replaced by its keyed HMAC pseudonym (`h:` + 16 hex digits).
    Pseudonymise,
    /// The attribute is dropped (or masked, per `deny_key_action`).
    Deny,
    /// A semantic-convention key exempt from the deny rules (`server.address`, `service.name`): the value
    /// passes the detectors.
    Detect,
}

/// The built-in deny list. Configured `deny_keys` are added to it.
pub const DEFAULT_DENY_KEYS: &[&str] = &[
    "email",
    "e_mail",
    "mail",
    "phone",
    "phone_number",
    "mobile",
    "msisdn",
    "tel",
    "telephone",
    "name",
    "first_name",
    "last_name",
    "middle_name",
    "full_name",
    "surname",
    "patronymic",
    "fio",
    "username",
    "login",
    "recipient",
    "address",
    "address_line",
    "street",
    "postal_code",
    "postcode",
    "zip_code",
    "birth_date",
    "birthdate",
    "birthday",
    "date_of_birth",
    "dob",
    "passport",
    "inn",
    "snils",
    "ssn",
    "card",
    "card_number",
    "pan",
    "cvv",
    "cvc",
    "iban",
    "account_number",
    "password",
    "passwd",
    "pwd",
    "pin",
    "otp",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session_id",
    "sessionid",
];

/// The built-in allow list: values kept verbatim, detectors skipped. Configured `allow_keys` are added.
pub const DEFAULT_ALLOW_KEYS: &[&str] = &[
    attrs::ORDER_ID,
    attrs::ORDER_STATUS,
    attrs::ORDER_STATUS_PREVIOUS,
    attrs::ORDER_STATUS_ATTEMPTED,
    "http.route",
    "http.request.method",
    "http.response.status_code",
];

/// The built-in pseudonymise list. Configured `pseudonymise_keys` are added.
pub const DEFAULT_PSEUDONYMISE_KEYS: &[&str] = &["user.id", "operator.id", "partner.id"];

/// OpenTelemetry semantic-convention keys whose last word is also a deny word (`name`, `address`): they
/// are exempt from the deny rules, their values still pass the detectors.
pub const SEMCONV_KEYS: &[&str] = &[
    "service.name",
    "telemetry.sdk.name",
    "otel.scope.name",
    "event.name",
    "host.name",
    "os.name",
    "process.executable.name",
    "file.name",
    "container.name",
    "k8s.pod.name",
    "k8s.node.name",
    "k8s.namespace.name",
    "k8s.container.name",
    "k8s.deployment.name",
    "messaging.destination.name",
    "messaging.destination_publish.name",
    "messaging.operation.name",
    "server.address",
    "client.address",
    "network.peer.address",
    "network.local.address",
];

pub(crate) const MAX_WORDS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Sep,
    Lower,
    Upper,
    Digit,
}

fn class(c: u8) -> Class {
    match c {
        b'a'..=b'z' => Class::Lower,
        b'A'..=b'Z' => Class::Upper,
        b'0'..=b'9' => Class::Digit,
        0x80..=0xff => Class::Lower,
        _ => Class::Sep,
    }
}

/// The words of a key, as byte ranges (no allocation). Keeps the last [`MAX_WORDS`] words.
pub(crate) struct Words<'k> {
    key: &'k [u8],
    spans: [(usize, usize); MAX_WORDS],
    len: usize,
    /// More than MAX_WORDS words were seen (the first ones were forgotten).
    truncated: bool,
}

impl<'k> Words<'k> {
    pub(crate) fn split(key: &'k str) -> Self {
        let b = key.as_bytes();
        let mut w = Words {
            key: b,
            spans: [(0, 0); MAX_WORDS],
            len: 0,
            truncated: false,
        };
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let mut start: Option<usize> = None;
        for j in 0..=b.len() {
            let k = class(at(j));
            if k == Class::Sep {
                if let Some(s) = start.take() {
                    w.push(s, j);
                }
                continue;
            }
            match start {
                None => start = Some(j),
                Some(s) => {
                    let pk = class(at(j.saturating_sub(1)));
                    let hump = (pk == Class::Lower && k == Class::Upper)
                        || (pk == Class::Upper
                            && k == Class::Upper
                            && class(at(j + 1)) == Class::Lower)
                        || ((pk == Class::Digit) != (k == Class::Digit));
                    if hump {
                        w.push(s, j);
                        start = Some(j);
                    }
                }
            }
        }
        while w.last().is_some_and(|x| x.iter().all(u8::is_ascii_digit)) {
            w.len -= 1;
        }
        w
    }

    fn push(&mut self, s: usize, e: usize) {
        if self.len == MAX_WORDS {
            self.spans.copy_within(1.., 0);
            self.len -= 1;
            self.truncated = true;
        }
        if let Some(slot) = self.spans.get_mut(self.len) {
            *slot = (s, e);
            self.len += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn word(&self, i: usize) -> Option<&'k [u8]> {
        let (s, e) = *self.spans.get(i)?;
        if i < self.len {
            self.key.get(s..e)
        } else {
            None
        }
    }

    fn last(&self) -> Option<&'k [u8]> {
        self.word(self.len.checked_sub(1)?)
    }

    /// Do the key's words end with `suffix` (lowercase words)?
    fn ends_with(&self, suffix: &[String]) -> bool {
        let Some(skip) = self.len.checked_sub(suffix.len()) else {
            return false;
        };
        (0..suffix.len()).all(|n| match (self.word(skip + n), suffix.get(n)) {
            (Some(w), Some(r)) => w.eq_ignore_ascii_case(r.as_bytes()),
            _ => false,
        })
    }

    /// The words, lowercased.
    pub(crate) fn to_lower(&self) -> Vec<String> {
        (0..self.len)
            .filter_map(|i| self.word(i))
            .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
            .collect()
    }
}

/// Compare a key word (any case) with a lowercase rule word, as if the key word were lowercased.
fn cmp_ci(key_word: &[u8], rule_word: &[u8]) -> Ordering {
    key_word
        .iter()
        .map(u8::to_ascii_lowercase)
        .cmp(rule_word.iter().copied())
}

/// One name in one of the lists.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Lowercase words, never empty.
    pub words: Vec<String>,
    pub action: KeyAction,
    /// As written in the configuration (or the defaults).
    pub text: String,
    /// The configuration field it came from (`redaction.deny_keys[2]`), None for a built-in.
    pub field: Option<String>,
}

impl Rule {
    fn last_word(&self) -> &str {
        self.words.last().map(String::as_str).unwrap_or_default()
    }
}

/// Every key rule, sorted by last word so a key is looked up with one binary search.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyRules {
    rules: Vec<Rule>,
}

/// The configured lists (None = not set).
pub(crate) struct UserLists<'a> {
    pub allow: Option<&'a [String]>,
    pub deny: Option<&'a [String]>,
    pub pseudonymise: Option<&'a [String]>,
}

fn list_name(action: KeyAction) -> &'static str {
    match action {
        KeyAction::Allow => "allow_keys",
        KeyAction::Pseudonymise => "pseudonymise_keys",
        KeyAction::Deny => "deny_keys",
        KeyAction::Detect => "semantic-convention keys",
    }
}

impl KeyRules {
    /// The built-in lists plus the configured ones. A configured name replaces a built-in rule with the same
    /// words in another list (listing `name` under `allow_keys` stops it being denied); the same name in
    /// two configured lists is an error.
    pub(crate) fn build(user: &UserLists<'_>) -> Result<KeyRules, ConfigError> {
        let mut rules: Vec<Rule> = Vec::new();
        let builtins = [
            (DEFAULT_DENY_KEYS, KeyAction::Deny),
            (DEFAULT_ALLOW_KEYS, KeyAction::Allow),
            (DEFAULT_PSEUDONYMISE_KEYS, KeyAction::Pseudonymise),
            (SEMCONV_KEYS, KeyAction::Detect),
        ];
        for (list, action) in builtins {
            for name in list {
                let words = Words::split(name).to_lower();
                if !words.is_empty() && !rules.iter().any(|r| r.words == words) {
                    rules.push(Rule {
                        words,
                        action,
                        text: (*name).to_string(),
                        field: None,
                    });
                }
            }
        }
        let configured = [
            (user.deny, KeyAction::Deny),
            (user.allow, KeyAction::Allow),
            (user.pseudonymise, KeyAction::Pseudonymise),
        ];
        for (list, action) in configured {
            for (i, name) in list.unwrap_or_default().iter().enumerate() {
                let field = format!("redaction.{}[{i}]", list_name(action));
                let w = Words::split(name);
                if w.len() == 0 {
                    return Err(ConfigError::new(
                        field,
                        format!("`{name}` has no letters or digits: give a key name such as `customer.email`"),
                    ));
                }
                if w.truncated {
                    return Err(ConfigError::new(
                        field,
                        format!("`{name}` has more than {MAX_WORDS} words"),
                    ));
                }
                let words = w.to_lower();
                match rules.iter().position(|r| r.words == words) {
                    Some(p) => {
                        let Some(existing) = rules.get_mut(p) else {
                            continue;
                        };
                        match &existing.field {
                            None => {
                                *existing = Rule {
                                    words,
                                    action,
                                    text: name.clone(),
                                    field: Some(field),
                                };
                            }
                            Some(other) if existing.action != action => {
                                return Err(ConfigError::new(
                                    field,
                                    format!(
                                        "`{name}` is also listed as {other} (`{}`); a key can have only one rule",
                                        existing.text
                                    ),
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                    None => rules.push(Rule {
                        words,
                        action,
                        text: name.clone(),
                        field: Some(field),
                    }),
                }
            }
        }
        rules.sort_by(|a, b| {
            a.last_word()
                .cmp(b.last_word())
                .then(a.words.len().cmp(&b.words.len()))
        });
        Ok(KeyRules { rules })
    }

    /// The rule that decides for `key`: among the rules whose words end the key's words, the longest.
    pub(crate) fn lookup(&self, key: &str) -> Option<&Rule> {
        let w = Words::split(key);
        let last = w.last()?;
        let lo = self
            .rules
            .partition_point(|r| cmp_ci(last, r.last_word().as_bytes()) == Ordering::Greater);
        let mut best: Option<&Rule> = None;
        for r in self.rules.get(lo..).unwrap_or_default() {
            if cmp_ci(last, r.last_word().as_bytes()) != Ordering::Equal {
                break;
            }
            if w.ends_with(&r.words) && best.is_none_or(|b| r.words.len() > b.words.len()) {
                best = Some(r);
            }
        }
        best
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The names under `action`, built-ins first, as written.
    pub(crate) fn names(&self, action: KeyAction) -> (Vec<&str>, Vec<&str>) {
        let mut builtin = Vec::new();
        let mut configured = Vec::new();
        for list in [
            DEFAULT_DENY_KEYS,
            DEFAULT_ALLOW_KEYS,
            DEFAULT_PSEUDONYMISE_KEYS,
            SEMCONV_KEYS,
        ] {
            for name in list {
                if self
                    .rules
                    .iter()
                    .any(|r| r.field.is_none() && r.action == action && r.text == *name)
                {
                    builtin.push(*name);
                }
            }
        }
        for r in &self.rules {
            if r.field.is_some() && r.action == action {
                configured.push(r.text.as_str());
            }
        }
        (builtin, configured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(k: &str) -> Vec<String> {
        Words::split(k).to_lower()
    }

    #[test]
    fn redact_key_words() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("email", &["email"], "plain"),
            ("customer.email", &["customer", "email"], "dotted"),
            ("customer_email", &["customer", "email"], "snake"),
            ("customerEmail", &["customer", "email"], "camel"),
            ("CustomerEmail", &["customer", "email"], "Pascal"),
            ("X-Customer-Email", &["x", "customer", "email"], "header"),
            ("/customer/email", &["customer", "email"], "JSON pointer"),
            (
                "HTTPStatusCode",
                &["http", "status", "code"],
                "acronym then word",
            ),
            ("userID", &["user", "id"], "trailing acronym"),
            ("address2", &["address"], "trailing digits ignored"),
            (
                "address_line_1",
                &["address", "line"],
                "trailing digit word ignored",
            ),
            ("ipv4Addr", &["ipv", "4", "addr"], "inner digits kept"),
            (
                "имяКлиента",
                &["имяклиента"],
                "no humps inside non-ASCII words",
            ),
            ("", &[], "empty"),
            ("...", &[], "separators only"),
            ("123", &[], "digits only"),
        ];
        for (key, want, why) in cases {
            let got = words(key);
            let got: Vec<&str> = got.iter().map(String::as_str).collect();
            // Non-ASCII is not lowercased (only ASCII folding is done): compare accordingly.
            let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            if key.is_ascii() {
                assert_eq!(got, want, "{key}: {why}");
            } else {
                assert_eq!(got.len(), want.len(), "{key}: {why}");
            }
        }
    }

    #[test]
    fn redact_key_words_truncate_to_last() {
        let key = (0..20)
            .map(|i| format!("w{i}x"))
            .collect::<Vec<_>>()
            .join(".");
        let w = Words::split(&key);
        assert!(w.truncated);
        assert_eq!(w.len(), MAX_WORDS);
        assert_eq!(w.to_lower().last().unwrap(), "x");
    }

    fn rules() -> KeyRules {
        KeyRules::build(&UserLists {
            allow: None,
            deny: None,
            pseudonymise: None,
        })
        .unwrap()
    }

    #[test]
    fn redact_key_lookup_defaults() {
        let r = rules();
        let cases: &[(&str, Option<KeyAction>, &str)] = &[
            ("email", Some(KeyAction::Deny), "deny word"),
            ("customer.email", Some(KeyAction::Deny), "suffix"),
            ("customerEmail", Some(KeyAction::Deny), "camelCase"),
            ("CUSTOMER_EMAIL", Some(KeyAction::Deny), "upper snake"),
            ("email_verified", None, "deny word not last"),
            ("emailAddress", Some(KeyAction::Deny), "ends in address"),
            ("first_name", Some(KeyAction::Deny), "name"),
            (
                "service.name",
                Some(KeyAction::Detect),
                "semconv beats `name`",
            ),
            (
                "server.address",
                Some(KeyAction::Detect),
                "semconv beats `address`",
            ),
            (
                "messaging.destination.name",
                Some(KeyAction::Detect),
                "semconv",
            ),
            ("order.id", Some(KeyAction::Allow), "allow"),
            ("orderId", Some(KeyAction::Allow), "allow camelCase"),
            ("order_id", Some(KeyAction::Allow), "allow snake"),
            ("order.status", Some(KeyAction::Allow), "allow"),
            ("http.response.status_code", Some(KeyAction::Allow), "allow"),
            ("user.id", Some(KeyAction::Pseudonymise), "pseudonymise"),
            (
                "userId",
                Some(KeyAction::Pseudonymise),
                "pseudonymise camel",
            ),
            ("x-user-id", Some(KeyAction::Pseudonymise), "header"),
            ("operatorId", Some(KeyAction::Pseudonymise), "operator"),
            (
                "order.partner_id",
                Some(KeyAction::Pseudonymise),
                "partner suffix",
            ),
            ("id", None, "bare id"),
            ("mes.polygon_count", None, "business attribute"),
            ("Authorization", Some(KeyAction::Deny), "auth header"),
            ("set-cookie", Some(KeyAction::Deny), "cookie"),
            ("access_token", Some(KeyAction::Deny), "token"),
            ("phone2", Some(KeyAction::Deny), "trailing digit"),
            ("hotel", None, "word, not substring: tel"),
            ("", None, "empty"),
        ];
        for (key, want, why) in cases {
            assert_eq!(r.lookup(key).map(|x| x.action), *want, "{key}: {why}");
        }
    }

    #[test]
    fn redact_key_builtins_are_disjoint() {
        let mut all: Vec<Vec<String>> = Vec::new();
        for list in [
            DEFAULT_DENY_KEYS,
            DEFAULT_ALLOW_KEYS,
            DEFAULT_PSEUDONYMISE_KEYS,
            SEMCONV_KEYS,
        ] {
            for k in list {
                let w = words(k);
                assert!(!w.is_empty(), "{k}");
                assert!(!all.contains(&w), "{k} listed twice");
                all.push(w);
            }
        }
    }

    #[test]
    fn redact_key_user_overrides_builtin_and_conflicts() {
        let allow = vec!["name".to_string()];
        let deny = vec!["customer.comment".to_string(), "order.id".to_string()];
        let r = KeyRules::build(&UserLists {
            allow: Some(&allow),
            deny: Some(&deny),
            pseudonymise: None,
        })
        .unwrap();
        assert_eq!(r.lookup("first_name").unwrap().action, KeyAction::Deny);
        assert_eq!(r.lookup("customer.name").unwrap().action, KeyAction::Allow);
        assert_eq!(r.lookup("customerComment").unwrap().action, KeyAction::Deny);
        assert_eq!(r.lookup("order.id").unwrap().action, KeyAction::Deny);

        let both = vec!["customer.id".to_string()];
        let err = KeyRules::build(&UserLists {
            allow: Some(&both),
            deny: None,
            pseudonymise: Some(&both),
        })
        .unwrap_err();
        assert_eq!(err.field, "redaction.pseudonymise_keys[0]");
        assert!(err.message().contains("allow_keys[0]"), "{}", err.message());

        let bad = vec!["ok".to_string(), "..".to_string()];
        let err = KeyRules::build(&UserLists {
            allow: None,
            deny: Some(&bad),
            pseudonymise: None,
        })
        .unwrap_err();
        assert_eq!(err.field, "redaction.deny_keys[1]");
    }
}
