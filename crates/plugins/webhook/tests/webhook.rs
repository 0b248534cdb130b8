//! The webhook listener, loaded from its built `.so` through `aloha_plugin::host` as the master
//! loads it, POSTing to a real HTTP server on 127.0.0.1 that each test starts and scripts.
//!
//! Cargo builds the library for these tests (see the jsonl and process plugins' tests for why
//! `deps/` holds a fresh `.so`); `ALOHA_WEBHOOK_LISTENER` overrides the path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aloha_plugin::host::{ListenerInstance, ListenerPlugin};
use serde_json::{json, Value};

const SO_NAME: &str = "libaloha_listener_webhook.so";

/// Where the built plugin library is: beside the test executable in `deps/`, else one level up.
fn plugin_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ALOHA_WEBHOOK_LISTENER") {
        return PathBuf::from(path);
    }
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a directory");
    let profile = deps.parent().expect("deps/ is in the profile directory");
    [deps.join(SO_NAME), profile.join(SO_NAME)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{SO_NAME} is not in {} or {}; run `cargo build -p aloha-listener-webhook` \
                 first, or set ALOHA_WEBHOOK_LISTENER",
                deps.display(),
                profile.display()
            )
        })
}

fn plugin() -> &'static ListenerPlugin {
    static PLUGIN: OnceLock<ListenerPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        ListenerPlugin::load(&plugin_path())
            .unwrap_or_else(|e| panic!("cannot load the webhook listener: {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server: one thread per connection, one request per connection (it answers
// `connection: close`), answers taken in order from a script, every request recorded.

/// One scripted answer: wait `delay`, then answer `status` with `body`.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: &'static str,
    delay: Duration,
}

fn answer(status: u16) -> Answer {
    Answer {
        status,
        body: "",
        delay: Duration::ZERO,
    }
}

/// A request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// Lower-cased names; a repeated header keeps its last value (the tests check there is one).
    headers: BTreeMap<String, String>,
    /// How many times each header name occurred.
    header_counts: BTreeMap<String, usize>,
    body: Vec<u8>,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server on 127.0.0.1 with a free port. Answers come from `script` in order; once
    /// it is used up, the last one is repeated.
    fn start(script: Vec<Answer>) -> Server {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                let mut served = 0;
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let answer = script[served.min(script.len() - 1)].clone();
                    served += 1;
                    let requests = requests.clone();
                    handlers.push(std::thread::spawn(move || {
                        serve(stream, &answer, &requests);
                    }));
                }
                for h in handlers {
                    let _ = h.join();
                }
            })
        };
        Server {
            addr,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads one request from `stream`, records it, and answers.
fn serve(stream: TcpStream, answer: &Answer, requests: &Mutex<Vec<Request>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // The wake-up connection of `Drop`, or a client that gave up.
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    let mut header_counts = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header line has a colon");
        let name = name.trim().to_ascii_lowercase();
        *header_counts.entry(name.clone()).or_insert(0) += 1;
        headers.insert(name, value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().expect("a numeric content-length"))
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    requests.lock().unwrap().push(Request {
        method,
        path,
        headers,
        header_counts,
        body,
    });
    std::thread::sleep(answer.delay);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {} Scripted\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        answer.body
    );
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------------------------

fn listener(config: Value) -> ListenerInstance {
    plugin()
        .create(&config)
        .unwrap_or_else(|e| panic!("create: {e}"))
}

/// A config pointing at `server` with fast retries, plus `extra`.
fn config(server: &Server, extra: Value) -> Value {
    let mut c = json!({
        "url": server.url(),
        "timeout_ms": 2000,
        "max_attempts": 5,
        "initial_backoff_ms": 20,
        "max_backoff_ms": 200,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn event(seq: u64, ty: &str) -> Value {
    json!({
        "seq": seq, "at": "2025-01-01T00:00:00Z", "type": ty,
        "app_id": "app-20250101000000-0001", "name": "n", "kind": "process",
        "old_state": "RUNNING", "new_state": "FINISHED", "attempt": 1,
        "worker_id": "w1", "message": null
    })
}

fn deliver(l: &mut ListenerInstance, event: &Value) -> Result<(), String> {
    l.deliver(&event.to_string(), event["type"].as_str().unwrap())
}

fn body_json(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("the body is JSON")
}

#[test]
fn the_library_is_a_listener_named_webhook() {
    assert_eq!(plugin().name(), "webhook");
}

#[test]
fn each_event_is_posted_once_as_json_with_its_headers() {
    let server = Server::start(vec![answer(200)]);
    let mut l = listener(config(
        &server,
        json!({"headers": {"Authorization": "Bearer s3cret"}}),
    ));
    let sent = [
        event(1, "app_state_changed"),
        event(2, "app_relaunched"),
        event(3, "worker_lost"),
    ];
    for e in &sent {
        deliver(&mut l, e).unwrap();
    }
    let got = server.requests();
    assert_eq!(got.len(), 3, "{got:?}");
    for (r, e) in got.iter().zip(&sent) {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
        assert_eq!(body_json(r), *e);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-aloha-event-seq"], e["seq"].to_string());
        assert_eq!(r.headers["x-aloha-event-type"], e["type"].as_str().unwrap());
        assert_eq!(r.headers["authorization"], "Bearer s3cret");
        for name in [
            "content-type",
            "x-aloha-event-seq",
            "x-aloha-event-type",
            "authorization",
        ] {
            assert_eq!(r.header_counts[name], 1, "{name} sent once");
        }
    }
    // Any 2xx delivers.
    drop(server);
    let server = Server::start(vec![answer(204)]);
    let mut l = listener(config(&server, json!({})));
    deliver(&mut l, &event(4, "leader_changed")).unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_500_is_retried_with_backoff_until_the_receiver_answers_200() {
    let server = Server::start(vec![answer(500), answer(500), answer(200)]);
    let mut l = listener(config(
        &server,
        json!({"initial_backoff_ms": 100, "max_backoff_ms": 1000}),
    ));
    let e = event(42, "app_state_changed");
    let started = Instant::now();
    deliver(&mut l, &e).unwrap();
    let took = started.elapsed();

    let got = server.requests();
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        assert_eq!(r.body, got[0].body, "every attempt sends the same body");
        assert_eq!(body_json(r), e);
        assert_eq!(r.headers["x-aloha-event-seq"], "42");
        assert_eq!(r.headers["x-aloha-event-type"], "app_state_changed");
    }
    // Waited 100 ms, then 200 ms (doubled) between the three attempts.
    assert!(took >= Duration::from_millis(300), "took {took:?}");
}

#[test]
fn delivery_gives_up_after_max_attempts() {
    let server = Server::start(vec![Answer {
        status: 503,
        body: "overloaded",
        delay: Duration::ZERO,
    }]);
    let mut l = listener(config(&server, json!({"max_attempts": 3})));
    let err = deliver(&mut l, &event(7, "worker_joined")).unwrap_err();
    assert_eq!(
        err,
        format!(
            "POST event 7 to {} failed after 3 attempts: answered 503: overloaded",
            server.url()
        )
    );
    assert_eq!(server.requests().len(), 3);

    // 429 is retried the same way; one attempt means no retry at all.
    let server = Server::start(vec![answer(429)]);
    let mut l = listener(config(&server, json!({"max_attempts": 1})));
    let err = deliver(&mut l, &event(8, "worker_joined")).unwrap_err();
    assert!(
        err.ends_with("failed after 1 attempt: answered 429"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_400_is_not_retried() {
    let server = Server::start(vec![
        Answer {
            status: 400,
            body: "bad event",
            delay: Duration::ZERO,
        },
        answer(200),
    ]);
    let mut l = listener(config(&server, json!({})));
    let err = deliver(&mut l, &event(9, "app_relaunched")).unwrap_err();
    assert_eq!(
        err,
        format!(
            "POST event 9 to {}: answered 400: bad event (not retried)",
            server.url()
        )
    );
    assert_eq!(server.requests().len(), 1);

    // Nor is a redirect followed.
    let server = Server::start(vec![answer(302), answer(200)]);
    let mut l = listener(config(&server, json!({})));
    let err = deliver(&mut l, &event(10, "app_relaunched")).unwrap_err();
    assert!(err.ends_with("answered 302 (not retried)"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_timed_out_attempt_is_retried() {
    // The first answer comes after the client has given up on it.
    let server = Server::start(vec![
        Answer {
            status: 200,
            body: "",
            delay: Duration::from_millis(1500),
        },
        answer(200),
    ]);
    let mut l = listener(config(&server, json!({"timeout_ms": 300})));
    deliver(&mut l, &event(11, "app_state_changed")).unwrap();
    let got = server.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, got[1].body);
}

#[test]
fn an_unreachable_receiver_is_retried_then_reported() {
    // A port that was free a moment ago: connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hook");
    let mut l = listener(json!({
        "url": url, "max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10
    }));
    let err = deliver(&mut l, &event(12, "app_state_changed")).unwrap_err();
    assert!(
        err.starts_with(&format!("POST event 12 to {url} failed after 2 attempts: ")),
        "{err}"
    );
}

#[test]
fn bad_configuration_is_refused_at_create() {
    for (config, expected) in [
        (json!({}), "missing field `url`"),
        (
            json!({"url": "https://example.invalid/"}),
            "https is not supported",
        ),
        (
            json!({"url": "http://127.0.0.1:1/", "max_attempts": 0}),
            "`max_attempts` must be at least 1",
        ),
    ] {
        let err = plugin().create(&config).unwrap_err();
        assert!(
            err.starts_with("invalid webhook listener configuration: ") && err.contains(expected),
            "{config}: {err}"
        );
    }
}
