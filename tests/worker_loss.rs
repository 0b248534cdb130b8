//! Workers that die: their apps are relaunched elsewhere while retries last, else FAILED.

use std::time::Duration;

use aloha_e2e::{app_pid, group_members, process_exists, Api, Cluster};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn an_app_on_a_killed_worker_is_relaunched_on_another() {
    let mut c = Cluster::start("2s", &[("w1", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd("survivor", &["sleep", "600"], json!({"max_retries": 1}));
    let doomed = api.submit_cmd("doomed", &["sleep", "600"], json!({"max_retries": 0}));
    api.wait_state(&id, "RUNNING", T);
    api.wait_state(&doomed, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    // A second worker joins; then the first dies without a word.
    c.add_worker("w2", 2);
    api.wait_alive_workers(2, T);
    c.workers[0].kill9();
    // The app's processes die with their worker (no orphans).
    aloha_e2e::wait_for("the dead worker's app to die", T, || {
        (!process_exists(-pgid)).then_some(())
    });
    let app = api.wait_state(&id, "RUNNING", T);
    let app = if app["attempt"] == 2 {
        app
    } else {
        aloha_e2e::wait_for("attempt 2 running", T, || {
            let a = api.app(&id);
            (a["attempt"] == 2 && a["state"] == "RUNNING").then_some(a)
        })
    };
    assert_eq!(app["worker_id"], "w2");
    assert_eq!(app["retries"], 1);
    let h = Api::history(&app);
    assert_eq!(
        h,
        [
            "SUBMITTED",
            "LAUNCHING",
            "RUNNING",
            "RELAUNCHING",
            "LAUNCHING",
            "RUNNING"
        ]
    );
    let relaunch = &app["history"][3];
    assert!(
        relaunch["message"]
            .as_str()
            .unwrap()
            .contains("worker w1 lost"),
        "{relaunch}"
    );
    let d = api.wait_state(&doomed, "FAILED", T);
    assert!(
        d["message"].as_str().unwrap().contains("worker w1 lost"),
        "{d}"
    );
    let workers = api.workers();
    let w1 = workers.iter().find(|w| w["id"] == "w1").unwrap();
    assert_eq!(w1["state"], "DEAD");
    assert!(c.app_dir("w2", &id, 2).join("stdout").exists());
}

#[test]
fn the_children_of_an_app_die_with_a_killed_worker() {
    let mut c = Cluster::start("2s", &[("w1", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd(
        "family",
        &["sh", "-c", "sleep 601 & sleep 602; wait"],
        json!({"max_retries": 0}),
    );
    api.wait_state(&id, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    // Should this test fail, the sleeps must not outlive it.
    struct KillOnPanic(i32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // SAFETY: plain kill(2) on a group that was seen alive.
                unsafe { libc::kill(-self.0, libc::SIGKILL) };
            }
        }
    }
    let _cleanup = KillOnPanic(pgid);
    aloha_e2e::wait_for("both sleeps of the app", T, || {
        let sleeps = group_members(pgid)
            .iter()
            .filter(|(_, comm)| comm == "sleep")
            .count();
        (sleeps == 2).then_some(())
    });
    // The leader is the worker's supervisor, which kills the group when the worker dies.
    let leader = std::fs::read_to_string(format!("/proc/{pgid}/comm")).unwrap_or_default();
    assert_eq!(leader.trim_end(), "aloha-supervise");
    c.workers[0].kill9();
    aloha_e2e::wait_for("every process of the app to die with its worker", T, || {
        group_members(pgid).is_empty().then_some(())
    });
    // Killed processes are reaped by init, on its own schedule; then the group id is free.
    aloha_e2e::wait_for("the app's process group to be gone", T, || {
        (!process_exists(-pgid)).then_some(())
    });
    let app = api.wait_state(&id, "FAILED", T);
    assert!(
        app["message"].as_str().unwrap().contains("worker w1 lost"),
        "{app}"
    );
}

#[test]
fn a_worker_that_comes_back_is_reconciled() {
    let mut c = Cluster::start("2s", &[("w1", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd("paused", &["sleep", "600"], json!({"max_retries": 1}));
    api.wait_state(&id, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    c.add_worker("w2", 2);
    api.wait_alive_workers(2, T);
    // Freeze w1 past the timeout: the master gives its app to w2.
    c.workers[0].signal(libc::SIGSTOP);
    aloha_e2e::wait_for("attempt 2 running on w2", T, || {
        let a = api.app(&id);
        (a["attempt"] == 2 && a["state"] == "RUNNING").then_some(())
    });
    // w1 wakes up, re-registers with attempt 1 still running: the master has it killed.
    c.workers[0].signal(libc::SIGCONT);
    aloha_e2e::wait_for("the stale attempt on w1 to be killed", T, || {
        (!process_exists(-pgid)).then_some(())
    });
    api.wait_alive_workers(2, T);
    let app = api.app(&id);
    assert_eq!(app["state"], "RUNNING");
    assert_eq!(app["worker_id"], "w2");
    assert_eq!(app["attempt"], 2);
}

#[test]
fn apps_of_a_worker_stopped_with_sigterm_move_elsewhere_and_never_back() {
    let mut c = Cluster::start("3s", &[("w1", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd("mover", &["sleep", "600"], json!({"max_retries": 1}));
    api.wait_state(&id, "RUNNING", T);
    c.add_worker("w2", 2);
    api.wait_alive_workers(2, T);
    let st = c.workers[0].terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()));
    let app = aloha_e2e::wait_for("attempt 2 running", T, || {
        let a = api.app(&id);
        (a["attempt"] == 2 && a["state"] == "RUNNING").then_some(a)
    });
    assert_eq!(app["worker_id"], "w2");
    assert_eq!(
        Api::history(&app),
        [
            "SUBMITTED",
            "LAUNCHING",
            "RUNNING",
            "RELAUNCHING",
            "LAUNCHING",
            "RUNNING"
        ],
        "no launch was tried on the stopping worker: {app}"
    );
    assert!(app["history"][3]["message"]
        .as_str()
        .unwrap()
        .starts_with("worker w1 shut down"));
}
