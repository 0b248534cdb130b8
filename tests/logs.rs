//! `GET /api/v1/apps/{id}/logs` on a real master and worker: the tail, ranges, attempts,
//! following a running app (plain and SSE), the follower limit and the errors.

use std::io::Read;
use std::time::{Duration, Instant};

use aloha_e2e::{wait_for, Cluster};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const KIB64: usize = 64 * 1024;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn get(c: &Cluster, path_and_query: &str) -> Response {
    client()
        .get(format!("{}{path_and_query}", c.api().base))
        .send()
        .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"))
}

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers()))
        .to_string()
}

fn header_u64(r: &Response, name: &str) -> u64 {
    header(r, name).parse().expect("a number")
}

/// Status and the `error` of a JSON error body.
fn error_of(r: Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

fn logs(id: &str, query: &str) -> String {
    format!("/api/v1/apps/{id}/logs{query}")
}

#[test]
fn both_streams_are_served_with_the_tail_by_default_and_page_by_offset() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    // 2,000 lines of 49 bytes: 98,000 bytes, more than the 64 KiB tail.
    let script = "i=0; while [ $i -lt 2000 ]; do \
                  printf 'line %06d abcdefghijklmnopqrstuvwxyz0123456789\\n' $i; i=$((i+1)); \
                  done; echo 'to stderr' >&2";
    let id = api.submit_cmd("chatty", &["sh", "-c", script], json!({}));
    api.wait_state(&id, "FINISHED", T);
    let expected: String = (0..2000)
        .map(|i| format!("line {i:06} abcdefghijklmnopqrstuvwxyz0123456789\n"))
        .collect();
    let size = expected.len();
    assert!(size > KIB64);

    // The default: stdout, the latest attempt, the last 64 KiB.
    let r = get(&c, &logs(&id, ""));
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain"));
    assert_eq!(header_u64(&r, "x-log-size"), size as u64);
    assert_eq!(header_u64(&r, "x-log-offset"), (size - KIB64) as u64);
    assert_eq!(header_u64(&r, "x-log-next-offset"), size as u64);
    assert_eq!(header(&r, "x-log-attempt"), "1");
    assert_eq!(header(&r, "x-log-worker"), "w1");
    assert_eq!(header(&r, "x-log-ended"), "true");
    let body = r.bytes().unwrap();
    assert_eq!(body.len(), KIB64);
    assert_eq!(&body[..], &expected.as_bytes()[size - KIB64..]);

    let r = get(&c, &logs(&id, "?stream=stderr"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "to stderr\n");

    // Paging from the start by the next offset.
    let mut all = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    while offset < size as u64 {
        let r = get(&c, &logs(&id, &format!("?offset={offset}&limit=30000")));
        assert_eq!(r.status(), 200);
        assert_eq!(header_u64(&r, "x-log-offset"), offset);
        let next = header_u64(&r, "x-log-next-offset");
        let body = r.bytes().unwrap();
        assert_eq!(next - offset, body.len() as u64);
        assert!(body.len() <= 30000);
        all.extend_from_slice(&body);
        offset = next;
        pages += 1;
    }
    assert_eq!(pages, 4);
    assert_eq!(all, expected.as_bytes());
    // A limit without an offset is the tail that long.
    let r = get(&c, &logs(&id, "?limit=49"));
    assert_eq!(
        r.text().unwrap(),
        "line 001999 abcdefghijklmnopqrstuvwxyz0123456789\n"
    );
    // At the end: nothing more.
    let r = get(&c, &logs(&id, &format!("?offset={size}")));
    assert_eq!(r.status(), 200);
    assert_eq!(header_u64(&r, "x-log-next-offset"), size as u64);
    assert!(r.bytes().unwrap().is_empty());

    // Errors.
    let (status, e) = error_of(get(&c, &logs("app-20000101000000-9999", "")));
    assert_eq!(status, 404, "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, "?stream=stdin")));
    assert_eq!((status, e.contains("stdout or stderr")), (400, true), "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, "?limit=1048577")));
    assert_eq!((status, e.contains("at most")), (400, true), "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, "?limit=abc")));
    assert_eq!(status, 400, "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, &format!("?offset={}", size + 1))));
    assert_eq!((status, e.contains("past the end")), (400, true), "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, "?attempt=2")));
    assert_eq!((status, e.contains("no attempt 2")), (404, true), "{e}");
    let (status, e) = error_of(get(&c, &logs(&id, "?bogus=1")));
    assert_eq!(status, 400, "{e}");
}

#[test]
fn each_attempt_of_a_relaunched_app_has_its_own_log() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "second-time-lucky",
        &[
            "sh",
            "-c",
            "echo attempt $ALOHA_ATTEMPT; echo oops $ALOHA_ATTEMPT >&2; \
             [ \"$ALOHA_ATTEMPT\" -ge 2 ]",
        ],
        json!({"restart": "on_failure", "max_retries": 1, "retry_backoff": "100ms"}),
    );
    wait_for("attempt 2 FINISHED", T, || {
        let a = api.app(&id);
        (a["attempt"] == 2 && a["state"] == "FINISHED").then_some(())
    });
    for (query, text, attempt) in [
        ("", "attempt 2\n", "2"),
        ("?attempt=2", "attempt 2\n", "2"),
        ("?attempt=1", "attempt 1\n", "1"),
        ("?attempt=1&stream=stderr", "oops 1\n", "1"),
    ] {
        let r = get(&c, &logs(&id, query));
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(header(&r, "x-log-attempt"), attempt, "{query}");
        assert_eq!(r.text().unwrap(), text, "{query}");
    }
}

#[test]
fn a_follower_gets_lines_as_they_come_and_the_stream_ends_with_the_app() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "ticker",
        &[
            "sh",
            "-c",
            "for i in 1 2 3; do echo line $i; sleep 0.5; done",
        ],
        json!({}),
    );
    api.wait_state(&id, "RUNNING", T);
    let started = Instant::now();
    let mut r = get(&c, &logs(&id, "?follow=true"));
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain"));
    assert_eq!(header(&r, "x-log-attempt"), "1");
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).expect("a clean end of the stream");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        arrivals.push((
            started.elapsed(),
            String::from_utf8_lossy(&got).into_owned(),
        ));
    }
    assert_eq!(String::from_utf8(got).unwrap(), "line 1\nline 2\nline 3\n");
    // Line 1 came well before the app ended: the lines were streamed, not sent at the end.
    let (first_at, first) = &arrivals[0];
    assert!(first.starts_with("line 1"), "{arrivals:?}");
    let (last_at, _) = arrivals.last().unwrap();
    assert!(
        *last_at >= *first_at + Duration::from_millis(500),
        "{arrivals:?}"
    );
    // The stream ended because the app did.
    let app = api.wait_state(&id, "FINISHED", Duration::from_secs(5));
    assert_eq!(app["exit_code"], 0);

    // The same log as Server-Sent Events, from the start of the file.
    let r = client()
        .get(format!(
            "{}{}",
            c.api().base,
            logs(&id, "?follow=true&offset=0")
        ))
        .header("accept", "text/event-stream")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let text = r.text().unwrap();
    let mut log = String::new();
    for data in text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
    {
        log.push_str(data["text"].as_str().unwrap_or(""));
    }
    assert_eq!(log, "line 1\nline 2\nline 3\n", "{text}");
    assert!(text.contains("event: end"), "{text}");
}

#[test]
fn followers_per_worker_are_limited() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd("quiet", &["sleep", "600"], json!({}));
    api.wait_state(&id, "RUNNING", T);
    let held: Vec<Response> = (0..16)
        .map(|i| {
            let r = get(&c, &logs(&id, "?follow=true"));
            assert_eq!(r.status(), 200, "follower {i}");
            r
        })
        .collect();
    let (status, e) = error_of(get(&c, &logs(&id, "?follow=true")));
    assert_eq!(status, 429, "{e}");
    assert!(
        e.contains("worker w1 already serves 16 log followers"),
        "{e}"
    );
    // Reads are not followers.
    assert_eq!(get(&c, &logs(&id, "")).status(), 200);
    // Followers that hang up free their places, plain or SSE, though the log is quiet.
    drop(held);
    let sse = |c: &Cluster| {
        client()
            .get(format!("{}{}", c.api().base, logs(&id, "?follow=true")))
            .header("accept", "text/event-stream")
            .send()
            .unwrap()
    };
    let held: Vec<Response> = (0..16)
        .map(|_| {
            wait_for("a follower's place", T, || {
                let r = sse(&c);
                (r.status() == 200).then_some(r)
            })
        })
        .collect();
    assert_eq!(get(&c, &logs(&id, "?follow=true")).status(), 429);
    drop(held);
    wait_for("a follower's place after SSE clients left", T, || {
        (get(&c, &logs(&id, "?follow=true")).status() == 200).then_some(())
    });
}

#[test]
fn logs_of_an_app_not_yet_launched_or_on_a_dead_worker_are_refused() {
    let mut c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api().clone();
    // Too big for the only worker: it waits, never launched.
    let waiting = api.submit_cmd("too-big", &["true"], json!({"cores": 64}));
    let (status, e) = error_of(get(&c, &logs(&waiting, "")));
    assert_eq!(status, 404, "{e}");
    assert_eq!(e, format!("app {waiting} has not been launched yet"));

    let id = api.submit_cmd("hello", &["echo", "hello"], json!({}));
    api.wait_state(&id, "FINISHED", T);
    assert_eq!(get(&c, &logs(&id, "")).text().unwrap(), "hello\n");
    c.workers[0].kill9();
    // Still ALIVE to the master for a moment: unreachable. Then DEAD.
    let (status, e) = error_of(get(&c, &logs(&id, "")));
    assert_eq!(status, 503, "{e}");
    assert!(e.contains("w1"), "{e}");
    wait_worker_state(&api, "w1", "DEAD");
    let (status, e) = error_of(get(&c, &logs(&id, "")));
    assert_eq!(status, 503, "{e}");
    assert!(e.contains("worker w1, which is DEAD"), "{e}");
}

fn wait_worker_state(api: &aloha_e2e::Api, id: &str, state: &str) {
    wait_for(&format!("worker {id} {state}"), T, || {
        api.workers()
            .iter()
            .any(|w| w["id"] == id && w["state"] == state)
            .then_some(())
    });
}

#[test]
fn alohactl_logs_prints_and_follows_an_apps_output() {
    let c = aloha_e2e::Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "talk",
        &[
            "sh",
            "-c",
            "echo out-1; echo err-1 >&2; sleep 1; echo out-2",
        ],
        serde_json::json!({}),
    );
    api.wait_state(&id, "RUNNING", std::time::Duration::from_secs(30));
    let (code, out, err) = c.ctl(&["logs", "-f", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "out-1\nout-2\n", "followed to the end");
    let (code, out, err) = c.ctl(&["logs", "--stderr", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "err-1\n");
    let (code, out, _) = c.ctl(&["logs", "--attempt", "1", &id]);
    assert_eq!((code, out.as_str()), (0, "out-1\nout-2\n"));
    let (code, _, err) = c.ctl(&["logs", "app-20200101000000-0001"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not found") || err.contains("expired"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
