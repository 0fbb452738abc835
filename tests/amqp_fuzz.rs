//! A bounded, stable-Rust fuzzer for the AMQP decoder and connection (no nightly, no cargo-fuzz): for a fixed
//! time it mutates real captured sessions (`fuzz/corpus/*.amqp`, recorded from RabbitMQ) and synthetic ones
//! with an xorshift generator, runs each through the Envoy buffer model, and checks that
//!
//! - nothing panics, and every span ends after it starts;
//! - with `inject` off, the broker receives exactly the client's bytes;
//! - with `inject` on, the broker receives exactly the client's bytes whenever nothing was injected;
//! - how the bytes are cut into reads changes neither the spans nor the bytes sent on.
//!
//! `AMQP_FUZZ_SECS` sets the time (default 3 s; CI runs longer), `AMQP_FUZZ_SEED` the seed. A failing input is
//! written to `$TMPDIR/ordertrace-amqp-fuzz-failure.amqp` (corpus format) with its seed in the message.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod amqp_support;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use amqp_support::*;
use ordertrace_amqp::config::Amqp;
use ordertrace_amqp::decoder::{Decoder, Direction, Limits};
use ordertrace_amqp::frame::{
    add_string_header, parse_content_header, parse_method, Method, Properties,
};
use ordertrace_amqp::sim::Sim;
use ordertrace_amqp::table::read_table;
use ordertrace_amqp::wire::Reader;

/// One read: `b'C'` (client → broker) or `b'B'`, and its bytes.
type Session = Vec<(u8, Vec<u8>)>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn parse_corpus(bytes: &[u8]) -> Session {
    let mut out = Vec::new();
    let mut r = bytes;
    while r.len() >= 5 {
        let len = u32::from_be_bytes([r[1], r[2], r[3], r[4]]) as usize;
        let end = (5 + len).min(r.len());
        out.push((r[0], r[5..end].to_vec()));
        r = &r[end..];
    }
    out
}

fn write_corpus(s: &Session) -> Vec<u8> {
    let mut out = Vec::new();
    for (d, b) in s {
        out.push(*d);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn corpus() -> Vec<Session> {
    let mut out = Vec::new();
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("fuzz/corpus");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "amqp"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "fuzz/corpus has too few sessions");
    for f in files {
        out.push(parse_corpus(&fs::read(&f).unwrap()));
    }
    // Synthetic sessions covering what the captures may not: blocked, get-empty, recover, close codes.
    let c = |b: Vec<u8>| (b'C', b);
    let b = |b: Vec<u8>| (b'B', b);
    out.push(vec![
        b(broker_hello(true)),
        c([
            client_hello(true),
            publish(
                1,
                "orders",
                "order.submitted",
                &headers(&[("x-order-id", "A")]),
                b"{}",
            ),
        ]
        .concat()),
        b(m(
            0,
            Method::ConnectionBlocked {
                reason: "low on disk".into(),
            },
        )),
        c(m(
            1,
            Method::BasicGet {
                queue: "q".into(),
                no_ack: false,
            },
        )),
        b(m(1, Method::BasicGetEmpty)),
        c(m(1, Method::BasicRecover { requeue: true })),
        b(close_frame(1, 406, "PRECONDITION_FAILED", 60, 80)),
        b(m(0, Method::ConnectionUnblocked)),
        b(close_frame(0, 320, "CONNECTION_FORCED", 0, 0)),
    ]);
    out.push(vec![
        c(client_hello(false)),
        c(publish(
            1,
            "",
            "q",
            &Properties {
                content_type: Some("application/json".into()),
                ..Properties::default()
            },
            br#"{"orderId":"X"}"#,
        )),
        b(deliver(
            1,
            "t",
            1,
            false,
            "",
            "q",
            &headers(&[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )]),
            b"{}",
        )),
        c(m(
            1,
            Method::BasicAck {
                delivery_tag: 0,
                multiple: true,
            },
        )),
    ]);
    out
}

const INTERESTING_U32: [u32; 8] = [0, 1, 7, 4088, 4096, 131_072, 0x7fff_ffff, 0xffff_ffff];
const INTERESTING_U8: [u8; 10] = [0, 1, 2, 3, 8, 0x20, 0x7f, 0x80, 0xce, 0xff];

fn mutate(s: &mut Session, rng: &mut Rng) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if s.is_empty() {
            s.push((b'C', Vec::new()));
        }
        let i = rng.below(s.len());
        let len = s[i].1.len();
        match rng.below(10) {
            0 if len > 0 => {
                let p = rng.below(len);
                s[i].1[p] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let p = rng.below(len);
                s[i].1[p] = INTERESTING_U8[rng.below(INTERESTING_U8.len())];
            }
            2 if len >= 4 => {
                let p = rng.below(len - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                s[i].1[p..p + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 => {
                let p = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                s[i].1.splice(p..p, ins);
            }
            4 if len > 0 => {
                let p = rng.below(len);
                let n = 1 + rng.below((len - p).min(64));
                s[i].1.drain(p..p + n);
            }
            5 if len > 1 => {
                // Re-cut: one read becomes two.
                let p = 1 + rng.below(len - 1);
                let tail = s[i].1.split_off(p);
                let d = s[i].0;
                s.insert(i + 1, (d, tail));
            }
            6 if i + 1 < s.len() && s[i].0 == s[i + 1].0 => {
                let next = s.remove(i + 1).1;
                s[i].1.extend(next);
            }
            7 => {
                let dup = s[i].clone();
                s.insert(i, dup);
            }
            8 => s[i].0 = if s[i].0 == b'C' { b'B' } else { b'C' },
            9 if s.len() > 1 => {
                s.truncate(1 + rng.below(s.len()));
            }
            _ => {}
        }
    }
}

fn run(config: &Amqp, s: &Session) -> Sim {
    let mut sim = Sim::new(config.clone());
    for (d, bytes) in s {
        if *d == b'C' {
            sim.client(bytes, false);
        } else {
            sim.broker(bytes);
        }
    }
    sim.close();
    sim
}

fn client_bytes(s: &Session) -> Vec<u8> {
    s.iter()
        .filter(|(d, _)| *d == b'C')
        .flat_map(|(_, b)| b.clone())
        .collect()
}

/// The same reads, cut differently (per direction the byte stream is unchanged).
fn recut(s: &Session, rng: &mut Rng) -> Session {
    let mut out = Vec::new();
    for (d, b) in s {
        let mut rest = b.as_slice();
        while rest.len() > 1 && rng.below(3) == 0 {
            let p = 1 + rng.below(rest.len() - 1);
            out.push((*d, rest[..p].to_vec()));
            rest = &rest[p..];
        }
        out.push((*d, rest.to_vec()));
    }
    out
}

fn check(on: &Amqp, off: &Amqp, s: &Session, rng: &mut Rng) {
    let input = client_bytes(s);
    let plain = run(off, s);
    assert!(
        plain.upstream == input,
        "inject off must forward the client's bytes exactly"
    );
    let sim = run(on, s);
    if sim.amqp.injected == 0 {
        assert!(
            sim.upstream == input,
            "nothing injected, yet the bytes changed"
        );
    } else {
        assert!(sim.upstream.len() > input.len());
    }
    assert!(sim.held.is_empty());
    for span in &sim.spans {
        assert!(span.end_ns >= span.start_ns, "{span:?}");
    }
    let again = run(on, &recut(s, rng));
    assert!(
        again.spans == sim.spans,
        "spans depend on how reads are cut"
    );
    assert!(
        again.upstream == sim.upstream,
        "bytes sent depend on how reads are cut"
    );
}

/// The parsers on their own, on raw payloads.
fn parsers(bytes: &[u8]) {
    let _ = parse_method(bytes);
    let _ = parse_content_header(bytes);
    let _ = add_string_header(bytes, "traceparent", b"00-x");
    let _ = read_table(&mut Reader::new(bytes));
    for dir in [Direction::Client, Direction::Broker] {
        let mut d = Decoder::new(dir);
        let mut out = Vec::new();
        d.feed(
            bytes,
            &Limits {
                max_frame: 4096,
                capture: 64,
            },
            &mut out,
        );
    }
}

#[test]
fn fuzz_the_decoder_for_a_bounded_time() {
    let secs: u64 = std::env::var("AMQP_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("AMQP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let on = config(
        r#"{"rules":[{"exchange":"orders","order_id":{"body":"/orderId"},"status":{"header":"x-status"},
                       "attributes":{"a":{"property":"message_id"},"w":{"routing_key_word":1}}}],
                       "max_frame_bytes":262144}"#,
    );
    let off = config(r#"{"inject":false,"max_frame_bytes":262144}"#);
    let seeds = corpus();
    // Every seed passes the checks unmutated.
    let mut rng = Rng(seed);
    for s in &seeds {
        check(&on, &off, s, &mut rng);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut iterations = 0u64;
    while Instant::now() < deadline {
        let case_seed = rng.next() | 1;
        let mut case_rng = Rng(case_seed);
        let mut s = seeds[case_rng.below(seeds.len())].clone();
        mutate(&mut s, &mut case_rng);
        let result = catch_unwind(AssertUnwindSafe(|| {
            check(&on, &off, &s, &mut case_rng);
            let raw: Vec<u8> = s
                .iter()
                .flat_map(|(_, b)| b.iter().copied())
                .take(4096)
                .collect();
            parsers(&raw);
        }));
        if let Err(e) = result {
            let path = std::env::temp_dir().join("ordertrace-amqp-fuzz-failure.amqp");
            let _ = fs::write(&path, write_corpus(&s));
            eprintln!(
                "fuzz failure: run seed {seed}, case seed {case_seed}, input {}",
                path.display()
            );
            std::panic::resume_unwind(e);
        }
        iterations += 1;
    }
    eprintln!("amqp fuzz: {iterations} cases in {secs} s (seed {seed})");
    assert!(iterations > 0);
}
