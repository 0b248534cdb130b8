//! Bad input gets a 4xx with `{"error": ...}` and changes nothing.

use aloha_e2e::{Api, Cluster};
use serde_json::{json, Value};

fn assert_error(r: &aloha_e2e::Resp, status: u16, contains: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    let msg = r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error body: {:?}", r.body));
    assert!(
        msg.contains(contains),
        "error {msg:?} should mention {contains:?}"
    );
}

fn app_count(api: &Api) -> usize {
    api.get("/api/v1/apps").body["apps"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn bad_submissions_are_refused_with_json_errors_and_change_nothing() {
    let c = Cluster::start("3s", &[]);
    let api = c.api();
    let ok = json!({"name": "x", "kind": "process", "spec": {"command": ["true"]}});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let r = api.post_raw("/api/v1/apps", "application/json", b"{\"name\": ".to_vec());
    assert_error(&r, 400, "");
    let r = api.post_raw("/api/v1/apps", "text/plain", b"{}".to_vec());
    assert_error(&r, 415, "");
    assert_error(
        &api.post("/api/v1/apps", &with("kind", json!("flonk"))),
        422,
        "unknown kind \"flonk\"",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("cores", json!(0))),
        400,
        "cores",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("cores", json!(-2))),
        400,
        "cores",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("memory_mb", json!(-1))),
        400,
        "memory_mb",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("max_retries", json!(-1))),
        400,
        "max_retries",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("name", json!(""))),
        400,
        "name",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("spec", json!("run me"))),
        400,
        "spec",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("cores", json!("two"))),
        422,
        "cores",
    );
    assert_error(
        &api.post("/api/v1/apps", &with("bogus", json!(1))),
        422,
        "bogus",
    );
    let big = "x".repeat(1024 * 1024 + 10);
    let r = api.post(
        "/api/v1/apps",
        &with("spec", json!({"command": ["echo", big]})),
    );
    assert_error(&r, 413, "");
    assert_eq!(app_count(api), 0, "nothing was accepted");
    // The master is still fine.
    assert_eq!(api.post("/api/v1/apps", &ok).status, 201);
    assert_eq!(app_count(api), 1);
}

#[test]
fn unknown_ids_routes_and_filters_are_4xx() {
    let c = Cluster::start("3s", &[]);
    let api = c.api();
    assert_error(
        &api.get("/api/v1/apps/app-nope"),
        404,
        "app app-nope not found",
    );
    assert_error(
        &api.post("/api/v1/apps/app-nope/kill", &json!({})),
        404,
        "not found",
    );
    assert_error(
        &api.get("/api/v1/apps?state=SLEEPING"),
        400,
        "unknown app state",
    );
    assert_error(&api.get("/api/v1/apps?limit=0"), 400, "limit");
    assert_error(&api.get("/api/v1/apps?limit=-3"), 400, "");
    assert_error(&api.get("/api/v1/nothing"), 404, "no such endpoint");
    let id = api.submit_cmd("k", &["true"], json!({"cores": 64}));
    let r = api.post_raw(
        &format!("/api/v1/apps/{id}/kill"),
        "application/json",
        b"{\"reasn\": 1}".to_vec(),
    );
    assert_error(&r, 400, "invalid kill body");
    let r = api.post_raw(
        &format!("/api/v1/apps/{id}/kill"),
        "text/plain",
        b"stop".to_vec(),
    );
    assert_error(&r, 400, "invalid kill body");
    assert_eq!(
        api.app(&id)["state"],
        "SUBMITTED",
        "a refused kill changes nothing"
    );
    let r = api.post_raw("/api/v1/workers", "application/json", b"{}".to_vec());
    assert_error(&r, 405, "method not allowed");
    let health = api.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
}
