//! A minimal AMQP 0-9-1 client over a plain socket, for what the real-broker tests need and amiquip does
//! not offer (transactions: `tx.select` / `tx.commit` / `tx.rollback`). Frames are built and read with the
//! crate's own codec; every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ordertrace_amqp::frame::{
    encode_frame, encode_method, parse_method, Close, Method, FRAME_METHOD, PROTOCOL_HEADER,
};
use ordertrace_amqp::table::{FieldValue, Table};

pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    /// Connects to `127.0.0.1:port` as guest, vhost `/`, and opens channel 1.
    pub fn open(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = RawClient { stream };
        c.send(&PROTOCOL_HEADER);
        c.expect(0, |m| matches!(m, Method::ConnectionStart { .. }));
        c.method(
            0,
            Method::ConnectionStartOk {
                client_properties: Table(vec![(
                    "product".into(),
                    FieldValue::LongStr(b"ordertrace-raw-test".to_vec()),
                )]),
                mechanism: "PLAIN".into(),
            },
        );
        let Method::ConnectionTune {
            channel_max,
            frame_max,
            ..
        } = c.expect(0, |m| matches!(m, Method::ConnectionTune { .. }))
        else {
            unreachable!()
        };
        c.method(
            0,
            Method::ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            },
        );
        c.method(0, Method::ConnectionOpen { vhost: "/".into() });
        c.expect(0, |m| matches!(m, Method::ConnectionOpenOk));
        c.method(1, Method::ChannelOpen);
        c.expect(1, |m| matches!(m, Method::ChannelOpenOk));
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn method(&mut self, channel: u16, method: Method) {
        let frame = encode_frame(FRAME_METHOD, channel, &encode_method(&method));
        self.send(&frame);
    }

    /// Reads frames until a method on `channel` satisfies `want`; a close from the broker fails the test.
    pub fn expect(&mut self, channel: u16, want: impl Fn(&Method) -> bool) -> Method {
        for _ in 0..10_000 {
            let (ty, ch, payload) = self.read_frame();
            if ty != FRAME_METHOD {
                continue;
            }
            let m = parse_method(&payload).unwrap();
            if ch == channel && want(&m) {
                return m;
            }
            if matches!(m, Method::ConnectionClose(_) | Method::ChannelClose(_)) {
                panic!("the broker closed: {m:?}");
            }
        }
        panic!("no matching method on channel {channel}");
    }

    fn read_frame(&mut self) -> (u8, u16, Vec<u8>) {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head).unwrap();
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.stream.read_exact(&mut payload).unwrap();
        assert_eq!(payload.pop(), Some(0xCE), "frame end");
        (head[0], u16::from_be_bytes([head[1], head[2]]), payload)
    }

    /// `connection.close` and its `close-ok`.
    pub fn close(mut self) {
        self.method(
            0,
            Method::ConnectionClose(Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            }),
        );
        self.expect(0, |m| matches!(m, Method::ConnectionCloseOk));
    }
}
