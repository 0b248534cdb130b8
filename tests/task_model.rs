//! The task model on every app, on a real master and worker: max runtime, restart policies
//! with backoff, manual retry, dry runs, on-demand apps, `?wait=`, and the variables a run
//! gets.

use std::time::{Duration, Instant};

use aloha_e2e::{Api, Cluster};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn message(app: &Value) -> &str {
    app["message"].as_str().unwrap_or("")
}

#[test]
fn an_attempt_past_its_max_runtime_is_killed_and_fails() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let started = Instant::now();
    let id = api.submit_cmd("sleeper", &["sleep", "60"], json!({"max_runtime": "1s"}));
    let app = api.wait_state(&id, "FAILED", T);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "killed, not waited out"
    );
    assert!(message(&app).contains("max runtime 1s exceeded"), "{app:#}");
    assert_eq!(app["max_runtime"], "1s");
    assert_eq!(app["attempt"], 1);
    assert_eq!(
        Api::history(&app),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FAILED"]
    );
    assert_eq!(api.workers()[0]["cores_used"], 0, "its resources are back");
}

#[test]
fn on_failure_relaunches_a_failing_app_up_to_max_retries_then_it_fails() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "flaky",
        &["sh", "-c", "echo attempt $ALOHA_ATTEMPT; exit 1"],
        json!({"restart": "on_failure", "max_retries": 2, "retry_backoff": "200ms"}),
    );
    let app = api.wait_state(&id, "FAILED", T);
    assert_eq!(app["attempt"], 3, "{app:#}");
    assert_eq!(app["retries"], 2);
    assert!(message(&app).contains("all 2 retries used"), "{app:#}");
    let states = Api::history(&app);
    assert_eq!(
        states.iter().filter(|s| *s == "RELAUNCHING").count(),
        2,
        "{states:?}"
    );
    // Each attempt ran in its own directory, with its own number.
    for attempt in 1..=3 {
        let out = std::fs::read_to_string(c.app_dir("w1", &id, attempt).join("stdout")).unwrap();
        assert_eq!(out, format!("attempt {attempt}\n"));
    }
    // The second pause was twice the first.
    let relaunches: Vec<&Value> = app["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "RELAUNCHING")
        .collect();
    assert!(relaunches[0]["message"]
        .as_str()
        .unwrap()
        .contains("relaunching in 200ms"));
    assert!(relaunches[1]["message"]
        .as_str()
        .unwrap()
        .contains("relaunching in 400ms"));
}

#[test]
fn always_relaunches_a_finished_app_and_a_kill_is_final() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "persistent",
        &["true"],
        json!({"restart": "always", "max_retries": 2, "retry_backoff": "100ms"}),
    );
    let app = api.wait_state(&id, "FINISHED", T);
    assert_eq!(app["attempt"], 3, "{app:#}");
    let id = api.submit_cmd(
        "service",
        &["sleep", "60"],
        json!({"restart": "always", "max_retries": 5}),
    );
    api.wait_state(&id, "RUNNING", T);
    let r = api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let app = api.wait_state(&id, "KILLED", T);
    assert_eq!(app["attempt"], 1, "a user's kill is not relaunched");
}

#[test]
fn a_retry_is_a_new_app_with_the_same_template() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "once",
        &["sh", "-c", "exit 4"],
        json!({"labels": {"team": "a"}, "max_runtime": "1m"}),
    );
    api.wait_state(&id, "FAILED", T);
    let r = api.post(&format!("/api/v1/apps/{id}/retry"), &json!({}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let new_id = r.body["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert_eq!(r.body["retry_of"], id.as_str());
    assert_eq!(r.body["labels"], json!({"team": "a"}));
    assert_eq!(r.body["max_runtime"], "1m");
    assert_eq!(r.body["spec"], json!({"command": ["sh", "-c", "exit 4"]}));
    api.wait_state(&new_id, "FAILED", T);
    // Only an ended app can be retried; an unknown one is 404.
    let running = api.submit_cmd("long", &["sleep", "60"], json!({}));
    let r = api.post(&format!("/api/v1/apps/{running}/retry"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("only an ended app"));
    let r = api.post("/api/v1/apps/app-20200101000000-9999/retry", &json!({}));
    assert_eq!(r.status, 404, "{:?}", r.body);
}

#[test]
fn a_dry_run_validates_places_and_creates_nothing() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let body =
        json!({"name": "probe", "kind": "process", "spec": {"command": ["true"]}, "cores": 1});
    let r = api.post("/api/v1/apps?dry_run=true", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(r.body["placement"], json!({"worker_id": "w1"}));
    assert_eq!(r.body["state"], "SUBMITTED");
    let mut big = body.clone();
    big["cores"] = json!(8);
    let r = api.post("/api/v1/apps?dry_run=true", &big);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["placement"]["waiting"]
            .as_str()
            .unwrap()
            .contains("largest ALIVE worker"),
        "{:?}",
        r.body
    );
    let mut bad = body.clone();
    bad["cores"] = json!(0);
    let r = api.post("/api/v1/apps?dry_run=true", &bad);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("cores"));
    assert_eq!(
        api.get("/api/v1/apps").body["apps"],
        json!([]),
        "nothing created"
    );
    let r = api.post("/api/v1/apps?dry_run=maybe", &body);
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[test]
fn wait_answers_when_the_app_ended_or_the_wait_ran_out() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let body = |cmd: &[&str]| json!({"name": "w", "kind": "process", "spec": {"command": cmd}});
    let r = api.post("/api/v1/apps?wait=20s", &body(&["true"]));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["state"], "FINISHED", "{:?}", r.body);
    let started = Instant::now();
    let r = api.post("/api/v1/apps?wait=1s", &body(&["sleep", "30"]));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        ["LAUNCHING", "RUNNING"].contains(&r.body["state"].as_str().unwrap()),
        "{:?}",
        r.body
    );
    for bad in ["soon", "1h"] {
        let r = api.post(&format!("/api/v1/apps?wait={bad}"), &body(&["true"]));
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert!(r.body["error"].as_str().unwrap().contains("wait"));
    }
}

#[test]
fn an_on_demand_app_runs_but_is_not_kept_across_a_restart() {
    let mut c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api().clone();
    let r = api.post(
        "/api/v1/apps?wait=20s",
        &json!({"name": "click", "kind": "process", "spec": {"command": ["true"]}, "on_demand": true}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["state"], "FINISHED");
    assert_eq!(r.body["on_demand"], true);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.app(&id)["state"],
        "FINISHED",
        "kept in memory meanwhile"
    );
    let kept = api.submit_cmd("kept", &["true"], json!({}));
    api.wait_state(&kept, "FINISHED", T);
    let dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&dir);
    let r = api.get(&format!("/api/v1/apps/{id}"));
    assert_eq!(r.status, 404, "not recovered: {:?}", r.body);
    assert_eq!(api.app(&kept)["state"], "FINISHED", "stored apps are");
}

#[test]
fn a_process_knows_its_app_id_and_attempt() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "env",
        &["sh", "-c", "echo $ALOHA_APP_ID $ALOHA_ATTEMPT ${ALOHA_SCHEDULE_ID:-none}"],
        json!({"spec": {"command": ["sh", "-c", "echo $ALOHA_APP_ID $ALOHA_ATTEMPT ${ALOHA_SCHEDULE_ID:-none}"],
                        "env": {"ALOHA_APP_ID": "spoofed"}}}),
    );
    api.wait_state(&id, "FINISHED", T);
    let out = std::fs::read_to_string(c.app_dir("w1", &id, 1).join("stdout")).unwrap();
    assert_eq!(out, format!("{id} 1 none\n"));
}
