//! One direction of an AMQP 0-9-1 connection, decoded incrementally: bytes go in as they arrive, cut at any
//! point, and complete protocol units come out as [`Event`]s.
//!
//! - The client direction starts with the 8-byte protocol header; anything else there (TLS, AMQP 1.0, a
//!   different 0-9 variant, another protocol) makes the decoder give up ([`GiveUp`]), and the connection is
//!   then passed through untouched.
//! - Frames are followed across reads. Memory per direction is bounded: a method or content-header frame
//!   is held until complete (at most the frame size limit, [`Limits::max_frame`]), a body frame keeps only
//!   the prefix a rule may read ([`Limits::capture`]); the rest of a body streams by without a copy. A frame
//!   larger than the limit, a bad frame-end octet or an unknown frame type makes the decoder give up.
//! - Per channel, a content-bearing method (`basic.publish`, `basic.deliver`, `basic.get-ok`,
//!   `basic.return`) is joined with its content header ([`Event::Header`]) and, once the body is complete,
//!   announced with its body prefix ([`Event::Body`]).
//!
//! The decoder never fails on input: errors inside a frame whose length is known (a malformed method or
//! properties) are reported as events and decoding goes on with the next frame.

use std::collections::BTreeMap;

use crate::frame::{
    content_body_size, parse_content_header, parse_method, ContentHeader, Method, FRAME_BODY,
    FRAME_END, FRAME_HEADER, FRAME_HEADER_LEN, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
};
use crate::wire::WireError;

/// Channels with content in progress, per direction, beyond which the decoder gives up.
pub const MAX_CHANNELS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → broker (Envoy's downstream data).
    Client,
    /// Broker → client (Envoy's upstream data).
    Broker,
}

/// Why a direction stopped decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// A TLS record (`0x16 0x03 ..`) where the AMQP protocol header should be.
    Tls,
    /// An AMQP 1.0 (or its SASL/TLS layer) protocol header.
    Amqp10,
    /// `AMQP` with another 0-x version (0-8, 0-9, 0-10).
    OtherAmqpVersion,
    /// Not AMQP at all.
    NotAmqp,
    /// A frame type other than method, header, body, heartbeat.
    FrameType(u8),
    /// The octet after a frame payload is not 0xCE.
    FrameEnd,
    /// A frame larger than the negotiated (and capped) frame size.
    FrameTooLarge(u32),
    /// More than [`MAX_CHANNELS`] channels with content in flight.
    TooManyChannels,
    /// The host handed over a buffer that does not continue the stream (glue bug or host change).
    Resync,
}

impl GiveUp {
    /// A short identifier for logs and attributes.
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUp::Tls => "tls",
            GiveUp::Amqp10 => "amqp_1_0",
            GiveUp::OtherAmqpVersion => "amqp_other_version",
            GiveUp::NotAmqp => "not_amqp",
            GiveUp::FrameType(_) => "frame_type",
            GiveUp::FrameEnd => "frame_end",
            GiveUp::FrameTooLarge(_) => "frame_too_large",
            GiveUp::TooManyChannels => "too_many_channels",
            GiveUp::Resync => "resync",
        }
    }
}

/// Position of a whole frame in the direction's byte stream: `[start, end)`, counted from the first byte
/// the decoder was fed (the protocol header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpan {
    pub start: u64,
    pub end: u64,
}

/// What the decoder found. Events are short-lived (one feed), so the size difference between the
/// variants costs nothing worth a box per content header.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client's protocol header (`AMQP 0-9-1`).
    ProtocolHeader,
    /// A method without content.
    Method {
        channel: u16,
        method: Method,
    },
    /// A method frame whose arguments could not be read.
    MalformedMethod {
        channel: u16,
        class_id: u16,
        method_id: u16,
        error: WireError,
    },
    /// A content header, with the content-bearing method before it (`None` when no such method came first,
    /// or it was malformed). `header` is an error when the properties could not be read; the body size is
    /// still known then, so the stream stays in sync.
    Header {
        channel: u16,
        method: Option<Method>,
        header: Result<ContentHeader, WireError>,
        frame: FrameSpan,
        /// The frame payload as received (for rewriting).
        payload: Vec<u8>,
    },
    /// The body of the content announced by the last [`Event::Header`] on this channel is complete.
    Body {
        channel: u16,
        /// The first bytes of the body, at most [`Limits::capture`] (less if the content type is not JSON).
        prefix: Vec<u8>,
        body_size: u64,
    },
    Heartbeat,
    GaveUp(GiveUp),
}

/// Bounds for one feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (payload + 8) accepted.
    pub max_frame: u32,
    /// Body bytes kept per message for rules (0 when no rule reads a body).
    pub capture: usize,
}

#[derive(Debug)]
enum Stage {
    ProtocolHeader {
        have: usize,
    },
    FrameHeader {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
        start: u64,
    },
    Payload {
        frame_type: u8,
        channel: u16,
        size: u32,
        have: u32,
        keep: Vec<u8>,
        keep_limit: usize,
        start: u64,
    },
    End {
        frame_type: u8,
        channel: u16,
        size: u32,
        keep: Vec<u8>,
        start: u64,
    },
    Stopped,
}

#[derive(Debug, Default)]
struct Assembly {
    /// A content-bearing method waiting for its header.
    method: Option<Method>,
    /// Body bytes still to come after the header.
    body_remaining: Option<u64>,
    body_size: u64,
    prefix: Vec<u8>,
    capture: usize,
}

/// The decoder of one direction.
#[derive(Debug)]
pub struct Decoder {
    dir: Direction,
    stage: Stage,
    pos: u64,
    channels: BTreeMap<u16, Assembly>,
    /// The negotiated frame-max (0 = not yet known / no limit).
    negotiated_frame_max: u32,
}

fn classify_bad_header(seen: &[u8]) -> GiveUp {
    match seen {
        [0x16, ..] => GiveUp::Tls,
        // AMQP 1.0 headers are `AMQP id 1 0 0` with id 0 (plain), 2 (TLS) or 3 (SASL); the 0-8/0-9 ones
        // have id 1. The mismatch may be seen before the whole header arrived.
        [b'A', b'M', b'Q', b'P', 2 | 3, ..] | [b'A', b'M', b'Q', b'P', 0, 1, ..] => GiveUp::Amqp10,
        [b'A', b'M', b'Q', b'P', rest @ ..] if !rest.is_empty() => GiveUp::OtherAmqpVersion,
        _ => GiveUp::NotAmqp,
    }
}

impl Decoder {
    pub fn new(dir: Direction) -> Self {
        Decoder {
            dir,
            stage: match dir {
                Direction::Client => Stage::ProtocolHeader { have: 0 },
                Direction::Broker => Stage::FrameHeader {
                    buf: [0; FRAME_HEADER_LEN],
                    have: 0,
                    start: 0,
                },
            },
            pos: 0,
            channels: BTreeMap::new(),
            negotiated_frame_max: 0,
        }
    }

    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn stopped(&self) -> bool {
        matches!(self.stage, Stage::Stopped)
    }

    /// Sets the frame-max both peers agreed on (`connection.tune-ok`); 0 means no limit.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.negotiated_frame_max = frame_max;
    }

    /// True while the decoder holds the first part of a content-header frame (the only frame the filter
    /// may rewrite), i.e. the frame started in bytes already fed and has not ended yet.
    pub fn inside_header_frame(&self) -> bool {
        match &self.stage {
            Stage::FrameHeader { buf, have, .. } => *have > 0 && buf.first() == Some(&FRAME_HEADER),
            Stage::Payload { frame_type, .. } | Stage::End { frame_type, .. } => {
                *frame_type == FRAME_HEADER
            }
            _ => false,
        }
    }

    /// Stream position where the frame in progress started (meaningful while [`Self::inside_header_frame`]).
    pub fn frame_in_progress_start(&self) -> Option<u64> {
        match &self.stage {
            Stage::FrameHeader { have, start, .. } if *have > 0 => Some(*start),
            Stage::Payload { start, .. } | Stage::End { start, .. } => Some(*start),
            _ => None,
        }
    }

    /// Stops decoding for good (the connection is passed through from now on).
    pub fn stop(&mut self) {
        self.stage = Stage::Stopped;
        self.channels.clear();
    }

    fn give_up(&mut self, why: GiveUp, out: &mut Vec<Event>) {
        self.stop();
        out.push(Event::GaveUp(why));
    }

    fn frame_limit(&self, limits: &Limits) -> u32 {
        if self.negotiated_frame_max == 0 {
            limits.max_frame
        } else {
            self.negotiated_frame_max.min(limits.max_frame)
        }
    }

    /// Decodes `input`, the next bytes of this direction, appending what it finds to `out`.
    pub fn feed(&mut self, mut input: &[u8], limits: &Limits, out: &mut Vec<Event>) {
        while !input.is_empty() {
            let stage = std::mem::replace(&mut self.stage, Stage::Stopped);
            match stage {
                Stage::Stopped => {
                    self.pos += input.len() as u64;
                    return;
                }
                Stage::ProtocolHeader { have } => {
                    let want = PROTOCOL_HEADER.len() - have;
                    let n = want.min(input.len());
                    let (chunk, rest) = split(input, n);
                    let expected = PROTOCOL_HEADER.get(have..have + n).unwrap_or_default();
                    if chunk != expected {
                        let mut seen: Vec<u8> =
                            PROTOCOL_HEADER.get(..have).unwrap_or_default().to_vec();
                        seen.extend_from_slice(chunk);
                        self.pos += input.len() as u64;
                        self.give_up(classify_bad_header(&seen), out);
                        return;
                    }
                    self.pos += n as u64;
                    input = rest;
                    if have + n == PROTOCOL_HEADER.len() {
                        out.push(Event::ProtocolHeader);
                        self.stage = Stage::FrameHeader {
                            buf: [0; FRAME_HEADER_LEN],
                            have: 0,
                            start: self.pos,
                        };
                    } else {
                        self.stage = Stage::ProtocolHeader { have: have + n };
                    }
                }
                Stage::FrameHeader {
                    mut buf,
                    have,
                    start,
                } => {
                    let n = (FRAME_HEADER_LEN - have).min(input.len());
                    let (chunk, rest) = split(input, n);
                    if let Some(dst) = buf.get_mut(have..have + n) {
                        dst.copy_from_slice(chunk);
                    }
                    self.pos += n as u64;
                    input = rest;
                    let have = have + n;
                    if have < FRAME_HEADER_LEN {
                        self.stage = Stage::FrameHeader { buf, have, start };
                        continue;
                    }
                    let [frame_type, c0, c1, s0, s1, s2, s3] = buf;
                    let channel = u16::from_be_bytes([c0, c1]);
                    let size = u32::from_be_bytes([s0, s1, s2, s3]);
                    if !matches!(
                        frame_type,
                        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
                    ) {
                        self.pos += input.len() as u64;
                        self.give_up(GiveUp::FrameType(frame_type), out);
                        return;
                    }
                    let limit = self.frame_limit(limits);
                    if u64::from(size) + 8 > u64::from(limit) {
                        self.pos += input.len() as u64;
                        self.give_up(GiveUp::FrameTooLarge(size), out);
                        return;
                    }
                    let keep_limit = match frame_type {
                        FRAME_BODY => self
                            .channels
                            .get(&channel)
                            .map_or(0, |a| a.capture.saturating_sub(a.prefix.len())),
                        FRAME_HEARTBEAT => 0,
                        _ => size as usize,
                    };
                    self.stage = if size == 0 {
                        Stage::End {
                            frame_type,
                            channel,
                            size,
                            keep: Vec::new(),
                            start,
                        }
                    } else {
                        Stage::Payload {
                            frame_type,
                            channel,
                            size,
                            have: 0,
                            keep: Vec::with_capacity(keep_limit.min(size as usize)),
                            keep_limit,
                            start,
                        }
                    };
                }
                Stage::Payload {
                    frame_type,
                    channel,
                    size,
                    have,
                    mut keep,
                    keep_limit,
                    start,
                } => {
                    let left = size.saturating_sub(have) as usize;
                    let n = left.min(input.len());
                    let (chunk, rest) = split(input, n);
                    let room = keep_limit.saturating_sub(keep.len());
                    keep.extend_from_slice(chunk.get(..room.min(n)).unwrap_or_default());
                    self.pos += n as u64;
                    input = rest;
                    let have = have + n as u32;
                    self.stage = if have == size {
                        Stage::End {
                            frame_type,
                            channel,
                            size,
                            keep,
                            start,
                        }
                    } else {
                        Stage::Payload {
                            frame_type,
                            channel,
                            size,
                            have,
                            keep,
                            keep_limit,
                            start,
                        }
                    };
                }
                Stage::End {
                    frame_type,
                    channel,
                    size,
                    keep,
                    start,
                } => {
                    let (end_byte, rest) = split(input, 1);
                    self.pos += 1;
                    input = rest;
                    if end_byte != [FRAME_END] {
                        self.pos += input.len() as u64;
                        self.give_up(GiveUp::FrameEnd, out);
                        return;
                    }
                    self.stage = Stage::FrameHeader {
                        buf: [0; FRAME_HEADER_LEN],
                        have: 0,
                        start: self.pos,
                    };
                    let frame = FrameSpan {
                        start,
                        end: self.pos,
                    };
                    self.on_frame(frame_type, channel, size, keep, frame, limits, out);
                    if self.stopped() {
                        self.pos += input.len() as u64;
                        return;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_frame(
        &mut self,
        frame_type: u8,
        channel: u16,
        size: u32,
        payload: Vec<u8>,
        frame: FrameSpan,
        limits: &Limits,
        out: &mut Vec<Event>,
    ) {
        match frame_type {
            FRAME_METHOD => {
                // A method frame ends any content in progress on the channel (a peer that breaks the
                // content sequence gets a connection error from the other side anyway).
                self.channels.remove(&channel);
                match parse_method(&payload) {
                    Ok(method) if method.has_content() => {
                        if !self.track_channel(channel, out) {
                            return;
                        }
                        self.channels.insert(
                            channel,
                            Assembly {
                                method: Some(method),
                                ..Assembly::default()
                            },
                        );
                    }
                    Ok(method) => {
                        if let Method::ConnectionTuneOk { frame_max, .. } = &method {
                            if self.dir == Direction::Client {
                                self.negotiated_frame_max = *frame_max;
                            }
                        }
                        out.push(Event::Method { channel, method });
                    }
                    Err(error) => {
                        let mut ids = [0u8; 4];
                        for (d, s) in ids.iter_mut().zip(payload.iter()) {
                            *d = *s;
                        }
                        let [c0, c1, m0, m1] = ids;
                        out.push(Event::MalformedMethod {
                            channel,
                            class_id: u16::from_be_bytes([c0, c1]),
                            method_id: u16::from_be_bytes([m0, m1]),
                            error,
                        });
                    }
                }
            }
            FRAME_HEADER => {
                let method = self.channels.remove(&channel).and_then(|a| {
                    if a.body_remaining.is_none() {
                        a.method
                    } else {
                        None
                    }
                });
                let header = parse_content_header(&payload);
                let body_size = match &header {
                    Ok(h) => Ok(h.body_size),
                    Err(_) => content_body_size(&payload),
                };
                let Ok(body_size) = body_size else {
                    // Not even the body size: the body frames that follow are skipped one by one.
                    out.push(Event::Header {
                        channel,
                        method,
                        header,
                        frame,
                        payload,
                    });
                    return;
                };
                let json_or_unknown = match &header {
                    Ok(h) => h
                        .properties
                        .content_type
                        .as_deref()
                        .is_none_or(is_json_content_type),
                    Err(_) => false,
                };
                let capture = if json_or_unknown && method.is_some() {
                    limits.capture
                } else {
                    0
                };
                out.push(Event::Header {
                    channel,
                    method,
                    header,
                    frame,
                    payload,
                });
                if body_size == 0 {
                    out.push(Event::Body {
                        channel,
                        prefix: Vec::new(),
                        body_size: 0,
                    });
                    return;
                }
                if !self.track_channel(channel, out) {
                    return;
                }
                self.channels.insert(
                    channel,
                    Assembly {
                        method: None,
                        body_remaining: Some(body_size),
                        body_size,
                        prefix: Vec::new(),
                        capture,
                    },
                );
            }
            FRAME_BODY => {
                let Some(a) = self.channels.get_mut(&channel) else {
                    return;
                };
                let Some(remaining) = a.body_remaining else {
                    // A body where a header was expected: drop the content.
                    self.channels.remove(&channel);
                    return;
                };
                let room = a.capture.saturating_sub(a.prefix.len());
                a.prefix
                    .extend_from_slice(payload.get(..room.min(payload.len())).unwrap_or_default());
                let remaining = remaining.saturating_sub(u64::from(size));
                if remaining == 0 {
                    if let Some(a) = self.channels.remove(&channel) {
                        out.push(Event::Body {
                            channel,
                            prefix: a.prefix,
                            body_size: a.body_size,
                        });
                    }
                } else {
                    a.body_remaining = Some(remaining);
                }
            }
            _ => out.push(Event::Heartbeat),
        }
    }

    fn track_channel(&mut self, channel: u16, out: &mut Vec<Event>) -> bool {
        if self.channels.len() >= MAX_CHANNELS && !self.channels.contains_key(&channel) {
            self.give_up(GiveUp::TooManyChannels, out);
            return false;
        }
        true
    }
}

/// `input` cut after `n` bytes (all of it when shorter).
fn split(input: &[u8], n: usize) -> (&[u8], &[u8]) {
    input.split_at_checked(n).unwrap_or((input, &[]))
}

/// `application/json`, `*/*+json`, `text/json` (parameters ignored, case-insensitive).
pub fn is_json_content_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_content_header, encode_frame, encode_method, Close, Properties};

    const LIMITS: Limits = Limits {
        max_frame: 131072,
        capture: 16,
    };

    fn method(ch: u16, m: &Method) -> Vec<u8> {
        encode_frame(FRAME_METHOD, ch, &encode_method(m))
    }

    fn publish_bytes(ch: u16, body: &[u8], frames: &[usize]) -> Vec<u8> {
        let mut b = method(
            ch,
            &Method::BasicPublish {
                exchange: "orders".into(),
                routing_key: "order.submitted".into(),
                mandatory: false,
                immediate: false,
            },
        );
        b.extend(encode_frame(
            FRAME_HEADER,
            ch,
            &encode_content_header(body.len() as u64, &Properties::default()),
        ));
        let mut at = 0;
        for n in frames {
            b.extend(encode_frame(FRAME_BODY, ch, &body[at..at + n]));
            at += n;
        }
        b
    }

    fn decode_all(dir: Direction, bytes: &[u8], chunk: usize) -> Vec<Event> {
        let mut d = Decoder::new(dir);
        let mut out = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.feed(c, &LIMITS, &mut out);
        }
        assert_eq!(d.position(), bytes.len() as u64);
        out
    }

    fn client_session() -> Vec<u8> {
        let mut b = PROTOCOL_HEADER.to_vec();
        b.extend(method(
            0,
            &Method::ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 60,
            },
        ));
        b.extend(method(1, &Method::ChannelOpen));
        b.extend(publish_bytes(
            1,
            b"{\"orderId\":\"ORD-1001\",\"x\":1}",
            &[10, 18],
        ));
        b.extend(encode_frame(FRAME_HEARTBEAT, 0, &[]));
        b.extend(publish_bytes(2, b"", &[]));
        b.extend(method(
            0,
            &Method::ConnectionClose(Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            }),
        ));
        b
    }

    #[test]
    fn a_session_decodes_the_same_at_every_chunk_size() {
        let bytes = client_session();
        let whole = decode_all(Direction::Client, &bytes, bytes.len());
        let kinds: Vec<&str> = whole
            .iter()
            .map(|e| match e {
                Event::ProtocolHeader => "proto",
                Event::Method { .. } => "method",
                Event::Header { .. } => "header",
                Event::Body { .. } => "body",
                Event::Heartbeat => "heartbeat",
                Event::MalformedMethod { .. } => "malformed",
                Event::GaveUp(_) => "gaveup",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "proto",
                "method",
                "method",
                "header",
                "body",
                "heartbeat",
                "header",
                "body",
                "method"
            ]
        );
        match &whole[4] {
            Event::Body {
                channel,
                prefix,
                body_size,
            } => {
                assert_eq!(*channel, 1);
                assert_eq!(*body_size, 28);
                assert_eq!(prefix, b"{\"orderId\":\"ORD-");
            }
            e => panic!("{e:?}"),
        }
        match &whole[3] {
            Event::Header {
                method: Some(Method::BasicPublish { exchange, .. }),
                frame,
                ..
            } => {
                assert_eq!(exchange, "orders");
                // The frame span points at the header frame in the stream.
                let f = &bytes[frame.start as usize..frame.end as usize];
                assert_eq!(f[0], FRAME_HEADER);
                assert_eq!(*f.last().unwrap(), FRAME_END);
            }
            e => panic!("{e:?}"),
        }
        for chunk in 1..bytes.len() {
            assert_eq!(
                decode_all(Direction::Client, &bytes, chunk),
                whole,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_events() {
        let bytes = client_session();
        let whole = decode_all(Direction::Client, &bytes, bytes.len());
        for cut in 0..=bytes.len() {
            let mut d = Decoder::new(Direction::Client);
            let mut out = Vec::new();
            d.feed(&bytes[..cut], &LIMITS, &mut out);
            d.feed(&bytes[cut..], &LIMITS, &mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn inside_header_frame_is_reported_only_for_content_headers() {
        let bytes = client_session();
        let mut d = Decoder::new(Direction::Client);
        let mut out = Vec::new();
        let mut inside = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b), &LIMITS, &mut out);
            inside.push(d.inside_header_frame());
        }
        // Every header frame byte but the last leaves the decoder inside it.
        let headers: Vec<FrameSpan> = out
            .iter()
            .filter_map(|e| match e {
                Event::Header { frame, .. } => Some(*frame),
                _ => None,
            })
            .collect();
        for (i, flag) in inside.iter().enumerate() {
            let pos = i as u64 + 1; // bytes fed
            let expected = headers.iter().any(|f| pos > f.start && pos < f.end);
            assert_eq!(*flag, expected, "after {pos} bytes");
        }
    }

    #[test]
    fn gives_up_on_what_is_not_amqp_0_9_1() {
        // (first bytes, reason, why)
        let cases: &[(&[u8], GiveUp, &str)] = &[
            (
                &[0x16, 0x03, 0x01, 0x02, 0x00],
                GiveUp::Tls,
                "TLS client hello",
            ),
            (b"AMQP\x00\x01\x00\x00", GiveUp::Amqp10, "AMQP 1.0"),
            (
                b"AMQP\x03\x01\x00\x00",
                GiveUp::Amqp10,
                "AMQP 1.0 SASL layer",
            ),
            (
                b"AMQP\x02\x01\x00\x00",
                GiveUp::Amqp10,
                "AMQP 1.0 TLS layer",
            ),
            (
                b"AMQP\x01\x01\x00\x09",
                GiveUp::OtherAmqpVersion,
                "AMQP 0-9",
            ),
            (
                b"AMQP\x00\x00\x08\x00",
                GiveUp::OtherAmqpVersion,
                "AMQP 0-8",
            ),
            (b"GET / HTTP/1.1\r\n", GiveUp::NotAmqp, "HTTP"),
            (b"\x00\x00", GiveUp::NotAmqp, "zeros"),
        ];
        for (bytes, reason, why) in cases {
            for chunk in 1..=bytes.len() {
                let out = decode_all(Direction::Client, bytes, chunk);
                assert_eq!(
                    out,
                    vec![Event::GaveUp(*reason)],
                    "{why} in chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn gives_up_on_broken_framing() {
        let mut bad_end = method(1, &Method::ChannelOpen);
        *bad_end.last_mut().unwrap() = 0;
        let big = {
            let mut f = vec![FRAME_BODY, 0, 1];
            f.extend_from_slice(&200_000u32.to_be_bytes());
            f
        };
        // (broker bytes, reason, why)
        let cases: Vec<(Vec<u8>, GiveUp, &str)> = vec![
            (
                b"AMQP\x00\x00\x09\x01".to_vec(),
                GiveUp::FrameType(b'A'),
                "broker version reply",
            ),
            (bad_end, GiveUp::FrameEnd, "frame end octet"),
            (big, GiveUp::FrameTooLarge(200_000), "frame over the limit"),
            (
                vec![4, 0, 0, 0, 0, 0, 0, 0xCE],
                GiveUp::FrameType(4),
                "old heartbeat type",
            ),
        ];
        for (bytes, reason, why) in cases {
            let out = decode_all(Direction::Broker, &bytes, 3);
            assert_eq!(out.last(), Some(&Event::GaveUp(reason)), "{why}");
        }
    }

    #[test]
    fn negotiated_frame_max_applies() {
        let mut d = Decoder::new(Direction::Broker);
        d.set_frame_max(4096);
        let mut out = Vec::new();
        d.feed(&encode_frame(FRAME_BODY, 1, &[0; 4088]), &LIMITS, &mut out);
        assert!(out.is_empty());
        d.feed(&encode_frame(FRAME_BODY, 1, &[0; 4089]), &LIMITS, &mut out);
        assert_eq!(out, vec![Event::GaveUp(GiveUp::FrameTooLarge(4089))]);
        // After giving up, input is swallowed and counted.
        d.feed(&[1, 2, 3], &LIMITS, &mut out);
        assert_eq!(out.len(), 1);
        assert!(d.stopped());
    }

    #[test]
    fn bad_properties_keep_the_stream_in_sync() {
        let mut payload = encode_content_header(3, &Properties::default());
        payload[12] = 0x20; // claims a headers table that is not there
        let mut b = method(
            5,
            &Method::BasicDeliver {
                consumer_tag: "c".into(),
                delivery_tag: 1,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
            },
        );
        b.extend(encode_frame(FRAME_HEADER, 5, &payload));
        b.extend(encode_frame(FRAME_BODY, 5, b"abc"));
        b.extend(method(5, &Method::ChannelCloseOk));
        let out = decode_all(Direction::Broker, &b, 1);
        assert!(matches!(
            &out[0],
            Event::Header {
                header: Err(_),
                method: Some(_),
                ..
            }
        ));
        assert!(matches!(&out[1], Event::Body { body_size: 3, .. }));
        assert!(matches!(
            &out[2],
            Event::Method {
                channel: 5,
                method: Method::ChannelCloseOk
            }
        ));
    }

    #[test]
    fn content_types_that_are_captured() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+json",
            "text/json",
        ] {
            assert!(is_json_content_type(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/octet-stream",
            "application/jsonx",
        ] {
            assert!(!is_json_content_type(ct), "{ct}");
        }
    }
}
