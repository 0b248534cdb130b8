//! Hostile input, generated: property tests (`proptest`) over every REST body and query and
//! every gRPC message a worker sends, against one live single-node master with one worker,
//! started once for the whole file. Whatever comes in:
//! - never a 5xx, and every 4xx is `{"error": "..."}`; gRPC never answers INTERNAL or UNKNOWN;
//! - the master survives: it is alive and `/healthz` answers 200 after every property;
//! - nothing refused is partially applied: a 4xx submission creates no app, a 4xx schedule no
//!   schedule, a refused patch or kill changes nothing, a refused registration registers no
//!   worker, and reports from a worker that does not own an app never move it.
//!
//! The generators start from valid requests and break them (wrong types, huge numbers, NUL,
//! control and bidi characters, deep nesting, unknown fields, ids with path traversal), or send
//! raw bytes. The seed is random; it is printed first, and `PROPTEST_RNG_SEED=<seed>` replays a
//! run. A failure shows the minimal failing input. No failure file is written.
//!
//! Every property runs in one `#[test]` because they share the cluster: a cluster per property
//! would cost more than the properties themselves.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aloha_e2e::{Api, Cluster};
use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::{
    AppStateReport, HeartbeatRequest, RegisterWorkerRequest, ReportAppStatesRequest,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reqwest::blocking::Client;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Strings that broke servers before: traversal, NUL, bidi, escapes, numbers that overflow,
/// durations, states, zones and times at and past their limits.
const NASTY: &[&str] = &[
    "",
    " ",
    "..",
    "../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "/",
    "\\..\\..\\windows\\win.ini",
    "\0",
    "a\0b",
    "invoice\u{202E}fdp.exe",
    "team\u{2066}",
    "\u{FEFF}",
    "\u{7f}",
    "\r\n",
    "\t",
    "💥🔥",
    "\u{FDFA}",
    "é",
    "%00",
    "%",
    "%zz",
    "%ff%fe",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e999",
    "NaN",
    "9223372036854775808",
    "18446744073709551616",
    "1ms",
    "1s",
    "-1s",
    "1000000000000000000s",
    "10000000000000000000000000h",
    "RUNNING",
    "SLEEPING",
    "process",
    "allow",
    "stdout",
    "app-00000000000000-1",
    "sch-0",
    "<script>alert(1)</script>",
    "'; DROP TABLE apps; --",
    "${jndi:ldap://x}",
    "* * * * *",
    "0 0 1 1 *",
    "61 25 32 13 8",
    "Europe/Paris",
    "Mars/Olympus_Mons",
    "2026-13-45T99:99:99Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "-262144-01-01T00:00:00Z",
];

/// A hostile string of at most a few hundred bytes.
fn short_string() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => select(NASTY).prop_map(str::to_string),
        2 => any::<String>(),
        2 => "[a-z0-9./%\\\\\\x00-\\x1f\u{202a}-\u{202e}\u{2066}-\u{2069}]{0,40}",
    ]
}

/// A hostile string, sometimes hundreds of kilobytes long.
fn hostile_string() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        8 => short_string(),
        1 => (1usize..400_000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON: wrong types, extreme numbers, hostile strings, nested arrays and objects.
fn hostile_json() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(&[0i64, -1, 1, i64::MIN, i64::MAX, 65536, 65537, 1 << 32][..]).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(short_string(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A change to a valid JSON object.
#[derive(Debug, Clone)]
enum Edit {
    Set(String, Value),
    Remove(String),
}

fn edits(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let field = prop_oneof![
        4 => select(fields).prop_map(str::to_string),
        1 => short_string(),
    ];
    let edit = prop_oneof![
        4 => (field.clone(), hostile_json()).prop_map(|(k, v)| Edit::Set(k, v)),
        // Strings are the right type for many fields: these reach the validation.
        3 => (field.clone(), hostile_string()).prop_map(|(k, v)| Edit::Set(k, v.into())),
        1 => field.prop_map(Edit::Remove),
    ];
    vec(edit, 1..4)
}

fn apply(mut body: Value, edits: &[Edit]) -> Value {
    for e in edits {
        if let Some(o) = body.as_object_mut() {
            match e {
                Edit::Set(k, v) => {
                    o.insert(k.clone(), v.clone());
                }
                Edit::Remove(k) => {
                    o.remove(k);
                }
            }
        }
    }
    body
}

/// A process spec that is safe to run if the rest of the submission happens to be valid: only
/// `true` or `echo`, whatever else it carries (the generated objects never have a `command`).
fn safe_spec() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"command": ["true"]})),
        short_string().prop_map(|s| json!({"command": ["echo", s]})),
        (short_string(), short_string())
            .prop_map(|(k, v)| json!({"command": ["true"], "env": {k: v}})),
        short_string().prop_map(|d| json!({"command": ["true"], "cwd": d})),
        hostile_json(),
    ]
}

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
    "max_backoff",
    "on_demand",
    "libs",
    "namespace",
];

/// A submission broken in one to three places. It asks for 64 cores: when it is valid after
/// all, it waits in the queue instead of running.
fn submission() -> impl Strategy<Value = Value> {
    (safe_spec(), edits(SUBMIT_FIELDS), 0u8..16).prop_map(|(spec, edits, wrap)| {
        let base = json!({"name": "hostile", "kind": "process", "spec": spec, "cores": 64});
        let body = apply(base, &edits);
        match wrap {
            0 => json!([body]),
            1 => json!({"app": body}),
            _ => body,
        }
    })
}

const SCHEDULE_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "app",
    "cron",
    "every",
    "time_zone",
    "start_at",
    "end_at",
    "overlap",
    "max_queued",
    "misfire",
    "misfire_grace",
    "jitter",
    "paused",
];

const NAMESPACE_FIELDS: &[&str] = &["quota", "weight"];

/// A schedule that would never fire (paused, once a year), broken in one to three places.
fn schedule() -> impl Strategy<Value = Value> {
    (edits(SCHEDULE_FIELDS), edits(SUBMIT_FIELDS), any::<bool>()).prop_map(
        |(edits, app_edits, break_app)| {
            let mut app = json!({"kind": "process", "spec": {"command": ["true"]}, "cores": 64});
            if break_app {
                app = apply(app, &app_edits);
            }
            let base = json!({"name": "hostile", "app": app, "cron": "0 0 1 1 *", "paused": true});
            apply(base, &edits)
        },
    )
}

/// A patch of the schedule fields, with hostile values.
fn schedule_patch() -> impl Strategy<Value = Value> {
    edits(SCHEDULE_FIELDS).prop_map(|e| apply(json!({}), &e))
}

/// Everything but the unreserved characters percent-encoded.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Like [`enc`], but a `%` stays as it is: `%zz` and `%ff` reach the server undecoded.
fn raw_enc(s: &str) -> String {
    s.split('%').map(enc).collect::<Vec<_>>().join("%")
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => short_string(),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        2 => select(&["0", "1", "1000", "1001", "99999999999999999999999", "1.5", "", "true",
            "false", "stdout", "stderr", "FINISHED"][..]).prop_map(str::to_string),
    ]
}

/// A query string of up to four pairs, mostly known keys; `allowed` filters pairs out (a
/// `follow=true` would stream forever).
fn query(
    keys: &'static [&'static str],
    allowed: fn(&str, &str) -> bool,
) -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => select(keys).prop_map(str::to_string), 1 => short_string()];
    vec((key, query_value(), any::<bool>()), 0..4).prop_map(move |pairs| {
        pairs
            .iter()
            .filter(|(k, v, _)| allowed(k, v))
            .map(|(k, v, raw)| {
                let v = if *raw { raw_enc(v) } else { enc(v) };
                format!("{}={v}", enc(k))
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// A path segment: hostile ids encoded, or raw traversal and broken escapes.
fn path_id(real: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => short_string().prop_map(|s| enc(&s)),
        // "%ff" decodes to invalid UTF-8.
        2 => select(&["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%00", "%ff", "a%2Fb", "%",
            "app-00000000000000-1", "app-99999999999999-99999999999999999999", "x;y", "~"][..])
            .prop_map(str::to_string),
        2 => select(real),
    ]
}

/// A raw body: truncated or deeply nested JSON, numbers JSON cannot hold, invalid UTF-8, raw
/// control characters, duplicate keys, random bytes.
fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = r#"{"name":"raw","kind":"process","spec":{"command":["true"]},"cores":64}"#;
    prop_oneof![
        submission()
            .prop_flat_map(|v| {
                let s = v.to_string().into_bytes();
                let n = s.len();
                (Just(s), 0..n)
            })
            .prop_map(|(s, cut)| s[..cut].to_vec()),
        (
            1usize..20_000,
            select(&["[", "{\"a\":", "{\"spec\":"][..]),
            any::<bool>()
        )
            .prop_map(|(depth, open, close)| {
                let mut s = open.repeat(depth);
                s.push('1');
                if close {
                    for _ in 0..depth {
                        s.push(if open == "[" { ']' } else { '}' });
                    }
                }
                s.into_bytes()
            }),
        select(
            &[
                "1e999",
                "-1e999",
                "123456789012345678901234567890",
                "-0",
                "0.5",
                "1e-999",
                "9223372036854775808",
                "-9223372036854775809",
                "NaN",
                "Infinity",
                "0x10",
                "01",
                "1_000",
                "\"1\"",
                "[]",
                "{}"
            ][..]
        )
        .prop_map(move |n| valid.replace("64", n).into_bytes()),
        Just(valid.replace("raw", "\u{0}").into_bytes()),
        Just(valid.replace("raw", "a\u{1b}[31m").into_bytes()),
        Just([valid.as_bytes(), b"garbage"].concat()),
        Just(format!("\u{FEFF}{valid}").into_bytes()),
        Just(
            r#"{"name":"a","name":"b","kind":"process","spec":{},"cores":64}"#
                .as_bytes()
                .to_vec()
        ),
        Just(b"{\"name\":\"\xff\xfe\",\"kind\":\"process\",\"spec\":{},\"cores\":64}".to_vec()),
        vec(any::<u8>(), 0..512),
    ]
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin1",
    "APPLICATION/JSON",
    "application/problem+json",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "",
    "*/*",
];

/// The answers of the running property, by status or gRPC code, to show what the generated
/// inputs reached.
static TALLY: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn tally(what: String) {
    *TALLY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(what)
        .or_default() += 1;
}

/// Mostly JSON, so that the body is what gets refused.
fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        3 => Just(Some("application/json")),
        1 => proptest::option::of(select(CONTENT_TYPES)),
    ]
}

/// An answer: status, body as JSON (`Null` when not JSON), and the text for messages.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
}

/// The shared master, a raw HTTP client, and what the properties look at.
struct Fixture {
    api: Api,
    http: Client,
    rpc: String,
    /// An app that waits in the queue for ever (64 cores, the worker has 2).
    parked: Mutex<String>,
    /// An app that FINISHED.
    done: String,
}

impl Fixture {
    /// Sends any request; `Err` only when the master does not answer.
    fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, TestCaseError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path_and_query}", self.api.base));
        if let Some(ct) = content_type {
            // The client cannot send every byte in a header; aloha-bench fuzz can.
            if let Ok(v) = HeaderValue::from_str(ct) {
                req = req.header(CONTENT_TYPE, v);
            }
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().map_err(|e| {
            TestCaseError::fail(format!(
                "{method} {}: no answer: {e}",
                short(path_and_query)
            ))
        })?;
        let status = r.status().as_u16();
        tally(status.to_string());
        let text = r.text().unwrap_or_default();
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        })
    }

    /// How many apps the master lists, every page.
    fn app_count(&self) -> usize {
        self.count("/api/v1/apps", "apps")
    }

    fn schedule_count(&self) -> usize {
        self.count("/api/v1/schedules", "schedules")
    }

    fn count(&self, path: &str, field: &str) -> usize {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let q = match &after {
                Some(a) => format!("{path}?limit=1000&after={}", enc(a)),
                None => format!("{path}?limit=1000"),
            };
            let r = self.api.get(&q);
            assert_eq!(r.status, 200, "GET {q}: {:?}", r.body);
            n += r.body[field].as_array().map_or(0, Vec::len);
            match r.body["next"].as_str() {
                Some(next) if !next.is_empty() => after = Some(next.to_string()),
                _ => return n,
            }
        }
    }

    /// The workers as (id, address, cores, memory), sorted: what a registration may change.
    fn workers(&self) -> Vec<(String, String, u64, u64)> {
        let mut w: Vec<_> = self
            .api
            .workers()
            .iter()
            .map(|w| {
                (
                    w["id"].as_str().unwrap_or_default().to_string(),
                    w["address"].as_str().unwrap_or_default().to_string(),
                    w["cores"].as_u64().unwrap_or_default(),
                    w["memory_mb"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        w.sort();
        w
    }

    /// An app's state and attempt.
    fn app_state(&self, id: &str) -> (String, u64) {
        let a = self.api.app(id);
        (
            a["state"].as_str().unwrap_or_default().to_string(),
            a["attempt"].as_u64().unwrap_or_default(),
        )
    }

    fn parked(&self) -> String {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn park_another(&self) {
        let id = self
            .api
            .submit_cmd("parked", &["true"], json!({"cores": 64}));
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }
}

/// The first 200 bytes, for messages about huge inputs.
fn short(s: &str) -> String {
    clip(s, 200)
}

/// The first `max` bytes (and the length when cut).
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Never a 5xx; every 4xx is `{"error": "<string>"}`.
fn client_error_ok(what: &str, a: &Answer) -> Result<(), TestCaseError> {
    if a.status >= 500 {
        return Err(TestCaseError::fail(format!(
            "{what}: {} for a client's request: {}",
            a.status,
            short(&a.text)
        )));
    }
    if (400..500).contains(&a.status) && !a.body["error"].is_string() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} without a JSON error: {}",
            a.status,
            short(&a.text)
        )));
    }
    Ok(())
}

fn unchanged<T: PartialEq + Debug>(what: &str, before: T, after: T) -> Result<(), TestCaseError> {
    if before == after {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{what} was partially applied: {before:?} became {after:?}"
        )))
    }
}

/// A gRPC refusal must say what was wrong with the request, not that the server broke.
fn grpc_ok<R>(what: &str, r: &Result<R, tonic::Status>) -> Result<(), TestCaseError> {
    tally(match r {
        Ok(_) => "OK".to_string(),
        Err(s) => format!("{:?}", s.code()),
    });
    if let Err(s) = r {
        if matches!(s.code(), tonic::Code::Internal | tonic::Code::Unknown) {
            return Err(TestCaseError::fail(format!(
                "{what}: {:?} for bad input: {}",
                s.code(),
                short(s.message())
            )));
        }
    }
    Ok(())
}

/// Runs one property; a failure is collected with its minimal input and the test goes on, so
/// one run shows every broken property. After each property the master must be alive and
/// healthy; once it is not, the remaining properties are skipped.
struct Properties {
    seed: u64,
    failures: Vec<String>,
    api: Api,
    /// The master's pid.
    master: i32,
    down: bool,
}

impl Properties {
    fn run<S: Strategy>(
        &mut self,
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: Debug,
    {
        if self.down {
            eprintln!("{name}: skipped, the master is down");
            return;
        }
        let config = Config {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(self.seed),
            max_shrink_iters: 500,
            max_shrink_time: 20_000,
            ..Config::default()
        };
        let t0 = Instant::now();
        let result = TestRunner::new(config).run(&strategy, test);
        let answers = std::mem::take(&mut *TALLY.lock().unwrap_or_else(|p| p.into_inner()));
        eprintln!(
            "{name}: {cases} cases in {:.1?}, answers {answers:?}",
            t0.elapsed()
        );
        if let Err(e) = result {
            let msg = clip(&format!("{name}: {e}"), 4000);
            eprintln!("FAILED {msg}");
            self.failures.push(msg);
        }
        if let Err(why) = self.healthy() {
            self.failures.push(format!("after {name}: {why}"));
            self.down = true;
        }
    }

    /// The master runs (not a zombie either) and `/healthz` answers 200.
    fn healthy(&self) -> Result<(), String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.master))
            .map_err(|e| format!("the master is gone: {e}"))?;
        // "pid (comm) STATE ...": the state follows the last ')'.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("Z") {
            return Err("the master exited".into());
        }
        match self.api.try_get("/healthz") {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("/healthz: {other:?}")),
        }
    }
}

/// The seed: `PROPTEST_RNG_SEED`, else a random one.
fn seed() -> u64 {
    if let Some(s) = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    Instant::now().hash(&mut h);
    h.finish()
}

#[test]
fn hostile_input_never_breaks_the_master_nor_half_applies() {
    let seed = seed();
    eprintln!("hostile_input: seed {seed} (replay with PROPTEST_RNG_SEED={seed})");
    let started = Instant::now();
    // A long worker timeout: the workers that generated registrations create never expire
    // while the test compares worker lists.
    let c = Cluster::start("1h", &[("w1", 2)]);
    let api = c.api().clone();
    let done = api.submit_cmd("done", &["true"], json!({}));
    api.wait_state(&done, "FINISHED", T);
    let f = Fixture {
        api: api.clone(),
        http: Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client"),
        rpc: c.master.rpc_url(),
        parked: Mutex::new(String::new()),
        done: done.clone(),
    };
    f.park_another();
    let mut p = Properties {
        seed,
        failures: Vec::new(),
        api: api.clone(),
        master: c.master.proc.pid(),
        down: false,
    };
    rest_properties(&mut p, &f);
    grpc_properties(&mut p, &f);
    // The real worker took every hostile report and registration beside it in its stride.
    if !p.down {
        let w1 = f.api.workers();
        let w1 = w1.iter().find(|w| w["id"] == "w1");
        if w1.is_none_or(|w| w["state"] != "ALIVE") {
            p.failures
                .push(format!("worker w1 is no longer ALIVE: {w1:?}"));
        }
    }
    eprintln!("hostile_input: {:.1?} in all", started.elapsed());
    assert!(
        p.failures.is_empty(),
        "{} properties failed (seed {seed}; replay with PROPTEST_RNG_SEED={seed}):\n{}",
        p.failures.len(),
        p.failures.join("\n")
    );
}

fn rest_properties(p: &mut Properties, f: &Fixture) {
    // POST /api/v1/apps, JSON bodies, with a query and an Idempotency-Key sometimes.
    let submit_query = query(&["dry_run", "wait"], |k, v| {
        // A valid wait on a valid app that never runs would hold the case for minutes.
        k != "wait" || humantime::parse_duration(v).map_or(true, |d| d < Duration::from_millis(50))
    });
    p.run(
        "POST /api/v1/apps (JSON)",
        480,
        (
            submission(),
            submit_query,
            proptest::option::of(short_string()),
        ),
        |(body, q, key)| {
            let before = f.app_count();
            let path = format!("/api/v1/apps?{q}");
            let mut req = f.http.post(format!("{}{path}", f.api.base)).json(&body);
            if let Some(k) = key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
                req = req.header("idempotency-key", k);
            }
            let r = req
                .send()
                .map_err(|e| TestCaseError::fail(format!("POST {path}: no answer: {e}")))?;
            let status = r.status().as_u16();
            tally(status.to_string());
            let text = r.text().unwrap_or_default();
            let a = Answer {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            };
            client_error_ok("POST /api/v1/apps", &a)?;
            let after = f.app_count();
            match a.status {
                201 => unchanged("a 201 submission", before + 1, after),
                _ => unchanged("a refused or repeated submission", before, after),
            }
        },
    );

    // POST /api/v1/apps, raw bytes under any content type.
    p.run(
        "POST /api/v1/apps (raw)",
        480,
        (raw_body(), content_type()),
        |(body, ct)| {
            let before = f.app_count();
            let a = f.send(Method::POST, "/api/v1/apps", ct, Some(body))?;
            client_error_ok("POST /api/v1/apps", &a)?;
            let after = f.app_count();
            match a.status {
                201 => unchanged("a 201 submission", before + 1, after),
                _ => unchanged("a refused submission", before, after),
            }
        },
    );

    // Wrong methods on the collections.
    let methods = [
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::from_bytes(b"BREW").expect("a method"),
    ];
    p.run(
        "wrong methods",
        120,
        (
            select(methods.to_vec()),
            select(
                &[
                    "/api/v1/apps",
                    "/api/v1/workers",
                    "/api/v1/events",
                    "/api/v1/schedules",
                ][..],
            ),
            raw_body(),
        ),
        |(m, path, body)| {
            let before = f.app_count();
            let a = f.send(m, path, Some("application/json"), Some(body))?;
            client_error_ok(path, &a)?;
            unchanged("a wrong method", before, f.app_count())
        },
    );

    // GET /api/v1/apps?...
    p.run(
        "GET /api/v1/apps?query",
        480,
        query(&["state", "limit", "after", "schedule_id"], |_, _| true),
        |q| {
            let a = f.send(Method::GET, &format!("/api/v1/apps?{q}"), None, None)?;
            client_error_ok("GET /api/v1/apps", &a)
        },
    );

    // GET /api/v1/events?follow=false&... (a follow would stream for ever).
    p.run(
        "GET /api/v1/events?query",
        360,
        query(&["after", "limit", "app_id", "kind", "type"], |k, _| {
            k != "follow"
        }),
        |q| {
            let a = f.send(
                Method::GET,
                &format!("/api/v1/events?follow=false&{q}"),
                None,
                None,
            )?;
            client_error_ok("GET /api/v1/events", &a)
        },
    );

    // GET /api/v1/apps/{id}/logs?...
    let ids = vec![f.done.clone(), f.parked()];
    p.run(
        "GET /api/v1/apps/{id}/logs?query",
        360,
        (
            path_id(ids.clone()),
            query(
                &["stream", "attempt", "offset", "limit", "follow"],
                |k, v| k != "follow" || v != "true",
            ),
        ),
        |(id, q)| {
            let a = f.send(
                Method::GET,
                &format!("/api/v1/apps/{id}/logs?{q}"),
                None,
                None,
            )?;
            client_error_ok("GET /api/v1/apps/{id}/logs", &a)
        },
    );

    // POST /api/v1/apps/{id}/kill and /retry: hostile ids and bodies. A refused kill leaves the
    // parked app as it was; only a 201 retry creates an app.
    p.run(
        "POST /api/v1/apps/{id}/kill|retry",
        360,
        (
            path_id(vec!["PARKED".into(), f.done.clone()]),
            select(&["kill", "retry"][..]),
            prop_oneof![
                hostile_json().prop_map(|v| v.to_string().into_bytes()),
                raw_body(),
                Just(b"{\"reason\": \"hostile\"}".to_vec()),
            ],
            content_type(),
        ),
        |(id, action, body, ct)| {
            let parked = f.parked();
            let id = if id == "PARKED" { parked.clone() } else { id };
            let before = (f.app_count(), f.app_state(&parked));
            let a = f.send(
                Method::POST,
                &format!("/api/v1/apps/{id}/{action}"),
                ct,
                Some(body),
            )?;
            client_error_ok(&format!("POST /api/v1/apps/{{id}}/{action}"), &a)?;
            let after = (f.app_count(), f.app_state(&parked));
            match (action, a.status) {
                ("retry", 201) => unchanged("a retry", before.0 + 1, after.0),
                ("kill", 202) if id == parked => {
                    f.park_another();
                    Ok(())
                }
                _ => unchanged("a refused kill or retry", before, after),
            }
        },
    );

    // POST /api/v1/workers/{id}/drain: a refused drain changes no worker.
    p.run(
        "POST /api/v1/workers/{id}/drain",
        300,
        (
            path_id(vec!["w1".into()]),
            prop_oneof![
                hostile_json().prop_map(|d| json!({ "deadline": d }).to_string().into_bytes()),
                hostile_json().prop_map(|v| v.to_string().into_bytes()),
                raw_body(),
            ],
        ),
        |(id, body)| {
            let states = || {
                f.api
                    .workers()
                    .iter()
                    .map(|w| (w["id"].clone(), w["state"].clone()))
                    .collect::<Vec<_>>()
            };
            let before = states();
            let a = f.send(
                Method::POST,
                &format!("/api/v1/workers/{id}/drain"),
                Some("application/json"),
                Some(body),
            )?;
            client_error_ok("POST /api/v1/workers/{id}/drain", &a)?;
            if a.status == 200 {
                // It drains for real: take it back.
                let u = f.send(
                    Method::POST,
                    &format!("/api/v1/workers/{id}/undrain"),
                    None,
                    None,
                )?;
                client_error_ok("undrain", &u)?;
                return Ok(());
            }
            unchanged("a refused drain", before, states())
        },
    );

    // POST /api/v1/schedules: a refused schedule creates none.
    p.run(
        "POST /api/v1/schedules",
        420,
        prop_oneof![
            4 => schedule().prop_map(|v| v.to_string().into_bytes()),
            1 => raw_body(),
        ],
        |body| {
            let before = f.schedule_count();
            let a = f.send(
                Method::POST,
                "/api/v1/schedules",
                Some("application/json"),
                Some(body),
            )?;
            client_error_ok("POST /api/v1/schedules", &a)?;
            let after = f.schedule_count();
            match a.status {
                201 => unchanged("a new schedule", before + 1, after),
                _ => unchanged("a refused schedule", before, after),
            }
        },
    );

    // PATCH /api/v1/schedules/{id}: a refused patch leaves the schedule as it was.
    let base = f.api.post(
        "/api/v1/schedules",
        &json!({"name": "target", "app": {"kind": "process", "spec": {"command": ["true"]},
            "cores": 64}, "cron": "0 0 1 1 *", "paused": true}),
    );
    assert_eq!(base.status, 201, "{:?}", base.body);
    let target = base.body["id"].as_str().expect("a schedule id").to_string();
    p.run(
        "PATCH /api/v1/schedules/{id}",
        420,
        (
            path_id(vec![target.clone(), target.clone()]),
            prop_oneof![
                4 => schedule_patch().prop_map(|v| v.to_string().into_bytes()),
                1 => raw_body(),
            ],
        ),
        |(id, body)| {
            let schedule = || {
                let mut s = f.api.get(&format!("/api/v1/schedules/{target}")).body;
                // Not part of the record: the next times move with the clock.
                s["next_runs"] = Value::Null;
                s
            };
            let before = (f.schedule_count(), schedule());
            let a = f.send(
                Method::PATCH,
                &format!("/api/v1/schedules/{id}"),
                Some("application/json"),
                Some(body),
            )?;
            client_error_ok("PATCH /api/v1/schedules/{id}", &a)?;
            let after = (f.schedule_count(), schedule());
            if a.status == 200 && id == target {
                return unchanged("the schedule count", before.0, after.0);
            }
            unchanged("a refused patch", before, after)
        },
    );
    // PUT /api/v1/namespaces/{name}: a refused one changes no namespace; an accepted one is a
    // valid name with a valid quota and weight.
    let ns = f
        .api
        .put("/api/v1/namespaces/hostile-ns", &json!({"weight": 1}));
    assert_eq!(ns.status, 200, "{:?}", ns.body);
    let spec = edits(NAMESPACE_FIELDS)
        .prop_map(|e| apply(json!({"quota": {"max_queued_apps": 10}, "weight": 1}), &e));
    p.run(
        "PUT /api/v1/namespaces/{name}",
        300,
        (
            path_id(vec!["hostile-ns".into(), "hostile-ns-2".into()]),
            prop_oneof![
                4 => spec.prop_map(|v| v.to_string().into_bytes()),
                1 => raw_body(),
            ],
        ),
        |(name, body)| {
            let namespaces = || f.api.get("/api/v1/namespaces").body;
            let before = namespaces();
            let a = f.send(
                Method::PUT,
                &format!("/api/v1/namespaces/{name}"),
                Some("application/json"),
                Some(body),
            )?;
            client_error_ok("PUT /api/v1/namespaces/{name}", &a)?;
            if a.status == 200 {
                // A DNS label: a-z, 0-9 and '-', 1 to 63, a letter or digit at both ends.
                let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
                let label = (1..=63).contains(&name.len())
                    && name.chars().all(|c| ok(c) || c == '-')
                    && name.starts_with(ok)
                    && name.ends_with(ok);
                prop_assert!(label, "accepted the namespace name {name:?}");
                let w = a.body["weight"].as_u64().unwrap_or(0);
                prop_assert!((1..=1_000_000).contains(&w), "accepted weight {w}");
                return Ok(());
            }
            unchanged("a refused namespace", before, namespaces())
        },
    );
    // Whatever the generated schedules would start, they start nothing now.
    let listed = f.api.get("/api/v1/schedules?limit=1000");
    for s in listed.body["schedules"].as_array().into_iter().flatten() {
        if let Some(id) = s["id"].as_str() {
            f.api.delete(&format!("/api/v1/schedules/{}", enc(id)));
        }
    }
}

/// A worker id, without the real worker's: a registration with an empty instance may take
/// over an id, by design.
fn worker_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => short_string(),
        2 => "[a-z0-9._:-]{1,20}",
        1 => (120usize..140).prop_map(|n| "w".repeat(n)),
        1 => (1usize..300_000).prop_map(|n| "x".repeat(n)),
    ]
    .prop_filter("not the real worker", |id| id != "w1")
}

fn kinds() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        6 => vec(prop_oneof![1 => short_string(), 3 => "[a-z][a-z0-9-]{0,12}"], 0..6),
        1 => (0usize..5000).prop_map(|n| (0..n).map(|i| format!("k{i}")).collect()),
    ]
    // A fake worker with `process` would get the queued apps.
    .prop_filter("no process kind", |k| !k.iter().any(|k| k == "process"))
}

fn report(worker: Option<String>, apps: Vec<String>) -> impl Strategy<Value = AppStateReport> {
    let worker = match worker {
        Some(w) => prop_oneof![Just(w), Just("w1".to_string()), worker_id()].boxed(),
        None => prop_oneof![Just("w1".to_string()), worker_id()].boxed(),
    };
    (
        (
            worker,
            prop_oneof![2 => select(apps), 1 => short_string()],
            prop_oneof![Just(0u32), Just(1), Just(2), Just(u32::MAX), any::<u32>()],
            prop_oneof![
                3 => select(&["RUNNING", "FINISHED", "FAILED", "KILLED", "ERROR", "SUBMITTED",
                    "running", ""][..]).prop_map(str::to_string),
                1 => short_string(),
            ],
        ),
        (
            proptest::option::of(any::<i32>()),
            hostile_string(),
            any::<bool>(),
            btree_map(short_string(), short_string(), 0..4),
        ),
    )
        .prop_map(
            |(
                (worker_id, app_id, attempt, state),
                (exit_code, message, worker_shutdown, details),
            )| {
                AppStateReport {
                    worker_id,
                    app_id,
                    attempt,
                    state,
                    exit_code,
                    message,
                    worker_shutdown,
                    details: details.into_iter().collect(),
                }
            },
        )
}

fn registration(apps: Vec<String>) -> impl Strategy<Value = RegisterWorkerRequest> {
    (
        (
            // Each field is valid more often than not, so that some registrations pass and
            // the rest fail on one field at a time.
            prop_oneof![3 => "fake-[a-z0-9]{1,8}", 2 => worker_id()],
            prop_oneof![
                3 => Just("127.0.0.1:1".to_string()),
                1 => short_string(),
                1 => "[a-z0-9.]{1,12}:[0-9]{1,6}",
                1 => "\\[[0-9a-f:]{0,20}\\]:[0-9]{1,5}",
            ],
            prop_oneof![
                3 => 1u32..=64,
                1 => select(&[0u32, 65536, 65537, u32::MAX][..]),
                1 => any::<u32>(),
            ],
            prop_oneof![
                3 => 1u64..=1 << 20,
                1 => select(&[0u64, u64::MAX][..]),
                1 => any::<u64>(),
            ],
        ),
        (
            kinds(),
            prop_oneof![2 => Just(Vec::new()), 1 => vec(report(None, apps), 1..3)],
            prop_oneof![2 => Just(Vec::new()), 1 => vec(short_string(), 1..3)],
            prop_oneof![3 => "[0-9a-f]{32}", 1 => short_string(), 1 => Just(String::new())],
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
        ),
    )
        .prop_map(
            |(
                (worker_id, address, cores, memory_mb),
                (kinds, apps, plugin_errors, instance, max_epoch_seen),
            )| {
                RegisterWorkerRequest {
                    worker_id,
                    address,
                    cores,
                    memory_mb,
                    kinds,
                    apps,
                    plugin_errors,
                    instance,
                    max_epoch_seen,
                }
            },
        )
}

fn grpc_properties(p: &mut Properties, f: &Fixture) {
    if p.down {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = rt
        .block_on(MasterServiceClient::connect(f.rpc.clone()))
        .expect("connect to the master's gRPC")
        .max_decoding_message_size(64 << 20);
    let parked = f.parked();
    let apps = vec![parked.clone(), f.done.clone()];
    // Reports from workers that do not own these apps must never move them.
    let watched = || (f.app_state(&parked), f.app_state(&f.done));
    let watched_before = watched();

    p.run(
        "gRPC RegisterWorker",
        450,
        registration(apps.clone()),
        |req| {
            let before = f.workers();
            let mut c = client.clone();
            let r = rt.block_on(c.register_worker(req));
            grpc_ok("RegisterWorker", &r)?;
            let after = f.workers();
            if r.is_err() {
                unchanged("a refused registration", before, after)?;
            }
            unchanged(
                "the apps of other workers",
                watched_before.clone(),
                watched(),
            )
        },
    );

    p.run("gRPC Heartbeat", 300, worker_id(), |worker_id| {
        let mut c = client.clone();
        let r = rt.block_on(c.heartbeat(HeartbeatRequest { worker_id }));
        grpc_ok("Heartbeat", &r)
    });

    p.run("gRPC Heartbeats", 200, vec(worker_id(), 1..5), |ids| {
        let mut c = client.clone();
        let n = ids.len();
        let beats = ids
            .into_iter()
            .map(|worker_id| HeartbeatRequest { worker_id });
        let r = rt.block_on(async {
            let mut answers = c.heartbeats(tokio_stream::iter(beats)).await?.into_inner();
            let mut got = 0;
            while answers.message().await?.is_some() {
                got += 1;
            }
            Ok::<_, tonic::Status>(got)
        });
        grpc_ok("Heartbeats", &r)?;
        if let Ok(got) = r {
            prop_assert_eq!(got, n, "one answer per beat");
        }
        Ok(())
    });

    p.run(
        "gRPC ReportAppState",
        360,
        report(None, apps.clone()),
        |rep| {
            let mut c = client.clone();
            let r = rt.block_on(c.report_app_state(rep));
            grpc_ok("ReportAppState", &r)?;
            unchanged(
                "an app another worker reported",
                watched_before.clone(),
                watched(),
            )
        },
    );

    let batch = {
        let apps = apps.clone();
        move || {
            let apps = apps.clone();
            prop_oneof![Just("w1".to_string()), worker_id()].prop_flat_map(move |w| {
                (Just(w.clone()), vec(report(Some(w), apps.clone()), 0..6))
                    .prop_map(|(worker_id, reports)| ReportAppStatesRequest { worker_id, reports })
            })
        }
    };
    p.run("gRPC StreamAppStates", 200, vec(batch(), 1..4), |batches| {
        let mut c = client.clone();
        let sizes: Vec<usize> = batches.iter().map(|b| b.reports.len()).collect();
        let r = rt.block_on(async {
            let mut answers = c
                .stream_app_states(tokio_stream::iter(batches))
                .await?
                .into_inner();
            let mut got = Vec::new();
            while let Some(a) = answers.message().await? {
                got.push(a.results.len());
            }
            Ok::<_, tonic::Status>(got)
        });
        grpc_ok("StreamAppStates", &r)?;
        if let Ok(got) = &r {
            prop_assert_eq!(got, &sizes, "one answer per batch, one result per report");
        }
        unchanged(
            "an app another worker reported",
            watched_before.clone(),
            watched(),
        )
    });

    p.run(
        "gRPC ReportAppStates",
        360,
        prop_oneof![Just("w1".to_string()), worker_id()]
            .prop_flat_map(move |w| (Just(w.clone()), vec(report(Some(w), apps.clone()), 0..6))),
        |(worker_id, reports)| {
            let mut c = client.clone();
            let r = rt.block_on(c.report_app_states(ReportAppStatesRequest { worker_id, reports }));
            grpc_ok("ReportAppStates", &r)?;
            unchanged(
                "an app another worker reported",
                watched_before.clone(),
                watched(),
            )
        },
    );
}

/// An id that percent-decodes to invalid UTF-8 gets `{"error": "..."}` like every other client
/// error (it got axum's plain-text 400 before).
#[test]
fn path_ids_that_are_not_utf8_get_a_json_error() {
    let c = Cluster::start("10s", &[]);
    let http = Client::new();
    let mut wrong = Vec::new();
    for (method, path) in [
        (Method::GET, "/api/v1/apps/%ff"),
        (Method::POST, "/api/v1/apps/%ff/kill"),
        (Method::POST, "/api/v1/apps/%ff/retry"),
        (Method::GET, "/api/v1/apps/%ff/logs"),
        (Method::GET, "/api/v1/schedules/%ff"),
        (Method::PATCH, "/api/v1/schedules/%ff"),
        (Method::POST, "/api/v1/workers/%ff/drain"),
    ] {
        let r = http
            .request(method.clone(), format!("{}{path}", c.api().base))
            .send()
            .expect("an answer");
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(400..500).contains(&status) || !body["error"].is_string() {
            wrong.push(format!("{method} {path}: {status} {text:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
