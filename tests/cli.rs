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
