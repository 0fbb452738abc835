//! Redaction of a finished span, the last step before its bytes exist: every string of the span goes
//! through the [`Redactor`] (span name, attribute values by key rules and detectors, events, links, the
//! status message).

use super::{Redacted, Redactor};
use crate::otlp::{self, AttrValue, SpanRecord};

/// Attributes whose values the caller has already redacted with structure-aware rules (`url.path` keeps
/// template variables, `url.query` works per parameter); the generic pass leaves them alone.
pub const PRE_REDACTED: [&str; 2] = ["url.path", "url.query"];

fn redact_attrs(redactor: &Redactor, attrs: &mut Vec<(String, AttrValue)>) {
    attrs.retain_mut(|(k, v)| {
        if PRE_REDACTED.contains(&k.as_str()) {
            return true;
        }
        let AttrValue::Str(s) = v else { return true };
        match redactor.attribute(k, s) {
            Redacted::Drop => false,
            Redacted::Keep(std::borrow::Cow::Borrowed(_)) => true,
            Redacted::Keep(std::borrow::Cow::Owned(new)) => {
                *s = new;
                true
            }
        }
    });
}

fn redact_text(redactor: &Redactor, s: &mut String) {
    if let std::borrow::Cow::Owned(new) = redactor.text(s) {
        *s = new;
    }
}

/// Pass every string of the span through the redactor: span name, attribute values (by key rules and
/// detectors), event names and attributes, link attributes, the status message.
pub fn redact_span(redactor: &Redactor, span: &mut SpanRecord) {
    redact_text(redactor, &mut span.name);
    redact_attrs(redactor, &mut span.attributes);
    for e in &mut span.events {
        redact_text(redactor, &mut e.name);
        redact_attrs(redactor, &mut e.attributes);
    }
    for l in &mut span.links {
        redact_attrs(redactor, &mut l.attributes);
    }
    redact_text(redactor, &mut span.status_message);
}

/// Redact, then encode: the bytes of one OTLP `Span` message. The only way the core turns a span into bytes.
pub fn encode_span(redactor: &Redactor, mut span: SpanRecord) -> Vec<u8> {
    redact_span(redactor, &mut span);
    otlp::encode_record(&span)
}
