//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document generated from the code (utoipa). Fails
//! when the router has a route (or a method on it) the document lacks, and checks real
//! responses — bodies and statuses — against the document.

use std::collections::BTreeSet;

use aloha_e2e::{workspace_root, Api, Cluster, Resp};
use serde_json::{json, Value};

/// `(path, methods)` of every `.route(...)` in the REST router's source.
fn routed() -> Vec<(String, BTreeSet<String>)> {
    let src = std::fs::read_to_string(workspace_root().join("crates/aloha-master/src/http.rs"))
        .expect("read http.rs");
    let mut out = Vec::new();
    for chunk in src.split(".route(").skip(1) {
        let Some(rest) = chunk.trim_start().strip_prefix('"') else {
            continue;
        };
        let path = rest.split('"').next().unwrap().to_string();
        // The route's handler expression runs to the next `.route(` (this chunk).
        let methods: BTreeSet<String> = ["get", "post", "patch", "delete", "put"]
            .iter()
            .filter(|m| chunk.contains(&format!("{m}(")) || chunk.contains(&format!(".{m}(")))
            .map(|m| m.to_string())
            .collect();
        out.push((path, methods));
    }
    assert!(out.len() > 15, "parsed too few routes: {out:?}");
    out
}

struct Doc(Value);

impl Doc {
    /// The documented response of `method path` for `status`; panics when it is not documented.
    fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let r = &op["responses"][status.to_string()];
        assert!(
            r.is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
        r
    }

    /// Validates `body` against the JSON schema the document gives `method path` for `status`.
    fn check(&self, method: &str, path: &str, r: &Resp) {
        let resp = self.response(method, path, r.status);
        let Some(schema) = resp["content"]["application/json"]["schema"].as_object() else {
            return; // not JSON (text, an event stream)
        };
        let mut root = Value::Object(schema.clone());
        root["components"] = self.0["components"].clone();
        let v = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{method} {path} {}: bad schema: {e}", r.status));
        let errors: Vec<String> = v
            .iter_errors(&r.body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {}: the body does not match the document:\n{}\n{:#}",
            r.status,
            errors.join("\n"),
            r.body
        );
    }
}

#[test]
fn every_route_is_documented_and_real_answers_match_the_document() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api: &Api = c.api();
    let raw = api.get("/api/v1/openapi.json");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body["openapi"], "3.1.0");
    let doc = Doc(raw.body);

    // Every route and method of the router is in the document.
    for (path, methods) in routed() {
        let item = &doc.0["paths"][&path];
        assert!(
            item.is_object(),
            "route {path} is missing from the OpenAPI document"
        );
        for m in methods {
            assert!(
                item[&m].is_object(),
                "{m} {path} is missing from the OpenAPI document"
            );
        }
    }

    // Real answers, success and error, against their documented schemas.
    let body = json!({"name": "doc", "kind": "process", "spec": {"command": ["sleep", "30"]},
                      "max_runtime": "1m", "labels": {"team": "docs"}});
    let r = api.post("/api/v1/apps", &body);
    doc.check("post", "/api/v1/apps", &r);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = api.post("/api/v1/apps?dry_run=true", &body);
    doc.check("post", "/api/v1/apps", &r);
    for bad in [
        json!({"name": "x", "kind": "process", "cores": 0}),
        json!({"name": "x", "kind": "nope"}),
    ] {
        let r = api.post("/api/v1/apps", &bad);
        doc.check("post", "/api/v1/apps", &r);
    }
    let batch = json!({"apps": [{"name": "b", "kind": "process", "spec": {"command": ["true"]}},
                                {"name": "x", "kind": "nope"}]});
    let r = api.post("/api/v1/apps/batch", &batch);
    assert_eq!(r.status, 200, "{:?}", r.body);
    doc.check("post", "/api/v1/apps/batch", &r);
    for bad in [json!({"apps": []}), json!({"apps": [{"name": 3}]})] {
        let r = api.post("/api/v1/apps/batch", &bad);
        doc.check("post", "/api/v1/apps/batch", &r);
    }
    doc.check("get", "/api/v1/apps", &api.get("/api/v1/apps"));
    doc.check("get", "/api/v1/apps", &api.get("/api/v1/apps?limit=0"));
    api.wait_state(&id, "RUNNING", std::time::Duration::from_secs(30));
    doc.check(
        "get",
        "/api/v1/apps/{id}",
        &api.get(&format!("/api/v1/apps/{id}")),
    );
    doc.check(
        "get",
        "/api/v1/apps/{id}",
        &api.get("/api/v1/apps/app-20200101000000-0009"),
    );
    doc.check(
        "post",
        "/api/v1/apps/{id}/retry",
        &api.post(&format!("/api/v1/apps/{id}/retry"), &json!({})),
    );
    doc.check(
        "post",
        "/api/v1/apps/{id}/kill",
        &api.post(
            &format!("/api/v1/apps/{id}/kill"),
            &json!({"reason": "docs"}),
        ),
    );
    api.wait_state(&id, "KILLED", std::time::Duration::from_secs(30));
    doc.check(
        "post",
        "/api/v1/apps/{id}/kill",
        &api.post(&format!("/api/v1/apps/{id}/kill"), &json!({})),
    );
    doc.check(
        "post",
        "/api/v1/apps/{id}/retry",
        &api.post(&format!("/api/v1/apps/{id}/retry"), &json!({})),
    );
    doc.check(
        "get",
        "/api/v1/apps/{id}/logs",
        &api.get("/api/v1/apps/app-20200101000000-0009/logs"),
    );

    doc.check("get", "/api/v1/workers", &api.get("/api/v1/workers"));
    doc.check(
        "post",
        "/api/v1/workers/{id}/drain",
        &api.post("/api/v1/workers/w1/drain", &json!({"deadline": "5m"})),
    );
    doc.check(
        "post",
        "/api/v1/workers/{id}/undrain",
        &api.post("/api/v1/workers/w1/undrain", &json!({})),
    );
    doc.check(
        "post",
        "/api/v1/workers/{id}/drain",
        &api.post("/api/v1/workers/nope/drain", &json!({})),
    );
    doc.check("get", "/api/v1/cluster", &api.get("/api/v1/cluster"));
    doc.check("get", "/healthz", &api.get("/healthz"));
    doc.check("get", "/readyz", &api.get("/readyz"));

    let sched = json!({"name": "doc", "app": {"kind": "process", "spec": {"command": ["true"]}},
                       "cron": "0 * * * *", "time_zone": "Europe/Berlin", "overlap": "queue"});
    let r = api.post("/api/v1/schedules", &sched);
    doc.check("post", "/api/v1/schedules", &r);
    let sid = r.body["id"].as_str().unwrap().to_string();
    doc.check(
        "post",
        "/api/v1/schedules",
        &api.post(
            "/api/v1/schedules",
            &json!({"name": "x", "app": {"kind": "process"}}),
        ),
    );
    doc.check("get", "/api/v1/schedules", &api.get("/api/v1/schedules"));
    doc.check(
        "get",
        "/api/v1/schedules/{id}",
        &api.get(&format!("/api/v1/schedules/{sid}")),
    );
    doc.check(
        "get",
        "/api/v1/schedules/{id}",
        &api.get("/api/v1/schedules/sched-nope"),
    );
    doc.check(
        "patch",
        "/api/v1/schedules/{id}",
        &api.patch(
            &format!("/api/v1/schedules/{sid}"),
            &json!({"jitter": "5s"}),
        ),
    );
    doc.check(
        "post",
        "/api/v1/schedules/{id}/pause",
        &api.post(&format!("/api/v1/schedules/{sid}/pause"), &json!({})),
    );
    doc.check(
        "post",
        "/api/v1/schedules/{id}/resume",
        &api.post(&format!("/api/v1/schedules/{sid}/resume"), &json!({})),
    );
    doc.check(
        "post",
        "/api/v1/schedules/{id}/trigger",
        &api.post(&format!("/api/v1/schedules/{sid}/trigger"), &json!({})),
    );
    doc.check("post", "/api/v1/schedules/{id}/backfill", &api.post(&format!("/api/v1/schedules/{sid}/backfill"),
        &json!({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z", "dry_run": true})));
    doc.check(
        "delete",
        "/api/v1/schedules/{id}",
        &api.delete(&format!("/api/v1/schedules/{sid}")),
    );
}
