//! Draining a worker on the real binaries: no new placements, running apps go on until the
//! deadline, then move to another worker within their retries; DRAINING, then DRAINED.

use std::time::Duration;

use aloha_e2e::{wait_for, Api, Cluster};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn worker(api: &Api, id: &str) -> Value {
    api.workers()
        .into_iter()
        .find(|w| w["id"] == id)
        .unwrap_or_else(|| panic!("no worker {id}"))
}

#[test]
fn a_drained_worker_finishes_its_apps_until_the_deadline_then_they_move() {
    let c = Cluster::start("3s", &[("w1", 2), ("w2", 2)]);
    let api = c.api();
    let long = api.submit_cmd("long", &["sleep", "60"], json!({"max_retries": 1}));
    let app = api.wait_state(&long, "RUNNING", T);
    assert_eq!(app["worker_id"], "w1");

    let r = api.post("/api/v1/workers/w1/drain", &json!({"deadline": "3s"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["state"], "DRAINING");
    assert!(r.body["drain_deadline"].is_string());
    // What runs there goes on until the deadline.
    std::thread::sleep(Duration::from_millis(1500));
    let still = api.app(&long);
    assert_eq!(
        (&still["state"], &still["worker_id"]),
        (&json!("RUNNING"), &json!("w1"))
    );
    // Nothing new goes there.
    let next = api.submit_cmd("next", &["sleep", "60"], json!({}));
    assert_eq!(api.wait_state(&next, "RUNNING", T)["worker_id"], "w2");
    // At the deadline it is stopped and moves, spending a retry.
    let moved = wait_for("the long app relaunched on w2", T, || {
        let a = api.app(&long);
        (a["state"] == "RUNNING" && a["worker_id"] == "w2").then_some(a)
    });
    assert_eq!(moved["attempt"], 2);
    assert_eq!(moved["retries"], 1);
    let history = Api::history(&moved);
    assert!(history.contains(&"RELAUNCHING".to_string()), "{history:?}");
    let w1 = wait_for("w1 drained", T, || {
        let w = worker(api, "w1");
        (w["state"] == "DRAINED").then_some(w)
    });
    assert_eq!(w1["apps"], json!([]));

    let r = api.post("/api/v1/workers/w1/undrain", &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["state"], "ALIVE");
    let again = api.submit_cmd("again", &["true"], json!({"cores": 2}));
    assert_eq!(api.wait_state(&again, "FINISHED", T)["worker_id"], "w1");

    let r = api.post("/api/v1/workers/nope/drain", &json!({}));
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = api.post("/api/v1/workers/w1/drain", &json!({"deadline": "soon"}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("deadline"));
}

#[test]
fn alohactl_drains_and_undrains_a_worker() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let (code, out, err) = c.ctl(&["workers", "drain", "w1", "--deadline", "10m"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("worker w1 is DRAINED"), "{out}");
    assert_eq!(worker(c.api(), "w1")["state"], "DRAINED");
    let (code, out, _) = c.ctl(&["workers"]);
    assert_eq!(code, 0);
    assert!(out.contains("DRAINED"), "{out}");
    let (code, out, err) = c.ctl(&["workers", "undrain", "w1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("worker w1 is ALIVE"), "{out}");
    let (code, _, err) = c.ctl(&["workers", "drain", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("worker nope not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = c.ctl(&["workers", "drain", "w1", "--deadline", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("deadline"), "{err}");
}
