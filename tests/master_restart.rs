//! The master killed with SIGKILL and restarted loses nothing.

use std::collections::HashSet;
use std::time::Duration;

use aloha_e2e::{app_pid, process_exists, Api, Cluster, MasterProc};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_hard_restart_keeps_every_app_reconciles_running_ones_and_keeps_queue_order() {
    let mut c = Cluster::start("2s", &[("w1", 2)]);
    let api = c.api().clone();
    let done = api.submit_cmd("done", &["true"], json!({}));
    api.wait_state(&done, "FINISHED", T);
    let r1 = api.submit_cmd("r1", &["sleep", "600"], json!({}));
    let r2 = api.submit_cmd("r2", &["sleep", "600"], json!({}));
    api.wait_state(&r1, "RUNNING", T);
    api.wait_state(&r2, "RUNNING", T);
    let pg1 = app_pid(&c.app_dir("w1", &r1, 1));
    // The queue: q1, q2, q3 wait for cores, in this order.
    let queued: Vec<String> = (1..=3)
        .map(|i| api.submit_cmd(&format!("q{i}"), &["sleep", "600"], json!({})))
        .collect();
    // A burst of submissions right up to the crash: every acknowledged one must survive.
    let burst: Vec<String> = (0..40)
        .map(|i| api.submit_cmd(&format!("burst{i}"), &["true"], json!({"cores": 16})))
        .collect();
    let log_dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&log_dir);

    let listed: HashSet<String> = api.get("/api/v1/apps?limit=10000").body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    for id in burst.iter().chain(&queued).chain([&done, &r1, &r2]) {
        assert!(listed.contains(id), "app {id} lost by the restart");
    }
    assert_eq!(api.app(&done)["state"], "FINISHED");
    // Running apps come back as RUNNING once the worker re-registers: same attempt, no relaunch.
    for id in [&r1, &r2] {
        let app = api.wait_state(id, "RUNNING", T);
        assert_eq!(app["attempt"], 1, "{app}");
        let h = Api::history(&app);
        assert_eq!(
            h,
            ["SUBMITTED", "LAUNCHING", "RUNNING", "UNKNOWN", "RUNNING"],
            "{app}"
        );
    }
    assert!(process_exists(-pg1), "the running app was not touched");
    for id in &queued {
        assert_eq!(api.app(id)["state"], "SUBMITTED");
    }
    // Queue order survives: freeing one core launches q1, the next launches q2.
    api.post(&format!("/api/v1/apps/{r1}/kill"), &json!({}));
    api.wait_state(&queued[0], "RUNNING", T);
    assert_eq!(api.app(&queued[1])["state"], "SUBMITTED");
    assert_eq!(api.app(&queued[2])["state"], "SUBMITTED");
    api.post(&format!("/api/v1/apps/{r2}/kill"), &json!({}));
    api.wait_state(&queued[1], "RUNNING", T);
    assert_eq!(api.app(&queued[2])["state"], "SUBMITTED");
    // Ids stay unique: the sequence continues after the restart.
    let newer =
        api.submit(json!({"name": "after", "kind": "process", "spec": {"command": ["true"]}}));
    assert!(!listed.contains(newer["id"].as_str().unwrap()));
    let max_seq = burst.len() as u64 + 6;
    assert_eq!(newer["seq"].as_u64().unwrap(), max_seq + 1);
    let epoch = api.get("/api/v1/cluster").body["epoch"].as_u64().unwrap();
    assert_eq!(epoch, 2, "every start is a new epoch");
}

#[test]
fn apps_no_worker_reports_after_a_restart_are_relaunched_or_failed() {
    let mut c = Cluster::start("2s", &[("w1", 2)]);
    let api = c.api().clone();
    let keep = api.submit_cmd("keep", &["sleep", "600"], json!({"max_retries": 1}));
    let lose = api.submit_cmd("lose", &["sleep", "600"], json!({"max_retries": 0}));
    api.wait_state(&keep, "RUNNING", T);
    api.wait_state(&lose, "RUNNING", T);
    // Master and worker both die; the master comes back, the worker never does.
    c.master.proc.kill9();
    c.workers[0].kill9();
    let log_dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&log_dir);
    assert_eq!(api.app(&keep)["state"], "UNKNOWN");
    c.add_worker("w2", 2);
    let app = aloha_e2e::wait_for("keep relaunched on w2", T, || {
        let a = api.app(&keep);
        (a["state"] == "RUNNING" && a["attempt"] == 2).then_some(a)
    });
    assert_eq!(app["worker_id"], "w2");
    let h = Api::history(&app);
    assert_eq!(
        h,
        [
            "SUBMITTED",
            "LAUNCHING",
            "RUNNING",
            "UNKNOWN",
            "RELAUNCHING",
            "LAUNCHING",
            "RUNNING"
        ]
    );
    let failed = api.wait_state(&lose, "FAILED", T);
    assert!(
        failed["message"].as_str().unwrap().contains("w1"),
        "the reason names the lost worker: {failed}"
    );
}

#[test]
fn two_masters_cannot_share_a_state_dir() {
    let c = Cluster::start("2s", &[]);
    let mut opts = c.master.opts.clone();
    opts.http_port = aloha_e2e::free_port();
    opts.rpc_port = aloha_e2e::free_port();
    let mut second = MasterProc::spawn("second", &opts, c.dir.path());
    let status = second
        .wait_exit(T)
        .expect("the second master must exit by itself");
    assert!(!status.success());
    let log = second.log_text();
    assert!(
        log.contains("already in use by another aloha-master"),
        "{log}"
    );
    // The first one is unharmed.
    assert_eq!(c.api().get("/healthz").status, 200);
}
