//! AMQP 0-9-1 frames and the parts of their payloads the tracer reads: the methods of the `connection`,
//! `channel`, `basic` and `confirm` classes that matter for spans, and the content header with its basic
//! properties. Encoders for the same types exist for the one rewrite the filter makes (adding a header to a
//! content header) and for building test traffic.
//!
//! Wire layout (AMQP 0-9-1 §2.3.5 and §4.2.3):
//! `frame = type:u8 channel:u16 size:u32 payload[size] 0xCE`; a method payload is
//! `class:u16 method:u16 arguments`; a content header payload is
//! `class:u16 weight:u16 body-size:u64 property-flags:u16 property-list`.

use crate::table::{read_table, write_table, Table};
use crate::wire::{put_shortstr, Reader, WireError};

/// What an AMQP 0-9-1 client sends first.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
/// RabbitMQ (and the 0-9-1 XML) use 8; the PDF's 4 is an erratum.
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// type + channel + size.
pub const FRAME_HEADER_LEN: usize = 7;
/// The smallest frame size limit a peer may negotiate; also the limit before `connection.tune-ok`.
pub const FRAME_MIN_SIZE: u32 = 4096;

pub const CLASS_CONNECTION: u16 = 10;
pub const CLASS_CHANNEL: u16 = 20;
pub const CLASS_BASIC: u16 = 60;
pub const CLASS_CONFIRM: u16 = 85;

/// Bits of the first property-flags word of the basic class (bit 15 is the first property).
pub mod prop {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
    /// Another flags word follows (never for the basic class).
    pub const CONTINUATION: u16 = 1;
}

/// Encodes one frame.
pub fn encode_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER_LEN + 1);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

/// The methods the tracer understands; everything else is [`Method::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    ConnectionStart {
        server_properties: Table,
    },
    ConnectionStartOk {
        client_properties: Table,
        mechanism: String,
    },
    ConnectionTune {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    ConnectionTuneOk {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    ConnectionOpen {
        vhost: String,
    },
    ConnectionOpenOk,
    ConnectionClose(Close),
    ConnectionCloseOk,
    ConnectionBlocked {
        reason: String,
    },
    ConnectionUnblocked,
    ChannelOpen,
    ChannelOpenOk,
    ChannelClose(Close),
    ChannelCloseOk,
    BasicConsume {
        queue: String,
        consumer_tag: String,
        no_ack: bool,
    },
    BasicConsumeOk {
        consumer_tag: String,
    },
    BasicCancel {
        consumer_tag: String,
    },
    BasicCancelOk {
        consumer_tag: String,
    },
    BasicPublish {
        exchange: String,
        routing_key: String,
        mandatory: bool,
        immediate: bool,
    },
    BasicReturn {
        reply_code: u16,
        reply_text: String,
        exchange: String,
        routing_key: String,
    },
    BasicDeliver {
        consumer_tag: String,
        delivery_tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
    },
    BasicGet {
        queue: String,
        no_ack: bool,
    },
    BasicGetOk {
        delivery_tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
        message_count: u32,
    },
    BasicGetEmpty,
    BasicAck {
        delivery_tag: u64,
        multiple: bool,
    },
    BasicReject {
        delivery_tag: u64,
        requeue: bool,
    },
    BasicRecoverAsync {
        requeue: bool,
    },
    BasicRecover {
        requeue: bool,
    },
    BasicNack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    ConfirmSelect {
        nowait: bool,
    },
    ConfirmSelectOk,
    /// `tx.select` … `tx.rollback-ok`: no arguments.
    TxSelect,
    TxSelectOk,
    TxCommit,
    TxCommitOk,
    TxRollback,
    TxRollbackOk,
    Other {
        class_id: u16,
        method_id: u16,
    },
}

/// The arguments of `connection.close` and `channel.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub reply_code: u16,
    pub reply_text: String,
    /// The method that caused the close (0/0 for a normal close).
    pub class_id: u16,
    pub method_id: u16,
}

impl Method {
    /// Whether a content header (and body) follows this method.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish { .. }
                | Method::BasicReturn { .. }
                | Method::BasicDeliver { .. }
                | Method::BasicGetOk { .. }
        )
    }

    /// The `(class, method)` ids.
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::ConnectionStart { .. } => (10, 10),
            Method::ConnectionStartOk { .. } => (10, 11),
            Method::ConnectionTune { .. } => (10, 30),
            Method::ConnectionTuneOk { .. } => (10, 31),
            Method::ConnectionOpen { .. } => (10, 40),
            Method::ConnectionOpenOk => (10, 41),
            Method::ConnectionClose(_) => (10, 50),
            Method::ConnectionCloseOk => (10, 51),
            Method::ConnectionBlocked { .. } => (10, 60),
            Method::ConnectionUnblocked => (10, 61),
            Method::ChannelOpen => (20, 10),
            Method::ChannelOpenOk => (20, 11),
            Method::ChannelClose(_) => (20, 40),
            Method::ChannelCloseOk => (20, 41),
            Method::BasicConsume { .. } => (60, 20),
            Method::BasicConsumeOk { .. } => (60, 21),
            Method::BasicCancel { .. } => (60, 30),
            Method::BasicCancelOk { .. } => (60, 31),
            Method::BasicPublish { .. } => (60, 40),
            Method::BasicReturn { .. } => (60, 50),
            Method::BasicDeliver { .. } => (60, 60),
            Method::BasicGet { .. } => (60, 70),
            Method::BasicGetOk { .. } => (60, 71),
            Method::BasicGetEmpty => (60, 72),
            Method::BasicAck { .. } => (60, 80),
            Method::BasicReject { .. } => (60, 90),
            Method::BasicRecoverAsync { .. } => (60, 100),
            Method::BasicRecover { .. } => (60, 110),
            Method::BasicNack { .. } => (60, 120),
            Method::ConfirmSelect { .. } => (85, 10),
            Method::ConfirmSelectOk => (85, 11),
            Method::TxSelect => (90, 10),
            Method::TxSelectOk => (90, 11),
            Method::TxCommit => (90, 20),
            Method::TxCommitOk => (90, 21),
            Method::TxRollback => (90, 30),
            Method::TxRollbackOk => (90, 31),
            Method::Other {
                class_id,
                method_id,
            } => (*class_id, *method_id),
        }
    }
}

fn bit(bits: u8, n: u8) -> bool {
    bits & (1 << n) != 0
}

fn read_close(r: &mut Reader<'_>) -> Result<Close, WireError> {
    Ok(Close {
        reply_code: r.u16()?,
        reply_text: r.shortstr()?,
        class_id: r.u16()?,
        method_id: r.u16()?,
    })
}

/// Parses a method frame payload. Arguments after the last one the tracer needs are not checked.
pub fn parse_method(payload: &[u8]) -> Result<Method, WireError> {
    let mut r = Reader::new(payload);
    let class_id = r.u16()?;
    let method_id = r.u16()?;
    let m = match (class_id, method_id) {
        (10, 10) => {
            let _major = r.u8()?;
            let _minor = r.u8()?;
            Method::ConnectionStart {
                server_properties: read_table(&mut r)?,
            }
        }
        (10, 11) => Method::ConnectionStartOk {
            client_properties: read_table(&mut r)?,
            mechanism: r.shortstr()?,
        },
        (10, 30) | (10, 31) => {
            let channel_max = r.u16()?;
            let frame_max = r.u32()?;
            let heartbeat = r.u16()?;
            if method_id == 30 {
                Method::ConnectionTune {
                    channel_max,
                    frame_max,
                    heartbeat,
                }
            } else {
                Method::ConnectionTuneOk {
                    channel_max,
                    frame_max,
                    heartbeat,
                }
            }
        }
        (10, 40) => Method::ConnectionOpen {
            vhost: r.shortstr()?,
        },
        (10, 41) => Method::ConnectionOpenOk,
        (10, 50) => Method::ConnectionClose(read_close(&mut r)?),
        (10, 51) => Method::ConnectionCloseOk,
        (10, 60) => Method::ConnectionBlocked {
            reason: r.shortstr()?,
        },
        (10, 61) => Method::ConnectionUnblocked,
        (20, 10) => Method::ChannelOpen,
        (20, 11) => Method::ChannelOpenOk,
        (20, 40) => Method::ChannelClose(read_close(&mut r)?),
        (20, 41) => Method::ChannelCloseOk,
        (60, 20) => {
            let _ticket = r.u16()?;
            let queue = r.shortstr()?;
            let consumer_tag = r.shortstr()?;
            let bits = r.u8()?;
            Method::BasicConsume {
                queue,
                consumer_tag,
                no_ack: bit(bits, 1),
            }
        }
        (60, 21) => Method::BasicConsumeOk {
            consumer_tag: r.shortstr()?,
        },
        (60, 30) => Method::BasicCancel {
            consumer_tag: r.shortstr()?,
        },
        (60, 31) => Method::BasicCancelOk {
            consumer_tag: r.shortstr()?,
        },
        (60, 40) => {
            let _ticket = r.u16()?;
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            let bits = r.u8()?;
            Method::BasicPublish {
                exchange,
                routing_key,
                mandatory: bit(bits, 0),
                immediate: bit(bits, 1),
            }
        }
        (60, 50) => Method::BasicReturn {
            reply_code: r.u16()?,
            reply_text: r.shortstr()?,
            exchange: r.shortstr()?,
            routing_key: r.shortstr()?,
        },
        (60, 60) => Method::BasicDeliver {
            consumer_tag: r.shortstr()?,
            delivery_tag: r.u64()?,
            redelivered: bit(r.u8()?, 0),
            exchange: r.shortstr()?,
            routing_key: r.shortstr()?,
        },
        (60, 70) => {
            let _ticket = r.u16()?;
            let queue = r.shortstr()?;
            let bits = r.u8()?;
            Method::BasicGet {
                queue,
                no_ack: bit(bits, 0),
            }
        }
        (60, 71) => Method::BasicGetOk {
            delivery_tag: r.u64()?,
            redelivered: bit(r.u8()?, 0),
            exchange: r.shortstr()?,
            routing_key: r.shortstr()?,
            message_count: r.u32()?,
        },
        (60, 72) => Method::BasicGetEmpty,
        (60, 80) => Method::BasicAck {
            delivery_tag: r.u64()?,
            multiple: bit(r.u8()?, 0),
        },
        (60, 90) => Method::BasicReject {
            delivery_tag: r.u64()?,
            requeue: bit(r.u8()?, 0),
        },
        (60, 100) => Method::BasicRecoverAsync {
            requeue: bit(r.u8()?, 0),
        },
        (60, 110) => Method::BasicRecover {
            requeue: bit(r.u8()?, 0),
        },
        (60, 120) => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            Method::BasicNack {
                delivery_tag,
                multiple: bit(bits, 0),
                requeue: bit(bits, 1),
            }
        }
        (85, 10) => Method::ConfirmSelect {
            nowait: bit(r.u8()?, 0),
        },
        (85, 11) => Method::ConfirmSelectOk,
        (90, 10) => Method::TxSelect,
        (90, 11) => Method::TxSelectOk,
        (90, 20) => Method::TxCommit,
        (90, 21) => Method::TxCommitOk,
        (90, 30) => Method::TxRollback,
        (90, 31) => Method::TxRollbackOk,
        _ => Method::Other {
            class_id,
            method_id,
        },
    };
    Ok(m)
}

fn put_close(out: &mut Vec<u8>, c: &Close) {
    out.extend_from_slice(&c.reply_code.to_be_bytes());
    put_shortstr(out, c.reply_text.as_bytes());
    out.extend_from_slice(&c.class_id.to_be_bytes());
    out.extend_from_slice(&c.method_id.to_be_bytes());
}

fn bits(flags: &[bool]) -> u8 {
    flags
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, b)| acc | (u8::from(*b) << i))
}

/// Encodes a method payload (the arguments the tracer does not read are written as zero / empty).
pub fn encode_method(m: &Method) -> Vec<u8> {
    let (class_id, method_id) = m.ids();
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&class_id.to_be_bytes());
    out.extend_from_slice(&method_id.to_be_bytes());
    let o = &mut out;
    match m {
        Method::ConnectionStart { server_properties } => {
            o.extend_from_slice(&[0, 9]);
            write_table(o, server_properties);
            crate::wire::put_longstr(o, b"PLAIN AMQPLAIN");
            crate::wire::put_longstr(o, b"en_US");
        }
        Method::ConnectionStartOk {
            client_properties,
            mechanism,
        } => {
            write_table(o, client_properties);
            put_shortstr(o, mechanism.as_bytes());
            crate::wire::put_longstr(o, b"\0guest\0guest");
            put_shortstr(o, b"en_US");
        }
        Method::ConnectionTune {
            channel_max,
            frame_max,
            heartbeat,
        }
        | Method::ConnectionTuneOk {
            channel_max,
            frame_max,
            heartbeat,
        } => {
            o.extend_from_slice(&channel_max.to_be_bytes());
            o.extend_from_slice(&frame_max.to_be_bytes());
            o.extend_from_slice(&heartbeat.to_be_bytes());
        }
        Method::ConnectionOpen { vhost } => {
            put_shortstr(o, vhost.as_bytes());
            put_shortstr(o, b"");
            o.push(0);
        }
        Method::ConnectionOpenOk => put_shortstr(o, b""),
        Method::ConnectionClose(c) | Method::ChannelClose(c) => put_close(o, c),
        Method::ConnectionBlocked { reason } => put_shortstr(o, reason.as_bytes()),
        Method::ChannelOpen => put_shortstr(o, b""),
        Method::ChannelOpenOk => crate::wire::put_longstr(o, b""),
        Method::BasicConsume {
            queue,
            consumer_tag,
            no_ack,
        } => {
            o.extend_from_slice(&[0, 0]);
            put_shortstr(o, queue.as_bytes());
            put_shortstr(o, consumer_tag.as_bytes());
            o.push(bits(&[false, *no_ack, false, false]));
            write_table(o, &Table::default());
        }
        Method::BasicConsumeOk { consumer_tag } | Method::BasicCancelOk { consumer_tag } => {
            put_shortstr(o, consumer_tag.as_bytes())
        }
        Method::BasicCancel { consumer_tag } => {
            put_shortstr(o, consumer_tag.as_bytes());
            o.push(0);
        }
        Method::BasicPublish {
            exchange,
            routing_key,
            mandatory,
            immediate,
        } => {
            o.extend_from_slice(&[0, 0]);
            put_shortstr(o, exchange.as_bytes());
            put_shortstr(o, routing_key.as_bytes());
            o.push(bits(&[*mandatory, *immediate]));
        }
        Method::BasicReturn {
            reply_code,
            reply_text,
            exchange,
            routing_key,
        } => {
            o.extend_from_slice(&reply_code.to_be_bytes());
            put_shortstr(o, reply_text.as_bytes());
            put_shortstr(o, exchange.as_bytes());
            put_shortstr(o, routing_key.as_bytes());
        }
        Method::BasicDeliver {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
        } => {
            put_shortstr(o, consumer_tag.as_bytes());
            o.extend_from_slice(&delivery_tag.to_be_bytes());
            o.push(u8::from(*redelivered));
            put_shortstr(o, exchange.as_bytes());
            put_shortstr(o, routing_key.as_bytes());
        }
        Method::BasicGet { queue, no_ack } => {
            o.extend_from_slice(&[0, 0]);
            put_shortstr(o, queue.as_bytes());
            o.push(u8::from(*no_ack));
        }
        Method::BasicGetOk {
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
            message_count,
        } => {
            o.extend_from_slice(&delivery_tag.to_be_bytes());
            o.push(u8::from(*redelivered));
            put_shortstr(o, exchange.as_bytes());
            put_shortstr(o, routing_key.as_bytes());
            o.extend_from_slice(&message_count.to_be_bytes());
        }
        Method::BasicGetEmpty => put_shortstr(o, b""),
        Method::BasicAck {
            delivery_tag,
            multiple,
        } => {
            o.extend_from_slice(&delivery_tag.to_be_bytes());
            o.push(u8::from(*multiple));
        }
        Method::BasicReject {
            delivery_tag,
            requeue,
        } => {
            o.extend_from_slice(&delivery_tag.to_be_bytes());
            o.push(u8::from(*requeue));
        }
        Method::BasicRecoverAsync { requeue } | Method::BasicRecover { requeue } => {
            o.push(u8::from(*requeue))
        }
        Method::BasicNack {
            delivery_tag,
            multiple,
            requeue,
        } => {
            o.extend_from_slice(&delivery_tag.to_be_bytes());
            o.push(bits(&[*multiple, *requeue]));
        }
        Method::ConfirmSelect { nowait } => o.push(u8::from(*nowait)),
        Method::ConnectionCloseOk
        | Method::ConnectionUnblocked
        | Method::ChannelCloseOk
        | Method::ConfirmSelectOk
        | Method::TxSelect
        | Method::TxSelectOk
        | Method::TxCommit
        | Method::TxCommitOk
        | Method::TxRollback
        | Method::TxRollbackOk
        | Method::Other { .. } => {}
    }
    out
}

/// The basic-class properties of a content header. Strings are lossy UTF-8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<Table>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

/// A parsed content header.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub flags: u16,
    pub properties: Properties,
}

/// The fixed part of a content header payload: the body size, and the property flags. Readable even when
/// the property list is not.
pub fn content_body_size(payload: &[u8]) -> Result<u64, WireError> {
    let mut r = Reader::new(payload);
    let _class = r.u16()?;
    let _weight = r.u16()?;
    r.u64()
}

/// Parses a content header payload with its basic properties.
pub fn parse_content_header(payload: &[u8]) -> Result<ContentHeader, WireError> {
    let mut r = Reader::new(payload);
    let class_id = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    if flags & prop::CONTINUATION != 0 {
        return Err(WireError::Unsupported);
    }
    let has = |f: u16| flags & f != 0;
    let mut p = Properties::default();
    let s = |r: &mut Reader<'_>, f: u16| -> Result<Option<String>, WireError> {
        if has(f) {
            r.shortstr().map(Some)
        } else {
            Ok(None)
        }
    };
    p.content_type = s(&mut r, prop::CONTENT_TYPE)?;
    p.content_encoding = s(&mut r, prop::CONTENT_ENCODING)?;
    if has(prop::HEADERS) {
        p.headers = Some(read_table(&mut r)?);
    }
    if has(prop::DELIVERY_MODE) {
        p.delivery_mode = Some(r.u8()?);
    }
    if has(prop::PRIORITY) {
        p.priority = Some(r.u8()?);
    }
    p.correlation_id = s(&mut r, prop::CORRELATION_ID)?;
    p.reply_to = s(&mut r, prop::REPLY_TO)?;
    p.expiration = s(&mut r, prop::EXPIRATION)?;
    p.message_id = s(&mut r, prop::MESSAGE_ID)?;
    if has(prop::TIMESTAMP) {
        p.timestamp = Some(r.u64()?);
    }
    p.kind = s(&mut r, prop::TYPE)?;
    p.user_id = s(&mut r, prop::USER_ID)?;
    p.app_id = s(&mut r, prop::APP_ID)?;
    p.cluster_id = s(&mut r, prop::CLUSTER_ID)?;
    Ok(ContentHeader {
        class_id,
        body_size,
        flags,
        properties: p,
    })
}

/// Encodes a basic-class content header payload.
pub fn encode_content_header(body_size: u64, p: &Properties) -> Vec<u8> {
    let mut flags = 0u16;
    let mut list = Vec::new();
    let s = |flags: &mut u16, list: &mut Vec<u8>, f: u16, v: &Option<String>| {
        if let Some(v) = v {
            *flags |= f;
            put_shortstr(list, v.as_bytes());
        }
    };
    s(&mut flags, &mut list, prop::CONTENT_TYPE, &p.content_type);
    s(
        &mut flags,
        &mut list,
        prop::CONTENT_ENCODING,
        &p.content_encoding,
    );
    if let Some(h) = &p.headers {
        flags |= prop::HEADERS;
        write_table(&mut list, h);
    }
    if let Some(v) = p.delivery_mode {
        flags |= prop::DELIVERY_MODE;
        list.push(v);
    }
    if let Some(v) = p.priority {
        flags |= prop::PRIORITY;
        list.push(v);
    }
    s(
        &mut flags,
        &mut list,
        prop::CORRELATION_ID,
        &p.correlation_id,
    );
    s(&mut flags, &mut list, prop::REPLY_TO, &p.reply_to);
    s(&mut flags, &mut list, prop::EXPIRATION, &p.expiration);
    s(&mut flags, &mut list, prop::MESSAGE_ID, &p.message_id);
    if let Some(t) = p.timestamp {
        flags |= prop::TIMESTAMP;
        list.extend_from_slice(&t.to_be_bytes());
    }
    s(&mut flags, &mut list, prop::TYPE, &p.kind);
    s(&mut flags, &mut list, prop::USER_ID, &p.user_id);
    s(&mut flags, &mut list, prop::APP_ID, &p.app_id);
    s(&mut flags, &mut list, prop::CLUSTER_ID, &p.cluster_id);
    let mut out = Vec::with_capacity(14 + list.len());
    out.extend_from_slice(&CLASS_BASIC.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&body_size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&list);
    out
}

/// Adds `name: value` (a long string, `S`) as the last entry of the headers table of a content header
/// payload, creating the table (and setting its property flag) when the message has none. Every other byte
/// keeps its value and order; existing header entries are not re-encoded.
pub fn add_string_header(payload: &[u8], name: &str, value: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut entry = Vec::with_capacity(name.len() + value.len() + 6);
    put_shortstr(&mut entry, name.as_bytes());
    entry.push(b'S');
    crate::wire::put_longstr(&mut entry, value);

    let mut r = Reader::new(payload);
    let _class = r.u16()?;
    let _weight = r.u16()?;
    let _size = r.u64()?;
    let flags = r.u16()?;
    if flags & prop::CONTINUATION != 0 {
        return Err(WireError::Unsupported);
    }
    if flags & prop::CONTENT_TYPE != 0 {
        r.shortstr_bytes()?;
    }
    if flags & prop::CONTENT_ENCODING != 0 {
        r.shortstr_bytes()?;
    }
    let at = r.position();
    let (head, tail) = payload.split_at_checked(at).ok_or(WireError::Short)?;
    let mut out = Vec::with_capacity(payload.len() + entry.len() + 4);
    if flags & prop::HEADERS != 0 {
        let mut t = Reader::new(tail);
        let table = t.longstr()?;
        let rest = tail.get(4 + table.len()..).ok_or(WireError::Short)?;
        let new_len =
            u32::try_from(table.len() + entry.len()).map_err(|_| WireError::Unsupported)?;
        out.extend_from_slice(head);
        out.extend_from_slice(&new_len.to_be_bytes());
        out.extend_from_slice(table);
        out.extend_from_slice(&entry);
        out.extend_from_slice(rest);
    } else {
        let (fixed, after_flags) = head.split_at_checked(12).ok_or(WireError::Short)?;
        let after_flags = after_flags.get(2..).ok_or(WireError::Short)?;
        out.extend_from_slice(fixed);
        out.extend_from_slice(&(flags | prop::HEADERS).to_be_bytes());
        out.extend_from_slice(after_flags);
        out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry);
        out.extend_from_slice(tail);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::FieldValue;

    fn all_methods() -> Vec<Method> {
        let close = Close {
            reply_code: 404,
            reply_text: "NOT_FOUND - no exchange 'nope' in vhost '/'".into(),
            class_id: 60,
            method_id: 40,
        };
        vec![
            Method::ConnectionStart {
                server_properties: Table(vec![(
                    "product".into(),
                    FieldValue::LongStr(b"RabbitMQ".to_vec()),
                )]),
            },
            Method::ConnectionStartOk {
                client_properties: Table::default(),
                mechanism: "PLAIN".into(),
            },
            Method::ConnectionTune {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 60,
            },
            Method::ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 60,
            },
            Method::ConnectionOpen { vhost: "/".into() },
            Method::ConnectionOpenOk,
            Method::ConnectionClose(close.clone()),
            Method::ConnectionCloseOk,
            Method::ConnectionBlocked {
                reason: "low on disk".into(),
            },
            Method::ConnectionUnblocked,
            Method::ChannelOpen,
            Method::ChannelOpenOk,
            Method::ChannelClose(close),
            Method::ChannelCloseOk,
            Method::BasicConsume {
                queue: "mes.submitted".into(),
                consumer_tag: "".into(),
                no_ack: true,
            },
            Method::BasicConsumeOk {
                consumer_tag: "amq.ctag-1".into(),
            },
            Method::BasicCancel {
                consumer_tag: "c".into(),
            },
            Method::BasicCancelOk {
                consumer_tag: "c".into(),
            },
            Method::BasicPublish {
                exchange: "orders".into(),
                routing_key: "order.submitted".into(),
                mandatory: true,
                immediate: false,
            },
            Method::BasicReturn {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "orders".into(),
                routing_key: "nowhere".into(),
            },
            Method::BasicDeliver {
                consumer_tag: "amq.ctag-1".into(),
                delivery_tag: 7,
                redelivered: true,
                exchange: "orders".into(),
                routing_key: "order.submitted".into(),
            },
            Method::BasicGet {
                queue: "q".into(),
                no_ack: false,
            },
            Method::BasicGetOk {
                delivery_tag: 1,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 3,
            },
            Method::BasicGetEmpty,
            Method::BasicAck {
                delivery_tag: 9,
                multiple: true,
            },
            Method::BasicReject {
                delivery_tag: 2,
                requeue: true,
            },
            Method::BasicRecoverAsync { requeue: true },
            Method::BasicRecover { requeue: false },
            Method::BasicNack {
                delivery_tag: 3,
                multiple: false,
                requeue: true,
            },
            Method::ConfirmSelect { nowait: false },
            Method::ConfirmSelectOk,
            Method::TxSelect,
            Method::TxSelectOk,
            Method::TxCommit,
            Method::TxCommitOk,
            Method::TxRollback,
            Method::TxRollbackOk,
            Method::Other {
                class_id: 50,
                method_id: 10,
            },
        ]
    }

    #[test]
    fn methods_round_trip() {
        for m in all_methods() {
            let payload = encode_method(&m);
            assert_eq!(parse_method(&payload).unwrap(), m, "{m:?}");
            // Every strict prefix of a method with arguments is an error, never a panic.
            for cut in 0..payload.len() {
                let _ = parse_method(&payload[..cut]);
            }
        }
    }

    #[test]
    fn content_bearing_methods() {
        let bearing: Vec<_> = all_methods()
            .into_iter()
            .filter(Method::has_content)
            .collect();
        assert_eq!(bearing.len(), 4);
    }

    fn full_properties() -> Properties {
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: Some(Table(vec![(
                "x-order-id".into(),
                FieldValue::LongStr(b"ORD-1".to_vec()),
            )])),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: Some("corr".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("m-1".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order.submitted".into()),
            user_id: Some("guest".into()),
            app_id: Some("crm".into()),
            cluster_id: Some("c".into()),
        }
    }

    #[test]
    fn content_header_round_trips() {
        for p in [Properties::default(), full_properties()] {
            let payload = encode_content_header(42, &p);
            let h = parse_content_header(&payload).unwrap();
            assert_eq!(h.class_id, CLASS_BASIC);
            assert_eq!(h.body_size, 42);
            assert_eq!(h.properties, p);
            assert_eq!(content_body_size(&payload).unwrap(), 42);
            for cut in 0..payload.len() {
                let _ = parse_content_header(&payload[..cut]);
            }
        }
    }

    #[test]
    fn adding_a_header_keeps_everything_else() {
        let tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cases: Vec<(&str, Properties)> = vec![
            ("no properties at all", Properties::default()),
            ("all properties", full_properties()),
            (
                "headers table present but empty",
                Properties {
                    headers: Some(Table::default()),
                    ..Properties::default()
                },
            ),
            (
                "content type only: the table goes after it",
                Properties {
                    content_type: Some("text/plain".into()),
                    message_id: Some("x".into()),
                    ..Properties::default()
                },
            ),
        ];
        for (reason, p) in cases {
            let payload = encode_content_header(7, &p);
            let out = add_string_header(&payload, "traceparent", tp).unwrap();
            let h = parse_content_header(&out).unwrap();
            let mut expected = p.clone();
            let mut headers = expected.headers.take().unwrap_or_default();
            headers
                .0
                .push(("traceparent".into(), FieldValue::LongStr(tp.to_vec())));
            expected.headers = Some(headers);
            assert_eq!(h.properties, expected, "{reason}");
            assert_eq!(h.body_size, 7, "{reason}");
            let grown = if p.headers.is_some() { 72 } else { 76 };
            assert_eq!(out.len(), payload.len() + grown, "{reason}");
        }
    }

    #[test]
    fn adding_a_header_refuses_what_it_cannot_rewrite() {
        let mut payload = encode_content_header(0, &Properties::default());
        payload[13] |= 1; // continuation flag
        assert_eq!(
            add_string_header(&payload, "traceparent", b"x"),
            Err(WireError::Unsupported)
        );
        let payload = encode_content_header(0, &full_properties());
        for cut in 0..40 {
            assert!(add_string_header(&payload[..cut], "traceparent", b"x").is_err());
        }
    }

    #[test]
    fn frame_encoding() {
        let f = encode_frame(FRAME_HEARTBEAT, 0, &[]);
        assert_eq!(f, [8, 0, 0, 0, 0, 0, 0, 0xCE]);
    }
}
