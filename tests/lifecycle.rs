//! An app's life on a real master and worker: finish, fail, kill, wait for resources.

use std::time::Duration;

use aloha_e2e::{app_pid, process_exists, Api, Cluster};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn an_app_runs_to_finished_through_every_state_and_leaves_its_output() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let id = api.submit_cmd(
        "hello",
        &["sh", "-c", "echo hello from $GREETING; echo oops >&2"],
        json!({"spec": {"command": ["sh", "-c", "echo hello from $GREETING; echo oops >&2"],
                        "env": {"GREETING": "aloha"}}}),
    );
    let app = api.wait_state(&id, "FINISHED", T);
    assert_eq!(
        Api::history(&app),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]
    );
    assert_eq!(app["exit_code"], 0);
    assert_eq!(app["attempt"], 1);
    assert_eq!(app["worker_id"], "w1");
    assert!(app["started_at"].is_string() && app["finished_at"].is_string());
    let dir = c.app_dir("w1", &id, 1);
    let out = std::fs::read_to_string(dir.join("stdout")).unwrap();
    assert_eq!(out, "hello from aloha\n");
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert_eq!(err, "oops\n");
    // Resources are released once it ended.
    let w = &api.workers()[0];
    assert_eq!(w["cores_used"], 0);
    assert_eq!(w["apps"], json!([]));
}

#[test]
fn a_non_zero_exit_fails_with_its_code() {
    let c = Cluster::start("3s", &[("w1", 1)]);
    let api = c.api();
    let id = api.submit_cmd("fails", &["sh", "-c", "exit 3"], json!({}));
    let app = api.wait_state(&id, "FAILED", T);
    assert_eq!(app["exit_code"], 3);
    assert!(
        app["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{app}"
    );
    assert_eq!(app["attempt"], 1, "an app failure is not relaunched");
    // A command that cannot start at all is an ERROR, with the reason.
    let id = api.submit_cmd("missing", &["/nonexistent/program"], json!({}));
    let app = api.wait_state(&id, "ERROR", T);
    assert!(
        app["message"].as_str().unwrap().contains("start failed"),
        "{app}"
    );
}

#[test]
fn killing_a_running_app_stops_its_whole_process_group() {
    let c = Cluster::start("3s", &[("w1", 1)]);
    let api = c.api();
    // A shell with a background child: both must go.
    let id = api.submit_cmd(
        "sleeper",
        &["sh", "-c", "sleep 600 & sleep 600; wait"],
        json!({}),
    );
    api.wait_state(&id, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    assert!(process_exists(-pgid));
    let r = api.post(
        &format!("/api/v1/apps/{id}/kill"),
        &json!({"reason": "test says stop"}),
    );
    assert_eq!(r.status, 202, "{:?}", r.body);
    let app = api.wait_state(&id, "KILLED", T);
    assert!(
        app["message"].as_str().unwrap().contains("test says stop"),
        "{app}"
    );
    aloha_e2e::wait_for("the app's process group to vanish", T, || {
        (!process_exists(-pgid)).then_some(())
    });
    // Killing it again is a conflict; the worker has its core back.
    let r = api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("already ended KILLED"));
    assert_eq!(api.workers()[0]["cores_used"], 0);
}

#[test]
fn a_waiting_app_is_killed_at_once() {
    let c = Cluster::start("3s", &[("w1", 1)]);
    let api = c.api();
    let id = api.submit_cmd("too big", &["true"], json!({"cores": 64}));
    let r = api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
    assert_eq!(r.status, 202);
    let app = api.app(&id);
    assert_eq!(app["state"], "KILLED");
    assert_eq!(Api::history(&app), ["SUBMITTED", "KILLED"]);
}

#[test]
fn fifo_by_resources_without_head_of_line_blocking() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let long =
        |name: &str, cores: u32| api.submit_cmd(name, &["sleep", "600"], json!({"cores": cores}));
    let a = long("a", 1);
    api.wait_state(&a, "RUNNING", T);
    // b needs 2 cores: cannot run while a holds one. c needs 1 and must not wait behind b.
    let b = long("b", 2);
    let c1 = long("c", 1);
    api.wait_state(&c1, "RUNNING", T);
    let bapp = api.app(&b);
    assert_eq!(bapp["state"], "SUBMITTED");
    assert!(
        bapp["message"]
            .as_str()
            .unwrap()
            .contains("waiting for resources"),
        "{bapp}"
    );
    // Larger than any worker: says so.
    let huge = long("huge", 3);
    aloha_e2e::wait_for("the huge app's message", T, || {
        let m = api.app(&huge)["message"].as_str()?.to_string();
        m.contains("largest ALIVE worker has 2 cores").then_some(())
    });
    // Free both cores: b gets them; the huge app still cannot run.
    for id in [&a, &c1] {
        api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
        api.wait_state(id, "KILLED", T);
    }
    api.wait_state(&b, "RUNNING", T);
    assert_eq!(api.app(&huge)["state"], "SUBMITTED");
    // Now full again: a newer 1-core app waits behind nothing but resources.
    let d = long("d", 1);
    aloha_e2e::wait_for("d's waiting message", T, || {
        let m = api.app(&d)["message"].as_str()?.to_string();
        m.contains("waiting for resources").then_some(())
    });
}

/// `--placement binpack` fills one worker before the next; the default spreads.
#[test]
fn binpack_fills_a_worker_before_the_next_and_spread_alternates() {
    for (flags, expected) in [
        (vec!["--placement", "binpack"], ["w1", "w1", "w1", "w2"]),
        (vec![], ["w1", "w2", "w1", "w2"]),
    ] {
        let c = Cluster::start_with("3s", &[("w1", 3), ("w2", 3)], |_| {
            flags.iter().map(|f| f.to_string()).collect()
        });
        let api = c.api();
        let (mut ids, mut on) = (Vec::new(), Vec::new());
        for i in 0..4 {
            // One at a time, so each placement sees the one before it.
            let id = api.submit_cmd(&format!("a{i}"), &["sleep", "600"], json!({"cores": 1}));
            let app = api.wait_state(&id, "RUNNING", T);
            on.push(app["worker_id"].as_str().unwrap().to_string());
            ids.push(id);
        }
        assert_eq!(on, expected, "with {flags:?}");
        for id in &ids {
            api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
            api.wait_state(id, "KILLED", T);
        }
    }
}

/// A real worker sends its reports over one `StreamAppStates` stream, not one call per batch.
#[test]
fn a_worker_reports_over_its_stream() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let ids: Vec<String> = (0..3)
        .map(|i| api.submit_cmd(&format!("s{i}"), &["true"], json!({})))
        .collect();
    for id in &ids {
        api.wait_state(id, "FINISHED", T);
    }
    let text = metrics(api);
    let calls = |method: &str| rpc_count(&text, method);
    // Each app's RUNNING and FINISHED went in one batch or two.
    let batches = calls("stream_app_states");
    assert!((1..=6).contains(&batches), "{batches} batches:\n{text}");
    assert_eq!(calls("report_app_states"), 0, "{text}");
    assert_eq!(calls("report_app_state"), 0, "{text}");
}

fn metrics(api: &Api) -> String {
    reqwest::blocking::get(format!("{}/metrics", api.base))
        .and_then(|r| r.text())
        .expect("GET /metrics")
}

/// How many calls (or stream messages) of gRPC `method` the master served, by its metrics.
fn rpc_count(metrics: &str, method: &str) -> u64 {
    let label = format!("aloha_rpc_server_duration_seconds_count{{method=\"{method}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&label))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[test]
fn a_worker_heartbeats_over_its_stream() {
    let c = Cluster::start("2s", &[("w1", 1)]);
    let api = c.api();
    // A beat every 500 ms (a quarter of the worker timeout): wait for six, longer than the
    // timeout, so the worker stayed ALIVE on streamed beats alone.
    let deadline = std::time::Instant::now() + T;
    let text = loop {
        let text = metrics(api);
        if rpc_count(&text, "heartbeats") >= 6 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeats on the stream:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rpc_count(&text, "heartbeat"), 0, "{text}");
    let w = &api.get("/api/v1/workers").body["workers"][0];
    assert_eq!(w["state"], "ALIVE", "{w}");
}

#[test]
fn a_batch_submission_answers_each_app_and_runs_the_accepted_ones() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api();
    let ok = |name: &str| json!({"name": name, "kind": "process", "spec": {"command": ["true"]}});
    let batch = json!({"apps": [ok("b0"), {"name": "bad", "kind": "nope"}, ok("b2"),
                                {"name": "zero", "kind": "process", "cores": 0}]});
    let headers = [("Idempotency-Key", "batch-1")];
    let r = api
        .try_post_with("/api/v1/apps/batch", &batch, &headers)
        .expect("POST batch");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().expect("results").clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 201, 400], "{results:?}");
    assert!(
        results[1]["error"].as_str().unwrap().contains("nope"),
        "{results:?}"
    );
    assert!(results[1].get("app").is_none());
    let ids: Vec<String> = [0, 2]
        .iter()
        .map(|&i| results[i]["app"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(results[0]["app"]["name"], "b0");
    for id in &ids {
        api.wait_state(id, "FINISHED", T);
    }
    // The same batch again with the same key: the first apps, with 200, and no new app.
    let again = api
        .try_post_with("/api/v1/apps/batch", &batch, &headers)
        .expect("POST batch");
    let results = again.body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 200, "{results:?}");
    assert_eq!(results[0]["app"]["id"], ids[0].as_str());
    assert_eq!(results[2]["app"]["id"], ids[1].as_str());
    assert_eq!(
        api.get("/api/v1/apps").body["apps"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Whole-request errors: nothing submitted.
    let empty = api.post("/api/v1/apps/batch", &json!({"apps": []}));
    assert_eq!(empty.status, 400, "{:?}", empty.body);
    assert!(empty.body["error"].as_str().unwrap().contains("1 to 1000"));
    let many: Vec<_> = (0..1001).map(|i| ok(&format!("m{i}"))).collect();
    let too_many = api.post("/api/v1/apps/batch", &json!({ "apps": many }));
    assert_eq!(too_many.status, 400, "{:?}", too_many.body);
    let dry = api.post(
        "/api/v1/apps/batch?dry_run=true",
        &json!({"apps": [ok("d0")]}),
    );
    assert_eq!(dry.status, 400, "{:?}", dry.body);
    let big = "x".repeat(2 << 20);
    let huge = api.post("/api/v1/apps/batch", &json!({"apps": [ok(&big)]}));
    assert_eq!(huge.status, 413, "{:?}", huge.body);
    assert!(huge.body["error"].is_string(), "{:?}", huge.body);
    let shape = api.post(
        "/api/v1/apps/batch",
        &json!({"apps": [ok("s0"), {"name": 3}]}),
    );
    assert_eq!(shape.status, 422, "{:?}", shape.body);
    assert!(
        shape.body["error"].as_str().unwrap().contains("apps[1]"),
        "{:?}",
        shape.body
    );
    assert_eq!(
        api.get("/api/v1/apps").body["apps"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn listing_filters_by_state_and_limits_newest_first() {
    let c = Cluster::start("3s", &[("w1", 4)]);
    let api = c.api();
    let ids: Vec<String> = (0..3)
        .map(|i| api.submit_cmd(&format!("t{i}"), &["true"], json!({})))
        .collect();
    for id in &ids {
        api.wait_state(id, "FINISHED", T);
    }
    let waiting = api.submit_cmd("big", &["true"], json!({"cores": 99}));
    let all = api.get("/api/v1/apps").body["apps"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["id"], waiting.as_str(), "newest first");
    let fin = api.get("/api/v1/apps?state=FINISHED&limit=2").body["apps"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(fin.len(), 2);
    assert_eq!(fin[0]["id"], ids[2].as_str());
    assert!(fin.iter().all(|a| a["state"] == "FINISHED"));
    let cluster = api.get("/api/v1/cluster").body;
    assert_eq!(cluster["role"], "ALIVE");
    assert!(cluster["epoch"].as_u64().unwrap() >= 1);
    assert_eq!(cluster["leader"], api.base.as_str());
    let metrics = c.master.api.get("/metrics");
    assert_eq!(metrics.status, 200);
}

#[test]
fn worker_sigterm_stops_and_reports_its_apps() {
    let mut c = Cluster::start("3s", &[("w1", 1)]);
    let api = c.api().clone();
    let id = api.submit_cmd("victim", &["sleep", "600"], json!({}));
    api.wait_state(&id, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    let status = c.workers[0].terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker exits cleanly on SIGTERM"
    );
    // No retries: the worker's shutdown ends the app, reported before the worker exited.
    let app = api.app(&id);
    assert_eq!(app["state"], "FAILED", "{app}");
    assert!(
        app["message"].as_str().unwrap().contains("shut down"),
        "{app}"
    );
    assert!(!process_exists(-pgid));
}
