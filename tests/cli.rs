//! `alohactl` against a real master and worker.

use std::time::Duration;

use aloha_e2e::Cluster;
use serde_json::Value;

#[test]
fn submit_wait_list_status_kill_workers_cluster() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let (code, out, err) = c.ctl(&[
        "submit", "--name", "hi", "--wait", "--", "sh", "-c", "echo hi",
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("FINISHED"), "{out}");

    let (code, _, err) = c.ctl(&[
        "submit", "--name", "bad", "--wait", "--", "sh", "-c", "exit 4",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("FAILED"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let (code, out, _) = c.ctl(&[
        "--output", "json", "submit", "--name", "long", "--", "sleep", "600",
    ]);
    assert_eq!(code, 0);
    let app: Value = serde_json::from_str(&out).expect("json output");
    let id = app["id"].as_str().unwrap().to_string();
    c.api().wait_state(&id, "RUNNING", Duration::from_secs(30));

    let (code, out, _) = c.ctl(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("RUNNING"), "{out}");
    let (code, out, _) = c.ctl(&["--output", "json", "list", "--state", "FINISHED"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["apps"].as_array().unwrap().len(), 1);

    let (code, out, _) = c.ctl(&["status", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("LAUNCHING") && out.contains("RUNNING"),
        "{out}"
    );

    let (code, out, _) = c.ctl(&["workers"]);
    assert_eq!(code, 0);
    assert!(out.contains("w1") && out.contains("ALIVE"), "{out}");
    let (code, out, _) = c.ctl(&["cluster"]);
    assert_eq!(code, 0);
    assert!(out.contains("ALIVE"), "{out}");

    let (code, _, err) = c.ctl(&["kill", &id]);
    assert_eq!(code, 0, "{err}");
    c.api().wait_state(&id, "KILLED", Duration::from_secs(30));

    let (code, _, err) = c.ctl(&["status", "app-missing"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("alohactl: ") && err.contains("not found"),
        "{err}"
    );
    let (code, _, err) = c.ctl(&["submit", "--name", "x", "--kind", "nope", "--spec", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown kind"), "{err}");
}

#[test]
fn an_unreachable_master_is_a_one_line_error() {
    let port = aloha_e2e::free_port();
    let out = std::process::Command::new(aloha_e2e::bin("alohactl"))
        .args(["--master", &format!("http://127.0.0.1:{port}"), "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("alohactl: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn dry_run_task_model_flags_and_retry() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let json = |out: &str| -> Value { serde_json::from_str(out).expect("json output") };

    // A dry run says where the app would go and creates nothing.
    let (code, out, err) = c.ctl(&["submit", "--name", "dry", "--dry-run", "--", "true"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("placement: worker w1"), "{out}");
    let (code, out, _) = c.ctl(&[
        "-o",
        "json",
        "submit",
        "--name",
        "big",
        "--cores",
        "64",
        "--dry-run",
        "--",
        "true",
    ]);
    assert_eq!(code, 0);
    let dry = json(&out);
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    assert!(dry["placement"]["waiting"].is_string(), "{dry:#}");
    let (code, out, _) = c.ctl(&["-o", "json", "list"]);
    assert_eq!(code, 0);
    assert_eq!(
        json(&out)["apps"],
        serde_json::json!([]),
        "a dry run creates nothing"
    );

    let (code, _, err) = c.ctl(&[
        "submit",
        "--name",
        "x",
        "--restart",
        "sometimes",
        "--",
        "true",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("alohactl: ") && err.contains("--restart"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    // An attempt past its max runtime is killed and the app ends FAILED.
    let (code, _, err) = c.ctl(&[
        "submit",
        "--name",
        "slow",
        "--max-runtime",
        "1s",
        "--wait",
        "--",
        "sleep",
        "60",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("FAILED") && err.contains("max runtime"),
        "{err}"
    );

    // on_failure relaunches once (max_retries 1), then the app ends FAILED on attempt 2.
    let (code, out, err) = c.ctl(&[
        "-o",
        "json",
        "submit",
        "--name",
        "flaky",
        "--restart",
        "on_failure",
        "--max-retries",
        "1",
        "--retry-backoff",
        "100ms",
        "--wait",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    assert_eq!(code, 1, "{err}");
    let flaky = json(&out);
    assert_eq!(flaky["state"], "FAILED", "{flaky:#}");
    assert_eq!(flaky["attempt"], 2, "{flaky:#}");
    let flaky_id = flaky["id"].as_str().unwrap().to_string();
    let (code, out, _) = c.ctl(&["status", &flaky_id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Restart:") && out.contains("on_failure"),
        "{out}"
    );

    // Retrying the failed app makes a new one that names it.
    let (code, out, err) = c.ctl(&["retry", &flaky_id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Retry of:") && out.contains(&flaky_id),
        "{out}"
    );
    let (code, out, err) = c.ctl(&["-o", "json", "retry", &flaky_id]);
    assert_eq!(code, 0, "{err}");
    let again = json(&out);
    assert_eq!(again["retry_of"], flaky_id.as_str(), "{again:#}");
    assert_ne!(again["id"], flaky_id.as_str());

    // A running app cannot be retried: the master's 409, on one line.
    let (code, out, _) = c.ctl(&[
        "-o", "json", "submit", "--name", "long", "--", "sleep", "600",
    ]);
    assert_eq!(code, 0);
    let long = json(&out)["id"].as_str().unwrap().to_string();
    c.api()
        .wait_state(&long, "RUNNING", Duration::from_secs(30));
    let (code, _, err) = c.ctl(&["retry", &long]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("alohactl: ") && err.contains("only an ended app can be retried"),
        "{err}"
    );
    assert!(err.contains("409"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let (code, _, err) = c.ctl(&["retry", "app-missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = c.ctl(&["kill", &long]);
    assert_eq!(code, 0, "{err}");
}

/// A submission of a `process` app that runs `true`.
fn true_app(name: &str) -> Value {
    serde_json::json!({"name": name, "kind": "process", "spec": {"command": ["true"]}})
}

/// The `status` of every result in `alohactl -o json submit-batch` output.
fn batch_statuses(results: &Value) -> Vec<u64> {
    results["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

#[test]
fn submit_batch_reports_each_app_and_fails_when_one_is_refused() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let file = c.dir.path().join("apps.jsonl");
    let bad = serde_json::json!({"name": "b1", "kind": "nope"});
    let lines = format!("{}\n{bad}\n\n{}\n", true_app("b0"), true_app("b2"));
    std::fs::write(&file, lines).unwrap();
    let path = file.to_str().unwrap();

    let (code, out, err) = c.ctl(&["-o", "json", "submit-batch", path]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert_eq!(err, "alohactl: 1 of 3 apps were refused\n");
    let printed: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(batch_statuses(&printed), [201, 422, 201], "{printed:#}");
    let results = &printed["results"];
    assert!(
        results[1]["error"].as_str().unwrap().contains("nope"),
        "{printed:#}"
    );
    for (i, name) in [(0, "b0"), (2, "b2")] {
        let id = results[i]["app"]["id"].as_str().expect("an app id");
        let app = c.api().get(&format!("/api/v1/apps/{id}"));
        assert_eq!(app.status, 200, "{:?}", app.body);
        assert_eq!(app.body["name"], name);
        c.api().wait_state(id, "FINISHED", Duration::from_secs(30));
    }
    let listed = c.api().get("/api/v1/apps").body;
    assert_eq!(listed["apps"].as_array().unwrap().len(), 2, "{listed:#}");
}

#[test]
fn submit_batch_with_a_key_creates_each_app_once() {
    let c = Cluster::start("3s", &[("w1", 2)]);
    let file = c.dir.path().join("apps.json");
    let apps: Vec<Value> = ["k0", "k1", "k2"].iter().map(|n| true_app(n)).collect();
    std::fs::write(&file, Value::Array(apps).to_string()).unwrap();
    let path = file.to_str().unwrap();
    let args = [
        "-o",
        "json",
        "submit-batch",
        path,
        "--chunk",
        "2",
        "--idempotency-key",
        "nightly-7",
    ];
    let ids = |out: &str| -> Vec<String> {
        let printed: Value = serde_json::from_str(out).expect("json output");
        printed["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["app"]["id"].as_str().expect("an app").to_string())
            .collect()
    };

    let (code, first, err) = c.ctl(&args);
    assert_eq!(code, 0, "stdout: {first}\nstderr: {err}");
    assert_eq!(err, "");
    assert_eq!(
        batch_statuses(&serde_json::from_str(&first).unwrap()),
        [201, 201, 201]
    );
    let (code, again, err) = c.ctl(&args);
    assert_eq!(code, 0, "stdout: {again}\nstderr: {err}");
    assert_eq!(
        batch_statuses(&serde_json::from_str(&again).unwrap()),
        [200, 200, 200],
        "a rerun with the same key answers with the first apps"
    );
    assert_eq!(ids(&again), ids(&first));
    let listed = c.api().get("/api/v1/apps").body;
    assert_eq!(listed["apps"].as_array().unwrap().len(), 3, "{listed:#}");
    // Chunk j takes `KEY.j`, and the master keys app i of it `KEY.j#i`.
    let keys: Vec<Value> = ids(&first)
        .iter()
        .map(|id| c.api().app(id)["idempotency_key"].clone())
        .collect();
    assert_eq!(keys, ["nightly-7.0#0", "nightly-7.0#1", "nightly-7.1#0"]);

    // The table: one row per app, in file order.
    let (code, out, err) = c.ctl(&args[2..]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let first_ids = ids(&first);
    for (i, row) in rows.iter().enumerate() {
        let index = i.to_string();
        let expected = [index.as_str(), "200", &first_ids[i], ["k0", "k1", "k2"][i]];
        assert_eq!(row[..], expected, "{out}");
    }
    assert_eq!(rows.len(), 3, "{out}");
}

#[test]
fn submit_batch_refuses_empty_and_malformed_files_in_one_line() {
    let c = Cluster::start("3s", &[]);
    let dir = c.dir.path();
    let write = |name: &str, text: &str| -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let one_line = |args: &[&str], expected: &[&str]| {
        let (code, out, err) = c.ctl(args);
        assert_eq!(code, 2, "{args:?}: stdout: {out}\nstderr: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with("alohactl: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        for part in expected {
            assert!(err.contains(part), "{part:?} in {err}");
        }
    };

    let empty = write("empty.jsonl", "");
    one_line(&["submit-batch", &empty], &[&empty, "holds no apps"]);
    let none = write("none.json", r#"{"apps": []}"#);
    one_line(&["submit-batch", &none], &[&none, "holds no apps"]);
    let broken = write(
        "broken.jsonl",
        &format!("{}\n{{\"name\": \"x\",\n", true_app("ok")),
    );
    one_line(
        &["submit-batch", &broken],
        &[&broken, "line 2 is not valid JSON"],
    );
    let missing = dir.join("missing.json");
    let missing = missing.to_str().unwrap();
    one_line(&["submit-batch", missing], &[missing, "cannot read"]);
    one_line(&["submit-batch", &empty, "--chunk", "0"], &["--chunk"]);

    let listed = c.api().get("/api/v1/apps").body;
    assert_eq!(
        listed["apps"],
        serde_json::json!([]),
        "nothing was submitted"
    );
}
