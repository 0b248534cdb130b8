//! The process plugin, loaded from its built `.so` through `aloha_plugin::host`, running real
//! processes.

mod common;

use std::time::{Duration, Instant};

use aloha_plugin::host::PluginEvent;
use aloha_plugin::{ExitKind, ExitState};
use common::{alive, group_members, wait_group_gone, wait_until, TestApp};
use serde_json::json;

#[test]
fn the_library_declares_the_process_kind() {
    let plugin = common::plugin();
    assert_eq!(plugin.kind(), "process");
    assert!(plugin.path().ends_with(common::SO_NAME));
}

#[test]
fn exit_zero_is_finished_and_the_pid_is_reported() {
    let t = TestApp::start(json!({"command": ["true"]}));
    let (exit, details) = t.wait_exit();
    assert_eq!(exit, ExitState::finished(0, "exited with code 0"));
    assert_eq!(details, [("pid".to_owned(), t.pid().to_string())]);
}

#[test]
fn a_nonzero_exit_is_failed_with_its_code() {
    let t = TestApp::start(json!({"command": ["sh", "-c", "exit 3"]}));
    assert_eq!(t.wait_exit().0, ExitState::failed(3, "exited with code 3"));
}

#[test]
fn death_by_signal_is_failed_with_128_plus_the_signal() {
    let t = TestApp::start(json!({"command": ["sh", "-c", "kill -SEGV $$"]}));
    assert_eq!(
        t.wait_exit().0,
        ExitState::failed(139, "killed by signal 11 (SIGSEGV)")
    );
}

#[test]
fn output_is_appended_to_files_in_the_app_dir() {
    let t = TestApp::create(json!({"command": ["sh", "-c", "echo out; echo err >&2"]})).unwrap();
    std::fs::write(t.dir.path().join("stdout"), "earlier attempt\n").unwrap();
    t.app.start().unwrap();
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    assert_eq!(t.read("stdout"), "earlier attempt\nout\n");
    assert_eq!(t.read("stderr"), "err\n");
}

#[test]
fn env_is_added_and_cwd_is_relative_to_the_app_dir() {
    let t = TestApp::create(json!({
        "command": ["sh", "-c", "echo \"$GREETING\"; echo \"${HOME:+home is set}\"; pwd -P"],
        "env": {"GREETING": "hello there"},
        "cwd": "work/sub"
    }))
    .unwrap();
    let sub = t.dir.path().join("work/sub");
    std::fs::create_dir_all(&sub).unwrap();
    t.app.start().unwrap();
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    let expected = format!(
        "hello there\nhome is set\n{}\n",
        sub.canonicalize().unwrap().display()
    );
    // HOME comes from the worker's environment, which the spec's env only adds to.
    if std::env::var_os("HOME").is_some() {
        assert_eq!(t.read("stdout"), expected);
    } else {
        assert!(t.read("stdout").starts_with("hello there\n"));
    }
}

#[test]
fn an_absolute_cwd_is_used_as_is() {
    let elsewhere = tempfile::tempdir().unwrap();
    let t = TestApp::start(json!({
        "command": ["pwd", "-P"],
        "cwd": elsewhere.path(),
    }));
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    assert_eq!(
        t.read("stdout").trim_end(),
        elsewhere.path().canonicalize().unwrap().to_str().unwrap()
    );
}

#[test]
fn a_missing_program_fails_start_and_reports_no_exit() {
    let t = TestApp::create(json!({"command": ["/nonexistent/aloha-test-program", "x"]})).unwrap();
    let err = t.app.start().unwrap_err();
    assert!(!err.panicked, "a refused start is an error, not a panic");
    let err = err.message;
    assert!(
        err.starts_with("cannot run \"/nonexistent/aloha-test-program\": "),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!t.dir.path().join("pid").exists());
    assert!(
        t.events.try_recv().is_err(),
        "a failed start reports nothing"
    );
    // A failed start is final.
    assert!(t
        .app
        .start()
        .unwrap_err()
        .message
        .contains("started already"));
}

#[test]
fn a_missing_cwd_fails_start() {
    let t = TestApp::create(json!({"command": ["true"], "cwd": "nope"})).unwrap();
    let err = t.app.start().unwrap_err().message;
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bad_specs_are_refused_at_create() {
    let err = TestApp::create(json!({"command": ["true"], "comand": [], "envv": {}}))
        .err()
        .unwrap();
    assert!(err.contains("unknown fields \"comand\", \"envv\""), "{err}");
    let err = TestApp::create(json!({"command": []})).err().unwrap();
    assert!(err.contains("`command` is required"), "{err}");
}

#[test]
fn shutdown_kills_the_whole_group() {
    let t = TestApp::start(json!({"command": ["sh", "-c", "sleep 1000 & sleep 1000"]}));
    let pgid = t.pid();
    // Both sleeps run before the shutdown, so the background one is really put to the test.
    wait_until("both sleeps run", || {
        group_members(pgid)
            .iter()
            .filter(|(_, comm)| comm == "sleep")
            .count()
            == 2
    });
    t.app.shutdown(Some("test is over")).unwrap();
    let (exit, _) = t.wait_exit();
    assert_eq!(exit, ExitState::killed(143, "killed: test is over"));
    wait_group_gone(pgid);
}

#[test]
fn a_process_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let t = TestApp::start(json!({
        "command": ["sh", "-c", "trap '' TERM; sleep 1000; echo survived"],
        "kill_grace_ms": 300
    }));
    let pgid = t.pid();
    // Once sleep runs, the trap is in place (and sleep inherited the ignored SIGTERM).
    wait_until("sleep runs", || {
        group_members(pgid).iter().any(|(_, comm)| comm == "sleep")
    });
    let asked = Instant::now();
    t.app.shutdown(None).unwrap();
    let (exit, _) = t.wait_exit();
    let took = asked.elapsed();
    assert_eq!(exit, ExitState::killed(137, "killed: shutdown requested"));
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL came early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "SIGKILL came late: {took:?}"
    );
    wait_group_gone(pgid);
    assert_eq!(t.read("stdout"), "");
}

#[test]
fn the_worker_conf_sets_the_grace_period() {
    let t = TestApp::create_with_conf(
        json!({"command": ["sh", "-c", "trap '' TERM; sleep 1000"]}),
        json!({"kill_grace_ms": 200}),
    )
    .unwrap();
    t.app.start().unwrap();
    let pgid = t.pid();
    wait_until("sleep runs", || {
        group_members(pgid).iter().any(|(_, comm)| comm == "sleep")
    });
    t.app.shutdown(Some("conf")).unwrap();
    // With the default 5 s grace this would take far longer than the deadline below.
    let asked = Instant::now();
    let (exit, _) = t.wait_exit();
    assert_eq!((exit.kind, exit.code), (ExitKind::Killed, 137));
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn shutdown_is_idempotent_and_a_no_op_before_start_and_after_exit() {
    let t = TestApp::create(json!({"command": ["sh", "-c", "exit 0"]})).unwrap();
    t.app.shutdown(Some("too early")).unwrap();
    t.app.start().unwrap();
    // The early shutdown did not count: the app ran and finished normally.
    assert_eq!(
        t.wait_exit().0,
        ExitState::finished(0, "exited with code 0")
    );
    t.app.shutdown(Some("too late")).unwrap();
    t.app.shutdown(None).unwrap();
    t.app.clean().unwrap();
    t.app.clean().unwrap();

    let t = TestApp::start(json!({"command": ["sleep", "1000"]}));
    let pgid = t.pid();
    t.app.shutdown(Some("first")).unwrap();
    t.app.shutdown(Some("second")).unwrap();
    assert_eq!(t.wait_exit().0, ExitState::killed(143, "killed: first"));
    wait_group_gone(pgid);
    assert!(t.events.try_recv().is_err(), "one exit only");
}

#[test]
fn clean_kills_a_running_app_and_keeps_the_logs() {
    let t = TestApp::start(json!({"command": ["sh", "-c", "echo started; exec sleep 1000"]}));
    let pgid = t.pid();
    wait_until("the app wrote its output", || {
        t.read("stdout") == "started\n"
    });
    t.app.clean().unwrap();
    assert_eq!(
        t.wait_exit().0,
        ExitState::killed(137, "killed: cleaned up while running")
    );
    wait_group_gone(pgid);
    t.app.clean().unwrap();
    for file in ["stdout", "stderr", "pid"] {
        assert!(t.dir.path().join(file).is_file(), "{file} was removed");
    }
}

#[test]
fn the_child_survives_the_thread_that_called_start() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits. Starting from a thread that ends
    // at once must not kill the app: the plugin forks from its own long-lived thread.
    let t = TestApp::create(json!({"command": ["sh", "-c", "sleep 0.5; echo alive"]})).unwrap();
    let TestApp { app, events, dir } = t;
    let app = std::thread::spawn(move || {
        app.start().unwrap();
        app
    })
    .join()
    .unwrap();
    let t = TestApp { app, events, dir };
    assert_eq!(
        t.wait_exit().0,
        ExitState::finished(0, "exited with code 0")
    );
    assert_eq!(t.read("stdout"), "alive\n");
}

#[test]
fn orphans_do_not_outlive_their_leader() {
    // The leader exits at once, leaving a background child behind in its group.
    let t = TestApp::start(json!({"command": ["sh", "-c", "sleep 1000 & echo $! > orphan"]}));
    let pgid = t.pid();
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    let orphan: libc::pid_t = t.read("orphan").trim().parse().unwrap();
    wait_until("the orphan is killed", || !alive(orphan));
    wait_group_gone(pgid);
}

#[test]
fn releasing_a_running_instance_kills_its_process() {
    let t = TestApp::start(json!({"command": ["sleep", "1000"]}));
    let pgid = t.pid();
    let TestApp {
        app,
        events,
        dir: _dir,
    } = t;
    drop(app);
    wait_group_gone(pgid);
    // After release nothing reaches the host: the pid detail is all there was.
    let after: Vec<_> = events.try_iter().collect();
    assert!(
        after
            .iter()
            .all(|e| matches!(e, PluginEvent::Detail { key, .. } if key == "pid")),
        "{after:?}"
    );
}

#[test]
fn a_second_start_is_refused() {
    let t = TestApp::start(json!({"command": ["sleep", "1000"]}));
    let err = t.app.start().unwrap_err();
    assert_eq!(err, "the app was started already");
    t.app.shutdown(Some("done")).unwrap();
    assert_eq!(t.wait_exit().0.kind, ExitKind::Killed);
}

/// The same reports with the worker's supervisor as the group's leader, which passes the
/// command's end on as its own.
#[test]
fn under_the_supervisor_exits_are_reported_the_same() {
    let t = TestApp::start_supervised(json!({"command": ["true"]}));
    let (exit, details) = t.wait_exit();
    assert_eq!(exit, ExitState::finished(0, "exited with code 0"));
    assert_eq!(details, [("pid".to_owned(), t.pid().to_string())]);

    let t = TestApp::start_supervised(json!({"command": ["sh", "-c", "exit 3"]}));
    assert_eq!(t.wait_exit().0, ExitState::failed(3, "exited with code 3"));

    let t = TestApp::start_supervised(json!({"command": ["sh", "-c", "kill -SEGV $$"]}));
    assert_eq!(
        t.wait_exit().0,
        ExitState::failed(139, "killed by signal 11 (SIGSEGV)")
    );
}

#[test]
fn under_the_supervisor_the_pid_is_the_supervisors_and_leads_the_group() {
    let t =
        TestApp::start_supervised(json!({"command": ["sh", "-c", "echo $PPID; exec sleep 1000"]}));
    let pgid = t.pid();
    wait_until("the command runs", || {
        group_members(pgid).iter().any(|(_, comm)| comm == "sleep")
    });
    let leader = std::fs::read_to_string(format!("/proc/{pgid}/comm")).unwrap();
    assert_eq!(leader, "aloha-supervise\n");
    // The command is the supervisor's child, in its group.
    assert_eq!(t.read("stdout"), format!("{pgid}\n"));
    t.app.shutdown(Some("done")).unwrap();
    assert_eq!(t.wait_exit().0, ExitState::killed(143, "killed: done"));
    wait_group_gone(pgid);
}

#[test]
fn under_the_supervisor_a_missing_program_fails_start_the_same() {
    let t = TestApp::create_supervised(json!({"command": ["/nonexistent/aloha-test-program"]}))
        .unwrap();
    let err = t.app.start().unwrap_err().message;
    assert_eq!(
        err,
        "cannot run \"/nonexistent/aloha-test-program\": No such file or directory (os error 2)"
    );
    assert!(!t.dir.path().join("pid").exists());
    assert!(
        t.events.try_recv().is_err(),
        "a failed start reports nothing"
    );
    assert_eq!(
        t.read("stderr"),
        "",
        "the supervisor keeps quiet in the app's logs"
    );
}

#[test]
fn under_the_supervisor_shutdown_and_escalation_kill_the_whole_group() {
    let t = TestApp::start_supervised(json!({"command": ["sh", "-c", "sleep 1000 & sleep 1000"]}));
    let pgid = t.pid();
    wait_until("both sleeps run", || {
        group_members(pgid)
            .iter()
            .filter(|(_, comm)| comm == "sleep")
            .count()
            == 2
    });
    t.app.shutdown(Some("test is over")).unwrap();
    assert_eq!(
        t.wait_exit().0,
        ExitState::killed(143, "killed: test is over")
    );
    wait_group_gone(pgid);

    let t = TestApp::start_supervised(json!({
        "command": ["sh", "-c", "trap '' TERM; sleep 1000"],
        "kill_grace_ms": 300
    }));
    let pgid = t.pid();
    wait_until("sleep runs", || {
        group_members(pgid).iter().any(|(_, comm)| comm == "sleep")
    });
    t.app.shutdown(None).unwrap();
    assert_eq!(
        t.wait_exit().0,
        ExitState::killed(137, "killed: shutdown requested")
    );
    wait_group_gone(pgid);
}

#[test]
fn under_the_supervisor_orphans_do_not_outlive_their_leader() {
    let t = TestApp::start_supervised(
        json!({"command": ["sh", "-c", "sleep 1000 & echo $! > orphan"]}),
    );
    let pgid = t.pid();
    assert_eq!(t.wait_exit().0.kind, ExitKind::Finished);
    let orphan: libc::pid_t = t.read("orphan").trim().parse().unwrap();
    wait_until("the orphan is killed", || !alive(orphan));
    wait_group_gone(pgid);
}
