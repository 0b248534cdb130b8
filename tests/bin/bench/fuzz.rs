//! `fuzz`: random and malformed HTTP requests against a live single-node master with one
//! worker, then slowloris connections. Every request goes over raw TCP (one connection each,
//! `Connection: close`), so that anything can be sent: truncated and deeply nested JSON,
//! numbers JSON cannot hold, NUL, control, bidi and invalid UTF-8 bytes, path traversal in
//! ids, wrong methods and content types, oversized and broken headers, lying lengths. It
//! counts the answers by status (and the connections closed, reset or timed out without one),
//! the 5xx, the 4xx without a JSON error body, and whether the master is still alive.
//!
//! Then `--slowloris` connections send their headers one byte a second while a normal
//! `GET /api/v1/apps?limit=1` is timed every 250 ms: does the master keep answering, and does
//! it close the slow connections, and when.
//!
//! The generated submissions only ever run `true` or `echo` and ask for 64 cores (the worker
//! has 2), so a valid one waits in the queue. The seed is printed; `--seed` replays a run
//! (the order across `--concurrency` threads aside).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::report::{ms, percentile, report};
use crate::setup::Setup;
use crate::T;

#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// Random and malformed requests sent.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Threads sending them.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Slowloris connections, open at once (0: no slowloris phase).
    #[arg(long, default_value_t = 200)]
    slowloris: usize,
    /// How long the slowloris connections go on sending, at most.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    slowloris_for: Duration,
    /// The random seed (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Markdown file whose `bench:fuzz` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// xorshift64*: small, seedable, good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const NASTY: &[&str] = &[
    "",
    "..",
    "../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "\0",
    "a\0b",
    "invoice\u{202E}fdp.exe",
    "\u{2066}",
    "\u{FEFF}",
    "\u{7f}\u{1b}[31m",
    "\r\n",
    "💥",
    "%00",
    "%ff",
    "null",
    "-1",
    "1e999",
    "18446744073709551616",
    "1ms",
    "-1s",
    "10000000000000000000000h",
    "RUNNING",
    "SLEEPING",
    "process",
    "app-00000000000000-1",
    "<script>alert(1)</script>",
    "* * * * *",
    "Mars/Olympus_Mons",
    "9999-12-31T23:59:59Z",
];

const SUBMIT_FIELDS: &[&str] = &[
    "name",
    "kind",
    "spec",
    "cores",
    "memory_mb",
    "max_retries",
    "labels",
    "max_runtime",
    "restart",
    "retry_backoff",
    "on_demand",
    "libs",
];

const SCHEDULE_FIELDS: &[&str] = &[
    "name",
    "app",
    "cron",
    "every",
    "time_zone",
    "start_at",
    "end_at",
    "overlap",
    "max_queued",
    "misfire",
    "jitter",
    "paused",
];

fn hostile_string(r: &mut Rng) -> String {
    match r.below(5) {
        0..=1 => r.pick(NASTY).to_string(),
        2 => (0..r.below(40))
            .map(|_| char::from_u32(r.below(0x11_0000) as u32).unwrap_or('\u{FFFD}'))
            .collect(),
        3 => (0..r.below(40))
            .map(|_| char::from(r.below(0x80) as u8))
            .collect(),
        _ => {
            let max = if r.chance(4) { 300_000 } else { 300 };
            "x".repeat(r.below(max))
        }
    }
}

fn hostile_json(r: &mut Rng, depth: usize) -> Value {
    match r.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(r.chance(2)),
        2 => json!(*r.pick(&[0i64, -1, 1, i64::MIN, i64::MAX, 65536, 1 << 32])),
        3 => json!(r.next()),
        4 => serde_json::Number::from_f64(f64::from_bits(r.next()))
            .map_or(Value::Null, Value::Number),
        5 => Value::String(hostile_string(r)),
        6 => Value::Array(
            (0..r.below(5))
                .map(|_| hostile_json(r, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..r.below(5))
                .map(|_| (hostile_string(r), hostile_json(r, depth - 1)))
                .collect(),
        ),
    }
}

/// A valid object with one to three fields set to hostile values or removed.
fn mutate(r: &mut Rng, mut v: Value, fields: &[&str]) -> Value {
    for _ in 0..1 + r.below(3) {
        let field = if r.chance(5) {
            hostile_string(r)
        } else {
            r.pick(fields).to_string()
        };
        let Some(o) = v.as_object_mut() else { break };
        match r.below(5) {
            0 => {
                o.remove(&field);
            }
            1 | 2 => {
                o.insert(field, Value::String(hostile_string(r)));
            }
            _ => {
                let depth = r.below(4);
                o.insert(field, hostile_json(r, depth));
            }
        }
    }
    v
}

fn submission(r: &mut Rng) -> Value {
    let spec = match r.below(3) {
        0 => json!({"command": ["true"]}),
        1 => json!({"command": ["echo", hostile_string(r)]}),
        _ => hostile_json(r, 2),
    };
    let base = json!({"name": "fuzz", "kind": "process", "spec": spec, "cores": 64});
    mutate(r, base, SUBMIT_FIELDS)
}

fn schedule(r: &mut Rng) -> Value {
    let app = json!({"kind": "process", "spec": {"command": ["true"]}, "cores": 64});
    let app = if r.chance(2) {
        mutate(r, app, SUBMIT_FIELDS)
    } else {
        app
    };
    let base = json!({"name": "fuzz", "app": app, "cron": "0 0 1 1 *", "paused": true});
    mutate(r, base, SCHEDULE_FIELDS)
}

/// Percent-encodes all but the unreserved bytes; sometimes leaves the string raw.
fn url_part(r: &mut Rng, s: &str) -> Vec<u8> {
    if r.chance(4) {
        return s.as_bytes().to_vec();
    }
    let mut out = Vec::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// One request to send: its class (for the report), its bytes, and whether to close our
/// side after sending (for lying lengths: the master must not wait for ever).
struct Req {
    class: &'static str,
    bytes: Vec<u8>,
    half_close: bool,
}

/// The ids that exist: a FINISHED app, a queued app, a worker, a schedule.
struct Known {
    done: String,
    parked: String,
    schedule: String,
}

fn request(r: &mut Rng, k: &Known) -> Req {
    let json_ct: &[u8] = b"application/json";
    let build = |method: &[u8], target: &[u8], headers: &[(&[u8], &[u8])], body: &[u8]| {
        let mut b = Vec::with_capacity(body.len() + 256);
        b.extend_from_slice(method);
        b.push(b' ');
        b.extend_from_slice(target);
        b.extend_from_slice(b" HTTP/1.1\r\nHost: master\r\nConnection: close\r\n");
        for (n, v) in headers {
            b.extend_from_slice(n);
            b.extend_from_slice(b": ");
            b.extend_from_slice(v);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        b.extend_from_slice(body);
        b
    };
    let valid = r#"{"name":"fuzz","kind":"process","spec":{"command":["true"]},"cores":64}"#;
    let req = |class, bytes| Req {
        class,
        bytes,
        half_close: false,
    };
    match r.below(13) {
        0 | 1 => {
            let body = submission(r).to_string();
            req(
                "mutated JSON submission",
                build(
                    b"POST",
                    b"/api/v1/apps",
                    &[(b"Content-Type", json_ct)],
                    body.as_bytes(),
                ),
            )
        }
        2 => {
            let body = submission(r).to_string();
            let cut = r.below(body.len());
            req(
                "truncated JSON",
                build(
                    b"POST",
                    b"/api/v1/apps",
                    &[(b"Content-Type", json_ct)],
                    &body.as_bytes()[..cut],
                ),
            )
        }
        3 => {
            let depth = 1 + r.below(200_000);
            let open = *r.pick(&["[", "{\"a\":", "{\"spec\":"]);
            let mut s = open.repeat(depth);
            s.push('1');
            if r.chance(2) {
                let close = if open == "[" { "]" } else { "}" };
                s.push_str(&close.repeat(depth));
            }
            let path: &[u8] = r.pick::<&[u8]>(&[&b"/api/v1/apps"[..], b"/api/v1/schedules"]);
            req(
                "deeply nested JSON",
                build(b"POST", path, &[(b"Content-Type", json_ct)], s.as_bytes()),
            )
        }
        4 => {
            let n = match r.below(3) {
                0 => r
                    .pick(&[
                        "1e999", "-1e999", "-0", "1e-999", "NaN", "Infinity", "0x10", "01",
                    ])
                    .to_string(),
                1 => "9".repeat(1 + r.below(100_000)),
                _ => format!("-{}", "9".repeat(1 + r.below(400))),
            };
            let field = *r.pick(&["cores", "memory_mb", "max_retries"]);
            let body = valid.replace("\"cores\":64", &format!("\"{field}\":{n}"));
            req(
                "huge numbers",
                build(
                    b"POST",
                    b"/api/v1/apps",
                    &[(b"Content-Type", json_ct)],
                    body.as_bytes(),
                ),
            )
        }
        5 => {
            let bad: &[u8] = r.pick::<&[u8]>(&[
                &b"\0"[..],
                b"a\0b",
                b"\xff\xfe",
                b"\xc0\x80",
                b"\xed\xa0\x80",
                b"\xe2\x80\xae",
                b"\\u0000",
                b"\\ud800",
                b"\x1b[2J",
                "💥\u{202E}".as_bytes(),
            ]);
            let mut body = br#"{"name":""#.to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(
                br#"","kind":"process","spec":{"command":["true"]},"cores":64}"#,
            );
            req(
                "NUL, control, invalid UTF-8",
                build(
                    b"POST",
                    b"/api/v1/apps",
                    &[(b"Content-Type", json_ct)],
                    &body,
                ),
            )
        }
        6 => {
            let id = match r.below(4) {
                0 => k.done.clone(),
                1 => k.parked.clone(),
                _ => r
                    .pick(&[
                        "../../../../etc/passwd",
                        "..%2F..%2F..%2Fetc%2Fpasswd",
                        "%2e%2e",
                        "..;",
                        "%00",
                        "%ff",
                        "a%2Fb",
                        "\\..\\..",
                        "w1",
                        "%252e%252e",
                    ])
                    .to_string(),
            };
            let id = if r.chance(3) {
                let s: String = hostile_string(r).chars().take(100).collect();
                url_part(r, &s)
            } else {
                id.into_bytes()
            };
            let (method, pre, post): (&[u8], &str, &str) = *r.pick(&[
                (&b"GET"[..], "/api/v1/apps/", ""),
                (b"POST", "/api/v1/apps/", "/kill"),
                (b"POST", "/api/v1/apps/", "/retry"),
                (b"GET", "/api/v1/apps/", "/logs"),
                (b"GET", "/api/v1/schedules/", ""),
                (b"PATCH", "/api/v1/schedules/", ""),
                (b"POST", "/api/v1/workers/", "/drain"),
            ]);
            let mut target = pre.as_bytes().to_vec();
            target.extend_from_slice(&id);
            target.extend_from_slice(post.as_bytes());
            let body = if method == b"GET" {
                Vec::new()
            } else if pre.contains("schedules") {
                mutate(r, json!({}), SCHEDULE_FIELDS)
                    .to_string()
                    .into_bytes()
            } else {
                hostile_json(r, 2).to_string().into_bytes()
            };
            req(
                "path traversal and hostile ids",
                build(method, &target, &[(b"Content-Type", json_ct)], &body),
            )
        }
        7 => {
            let method: &[u8] = r.pick::<&[u8]>(&[
                &b"PUT"[..],
                b"DELETE",
                b"PATCH",
                b"TRACE",
                b"OPTIONS",
                b"CONNECT",
                b"HEAD",
                b"BREW",
                b"get",
                b"G\0ET",
            ]);
            let path: &[u8] = r.pick::<&[u8]>(&[
                &b"/api/v1/apps"[..],
                b"/api/v1/workers",
                b"/api/v1/events",
                b"/api/v1/cluster",
                b"/healthz",
                b"/metrics",
                b"/api/v1/schedules",
            ]);
            let method = if r.chance(20) {
                "X".repeat(r.below(100_000)).into_bytes()
            } else {
                method.to_vec()
            };
            req(
                "wrong methods",
                build(
                    &method,
                    path,
                    &[(b"Content-Type", json_ct)],
                    valid.as_bytes(),
                ),
            )
        }
        8 => {
            let ct: &[u8] = r.pick::<&[u8]>(&[
                &b"text/plain"[..],
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=x",
                b"application/json; charset=latin1",
                b"application/xml",
                b"",
                b"\xff\xfe",
                b"application/json\0",
            ]);
            let (method, path): (&[u8], &[u8]) = *r.pick(&[
                (&b"POST"[..], &b"/api/v1/apps"[..]),
                (b"POST", b"/api/v1/schedules"),
            ]);
            req(
                "wrong content types",
                build(method, path, &[(b"Content-Type", ct)], valid.as_bytes()),
            )
        }
        9 => {
            let (keys, path): (&[&str], &str) = *r.pick(&[
                (
                    &["state", "limit", "after", "schedule_id"][..],
                    "/api/v1/apps?",
                ),
                (
                    &["after", "limit", "app_id", "kind", "type"],
                    "/api/v1/events?follow=false&",
                ),
                (&["limit", "after"], "/api/v1/schedules?"),
                (&["dry_run", "wait"], "/api/v1/apps?"),
            ]);
            let mut target = path.as_bytes().to_vec();
            for i in 0..1 + r.below(4) {
                if i > 0 {
                    target.push(b'&');
                }
                let key = if r.chance(5) {
                    hostile_string(r).chars().take(50).collect()
                } else {
                    r.pick(keys).to_string()
                };
                let value = match r.below(3) {
                    0 => r.next().to_string(),
                    1 => format!("-{}", r.next()),
                    _ => hostile_string(r).chars().take(200).collect(),
                };
                // A valid wait on a valid submission would hold the connection for minutes.
                let value = if key == "wait" { "1ms".into() } else { value };
                target.extend_from_slice(&url_part(r, &key));
                target.push(b'=');
                target.extend_from_slice(&url_part(r, &value));
            }
            let (method, body) = if path.contains("dry_run") {
                (&b"POST"[..], submission(r).to_string())
            } else {
                (&b"GET"[..], String::new())
            };
            req(
                "hostile query strings",
                build(
                    method,
                    &target,
                    &[(b"Content-Type", json_ct)],
                    body.as_bytes(),
                ),
            )
        }
        10 => {
            let body = schedule(r).to_string();
            req(
                "mutated schedules",
                build(
                    b"POST",
                    b"/api/v1/schedules",
                    &[(b"Content-Type", json_ct)],
                    body.as_bytes(),
                ),
            )
            .with_target_patch(r, &k.schedule)
        }
        11 => oversized(r),
        _ => broken_http(r),
    }
}

impl Req {
    /// Sometimes a PATCH of an existing schedule instead of a POST.
    fn with_target_patch(self, r: &mut Rng, schedule: &str) -> Req {
        if !r.chance(2) {
            return self;
        }
        let body = mutate(r, json!({}), SCHEDULE_FIELDS).to_string();
        let mut b = format!(
            "PATCH /api/v1/schedules/{schedule} HTTP/1.1\r\nHost: master\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        b.extend_from_slice(body.as_bytes());
        Req {
            class: self.class,
            bytes: b,
            half_close: false,
        }
    }
}

/// Headers and URIs far past any sane size.
fn oversized(r: &mut Rng) -> Req {
    let big = |n: usize| "a".repeat(n);
    let bytes = match r.below(4) {
        0 => format!(
            "GET /api/v1/apps HTTP/1.1\r\nHost: master\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            big(1 << (10 + r.below(11)))
        ),
        1 => {
            let n = 100 + r.below(10_000);
            let headers: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
            format!(
                "GET /api/v1/apps HTTP/1.1\r\nHost: master\r\nConnection: close\r\n{headers}\r\n"
            )
        }
        2 => format!(
            "GET /api/v1/apps/{} HTTP/1.1\r\nHost: master\r\nConnection: close\r\n\r\n",
            big(1 << (10 + r.below(11)))
        ),
        _ => format!(
            "GET /api/v1/apps?after={} HTTP/1.1\r\nHost: master\r\nConnection: close\r\n\r\n",
            big(1 << (10 + r.below(11)))
        ),
    };
    Req {
        class: "oversized headers and URIs",
        bytes: bytes.into_bytes(),
        half_close: false,
    }
}

/// Framing that lies or breaks: wrong lengths, bad chunks, smuggling pairs, garbage lines.
fn broken_http(r: &mut Rng) -> Req {
    let body = r#"{"name":"fuzz","kind":"process","spec":{"command":["true"]},"cores":64}"#;
    let head = "POST /api/v1/apps HTTP/1.1\r\nHost: master\r\nConnection: close\r\n\
                Content-Type: application/json\r\n";
    let (bytes, half_close): (Vec<u8>, bool) = match r.below(10) {
        // Says more than it sends, then closes its side.
        0 => (
            format!("{head}Content-Length: {}\r\n\r\n{body}", body.len() + 100).into_bytes(),
            true,
        ),
        1 => (format!("{head}Content-Length: -1\r\n\r\n{body}").into_bytes(), false),
        2 => (
            format!("{head}Content-Length: 99999999999999999999999\r\n\r\n{body}").into_bytes(),
            true,
        ),
        3 => (
            format!(
                "{head}Content-Length: {}\r\nContent-Length: 3\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            false,
        ),
        4 => (
            format!(
                "{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            false,
        ),
        5 => (
            format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n").into_bytes(),
            true,
        ),
        6 => (
            format!("{head}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{body}\r\n").into_bytes(),
            true,
        ),
        7 => (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage".to_vec(), true),
        8 => (
            (0..r.below(4096)).map(|_| r.next() as u8).collect(),
            true,
        ),
        _ => (
            format!(
                "GET /api/v1/apps HTTP/{}\r\nHost: master\r\nX-Bad\0Name: v\r\nX-Ctl: \x01\x7f\r\n\r\n",
                r.pick(&["0.9", "2.0", "1.1", "9.9", "1.1.1"])
            )
            .into_bytes(),
            true,
        ),
    };
    Req {
        class: "broken HTTP framing",
        bytes,
        half_close,
    }
}

/// The body of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Body {
    /// `{"error": "<string>", ...}`.
    JsonError,
    /// Nothing: hyper's own answers to requests it cannot parse (400, 414, 431) look so.
    Empty,
    /// Anything else.
    Other,
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// An answer: status, and what its body is.
    Status(u16, Body),
    /// Closed without an answer.
    Closed,
    Reset,
    Timeout,
    NoConnect,
}

/// Sends `req` on a new connection and reads the answer to the end.
fn exchange(addr: SocketAddr, req: &Req) -> Outcome {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return Outcome::NoConnect;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    // A write may fail because the master answered early (413, 431) and closed: read anyway.
    let _ = s.write_all(&req.bytes);
    if req.half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let failure = loop {
        match s.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break Some(Outcome::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break Some(Outcome::Reset),
        }
    };
    match parse(&buf) {
        Some(o) => o,
        None => failure.unwrap_or(Outcome::Closed),
    }
}

/// The status of an HTTP/1.1 answer, and for a 4xx whether its body is a JSON error.
fn parse(buf: &[u8]) -> Option<Outcome> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status: u16 = head.lines().next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let raw = &buf[end + 4..];
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    let kind = if body.is_empty() {
        Body::Empty
    } else if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["error"].is_string()) {
        Body::JsonError
    } else {
        Body::Other
    };
    Some(Outcome::Status(status, kind))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else {
            break;
        };
        let start = eol + 2;
        let Some(data) = raw.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(data);
        raw = raw.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// Counts by class and outcome.
#[derive(Default)]
struct Tally {
    by_class: BTreeMap<&'static str, BTreeMap<Outcome, usize>>,
}

impl Tally {
    fn add(&mut self, class: &'static str, o: Outcome) {
        *self
            .by_class
            .entry(class)
            .or_default()
            .entry(o)
            .or_default() += 1;
    }
    fn merge(&mut self, other: Tally) {
        for (c, m) in other.by_class {
            for (o, n) in m {
                *self.by_class.entry(c).or_default().entry(o).or_default() += n;
            }
        }
    }
    fn all(&self) -> BTreeMap<Outcome, usize> {
        let mut all = BTreeMap::new();
        for m in self.by_class.values() {
            for (o, n) in m {
                *all.entry(*o).or_default() += n;
            }
        }
        all
    }
}

/// Columns of one row: requests, 2xx, 3xx, 4xx (JSON error, empty, other), 5xx, no answer.
fn row(m: &BTreeMap<Outcome, usize>) -> [usize; 8] {
    let mut r = [0; 8];
    for (o, n) in m {
        r[0] += n;
        let col = match o {
            Outcome::Status(s, _) if *s < 300 => 1,
            Outcome::Status(s, _) if *s < 400 => 2,
            Outcome::Status(s, Body::JsonError) if *s < 500 => 3,
            Outcome::Status(s, Body::Empty) if *s < 500 => 4,
            Outcome::Status(s, Body::Other) if *s < 500 => 5,
            Outcome::Status(..) => 6,
            _ => 7,
        };
        r[col] += n;
    }
    r
}

fn rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// What the slowloris phase saw.
struct Slow {
    opened: usize,
    closed_by_master: Vec<Duration>,
    answered: BTreeMap<u16, usize>,
    still_open: usize,
    lasted: Duration,
    probes: Vec<Duration>,
    probe_failures: usize,
}

/// `n` connections that send a header a byte a second; meanwhile a normal GET every 250 ms.
fn slowloris(addr: SocketAddr, base: &str, n: usize, limit: Duration) -> Slow {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        let url = format!("{base}/api/v1/apps?limit=1");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client");
            let (mut probes, mut failures) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match client.get(&url).send() {
                    Ok(r) if r.status().is_success() => probes.push(t0.elapsed()),
                    _ => failures += 1,
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (probes, failures)
        })
    };
    let started = Instant::now();
    let mut conns: Vec<(TcpStream, Option<Duration>)> = Vec::new();
    for i in 0..n {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            let _ = s.set_nodelay(true);
            let _ = write!(
                s,
                "GET /api/v1/apps HTTP/1.1\r\nHost: master\r\nX-Slow-{i}: "
            );
            let _ = s.set_nonblocking(true);
            conns.push((s, None));
        }
    }
    let opened = conns.len();
    let mut answered = BTreeMap::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit && conns.iter().any(|(_, c)| c.is_none()) {
        std::thread::sleep(Duration::from_secs(1));
        for (s, closed) in conns.iter_mut().filter(|(_, c)| c.is_none()) {
            let gone = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    if let Some(Outcome::Status(code, _)) = parse(&buf[..n]) {
                        *answered.entry(code).or_default() += 1;
                    }
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.write(b"a").is_err(),
                Err(_) => true,
            };
            if gone {
                *closed = Some(started.elapsed());
            }
        }
    }
    let lasted = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (probes, probe_failures) = prober.join().unwrap_or_default();
    let closed_by_master: Vec<Duration> = conns.iter().filter_map(|(_, c)| *c).collect();
    Slow {
        opened,
        still_open: opened - closed_by_master.len(),
        closed_by_master,
        answered,
        lasted,
        probes,
        probe_failures,
    }
}

pub(crate) fn fuzz(a: &FuzzArgs, command_line: &str) -> Result<(), String> {
    if a.requests == 0 || a.concurrency == 0 {
        return Err("--requests and --concurrency must be at least 1".into());
    }
    let seed = a.seed.unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.finish()
    });
    eprintln!("fuzz: seed {seed} (--seed {seed} replays it)");
    let mut s = Setup::new("aloha-bench-fuzz-");
    s.add_master("5s");
    s.wait_leader();
    s.add_worker("w1", 2);
    let api = s.masters[0].api.clone();
    api.wait_alive_workers(1, T);
    let done = api.submit_cmd("done", &["true"], json!({}));
    api.wait_state(&done, "FINISHED", T);
    let parked = api.submit_cmd("parked", &["true"], json!({"cores": 64}));
    let sched = api.post(
        "/api/v1/schedules",
        &json!({"name": "target", "app": {"kind": "process", "spec": {"command": ["true"]},
            "cores": 64}, "cron": "0 0 1 1 *", "paused": true}),
    );
    let schedule = sched.body["id"]
        .as_str()
        .ok_or_else(|| format!("no schedule: {:?}", sched.body))?
        .to_string();
    let known = Arc::new(Known {
        done,
        parked,
        schedule,
    });
    let addr: SocketAddr = api
        .base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("master address {}: {e}", api.base))?;
    let pid = s.masters[0].proc.pid();
    let rss_before = rss_mib(pid);

    eprintln!(
        "fuzz: {} requests from {} threads",
        a.requests, a.concurrency
    );
    let t0 = Instant::now();
    let threads: Vec<_> = (0..a.concurrency)
        .map(|i| {
            let known = known.clone();
            let n = a.requests / a.concurrency + usize::from(i < a.requests % a.concurrency);
            let mut r = Rng::new(
                seed.wrapping_add(i as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            std::thread::spawn(move || {
                let mut t = Tally::default();
                let mut examples: Vec<String> = Vec::new();
                for _ in 0..n {
                    let req = request(&mut r, &known);
                    let o = exchange(addr, &req);
                    let notable =
                        matches!(o, Outcome::Status(s, b) if s >= 500 || (s >= 400 && b == Body::Other));
                    if notable && examples.len() < 20 {
                        let head = &req.bytes[..req.bytes.len().min(200)];
                        examples.push(format!("{o:?} for {:?}", String::from_utf8_lossy(head)));
                    }
                    t.add(req.class, o);
                }
                (t, examples)
            })
        })
        .collect();
    let mut tally = Tally::default();
    let mut examples = Vec::new();
    for h in threads {
        let (t, e) = h
            .join()
            .map_err(|_| "a sender thread panicked".to_string())?;
        tally.merge(t);
        examples.extend(e);
    }
    let fuzz_time = t0.elapsed();
    let alive_after_fuzz = s.masters[0].proc.wait_exit(Duration::ZERO).is_none();

    let slow = (a.slowloris > 0 && alive_after_fuzz).then(|| {
        eprintln!(
            "fuzz: {} slowloris connections for at most {:?}",
            a.slowloris, a.slowloris_for
        );
        slowloris(addr, &api.base, a.slowloris, a.slowloris_for)
    });

    let exit = s.masters[0].proc.wait_exit(Duration::ZERO);
    let health = api.try_get("/healthz").map(|r| r.status);
    let rss_after = rss_mib(pid);
    let worker_alive = api
        .try_get("/api/v1/workers")
        .ok()
        .and_then(|r| r.body["workers"].as_array().cloned())
        .is_some_and(|w| w.iter().any(|w| w["id"] == "w1" && w["state"] == "ALIVE"));

    for e in &examples {
        eprintln!("fuzz: {e}");
    }
    let all = tally.all();
    let mut table = format!(
        "Single-node master (redb), one worker; {} requests from {} threads over raw TCP (one \
         connection each), seed {seed}, in {:.1} s. \"4xx, empty\" are mostly hyper's own \
         answers to what it cannot parse (400, 414, 431); \"4xx, other\" have a body that is \
         not a JSON `{{\"error\": ...}}`; \"none\" are connections closed, reset or timed out \
         (10 s) without an answer.\n\n\
         | class | requests | 2xx | 3xx | 4xx, JSON error | 4xx, empty | 4xx, other | 5xx | none |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        a.requests,
        a.concurrency,
        fuzz_time.as_secs_f64()
    );
    for (class, m) in tally.by_class.iter().chain([(&"all", &all)]) {
        let r = row(m);
        let name = if *class == "all" {
            "**all**".to_string()
        } else {
            class.to_string()
        };
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        ));
    }
    let mut statuses = BTreeMap::new();
    let mut none = BTreeMap::new();
    for (o, n) in &all {
        match o {
            Outcome::Status(s, _) => *statuses.entry(*s).or_insert(0) += n,
            other => *none.entry(format!("{other:?}").to_lowercase()).or_insert(0) += n,
        }
    }
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let statuses: BTreeMap<String, usize> = statuses
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let five = all
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Status(s, _) if *s >= 500))
        .map(|(_, n)| n)
        .sum::<usize>();
    let mib = |m: Option<f64>| m.map_or("—".into(), |m| format!("{m:.0} MiB"));
    table.push_str(&format!(
        "\nBy status: {}. Without an answer: {}.\n\n\
         - 5xx: **{five}**; crashes: **{}** (the master {}; `/healthz` {}; worker w1 {}).\n\
         - The master's RSS: {} before, {} after.\n",
        list(&statuses),
        if none.is_empty() {
            "none".into()
        } else {
            list(&none)
        },
        usize::from(exit.is_some()),
        match &exit {
            None => "is alive at the end".to_string(),
            Some(st) => format!("exited: {st}"),
        },
        match &health {
            Ok(s) => s.to_string(),
            Err(e) => format!("unreachable: {e}"),
        },
        if worker_alive { "ALIVE" } else { "not ALIVE" },
        mib(rss_before),
        mib(rss_after),
    ));
    if let Some(slow) = slow {
        let mut closed = slow.closed_by_master.clone();
        closed.sort();
        let mut probes = slow.probes.clone();
        probes.sort();
        let secs =
            |d: Option<Duration>| d.map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        let answered: BTreeMap<String, usize> = slow
            .answered
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        table.push_str(&format!(
            "- Slowloris: {} connections sending a header one byte a second for {:.0} s: {} \
             closed by the master (first after {}, median {}, last {}; answered before closing: \
             {}), {} still open at the end. Meanwhile `GET /api/v1/apps?limit=1` every 250 ms: \
             {} answered, p50 {}, p99 {}, max {}; {} failed.\n",
            slow.opened,
            slow.lasted.as_secs_f64(),
            closed.len(),
            secs(closed.first().copied()),
            secs(percentile(&closed, 0.5)),
            secs(closed.last().copied()),
            if answered.is_empty() {
                "none".into()
            } else {
                list(&answered)
            },
            slow.still_open,
            probes.len(),
            percentile(&probes, 0.5).map_or("—".into(), ms),
            percentile(&probes, 0.99).map_or("—".into(), ms),
            percentile(&probes, 1.0).map_or("—".into(), ms),
            slow.probe_failures,
        ));
    }
    report("fuzz", command_line, &table, a.write.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_with_their_json_errors() {
        let a = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n{\"error\": \"bad\"}\n";
        assert_eq!(parse(a), Some(Outcome::Status(400, Body::JsonError)));
        let b = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad";
        assert_eq!(parse(b), Some(Outcome::Status(400, Body::Other)));
        let e = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse(e), Some(Outcome::Status(431, Body::Empty)));
        let c = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"err\r\n\
                  c\r\nor\": \"gone\"}\r\n0\r\n\r\n";
        assert_eq!(parse(c), Some(Outcome::Status(404, Body::JsonError)));
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn the_same_seed_makes_the_same_requests() {
        let k = Known {
            done: "app-1".into(),
            parked: "app-2".into(),
            schedule: "sch-1".into(),
        };
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..200 {
            assert_eq!(request(&mut a, &k).bytes, request(&mut b, &k).bytes);
        }
    }
}
