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
