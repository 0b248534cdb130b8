//! The example plugins in `examples/` (the `sleeper` Application plugin and the `event-types`
//! listener) build on their own, pass their own tests, and run in a real worker or master that
//! loads them by path.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aloha_e2e::{
    bin, target_dir, wait_for, workspace_root, Api, Cluster, MasterOpts, MasterProc, Proc,
};
use serde_json::json;

const T: Duration = Duration::from_secs(40);

/// Runs `cargo <command>` on the example in `examples/<dir>`, as its README says, with its own
/// workspace.
fn cargo_on_example(command: &str, dir: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root()
        .join("examples")
        .join(dir)
        .join("Cargo.toml");
    let out = Command::new(cargo)
        .args([command, "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(workspace_root().join("target/examples"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {command} fails on examples/{dir}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the example in `examples/<dir>` and returns its library `<lib>.so`.
fn build_example(dir: &str, lib: &str) -> PathBuf {
    cargo_on_example("build", dir);
    let lib = workspace_root().join(format!("target/examples/debug/{lib}.so"));
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

#[test]
fn the_examples_own_tests_pass() {
    // Their in-process tests, written with `aloha_plugin::testing` as the guide shows.
    cargo_on_example("test", "sleeper-plugin");
    cargo_on_example("test", "event-types-listener");
}

#[test]
fn the_example_plugin_builds_alone_and_runs_in_a_worker() {
    let lib = build_example("sleeper-plugin", "libaloha_plugin_sleeper");
    let mut c = Cluster::start("3s", &[]);
    // A plugin dir with the shipped process plugin and the example.
    let plugins = c.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for so in [target_dir().join("libaloha_plugin_process.so"), lib] {
        std::fs::copy(&so, plugins.join(so.file_name().unwrap())).unwrap();
    }
    let config = c.dir.path().join("sleepy.toml");
    std::fs::write(&config, "[plugins.sleeper]\nmax_ms = 600000\n").unwrap();
    let mut cmd = Command::new(bin("aloha-worker"));
    cmd.arg("--master")
        .arg(c.master.rpc_url())
        .args(["--id", "sleepy", "--cores", "4", "--memory-mb", "1024"])
        .arg("--config")
        .arg(&config)
        .arg("--work-dir")
        .arg(c.dir.path().join("sleepy"))
        .arg("--plugin-dir")
        .arg(&plugins);
    c.workers.push(Proc::spawn("sleepy", cmd, c.dir.path()));
    let api = c.api().clone();
    api.wait_alive_workers(1, T);
    let w = &api.workers()[0];
    assert_eq!(w["kinds"], json!(["process", "sleeper"]), "{w}");

    let nap = api.submit(json!({"name": "nap", "kind": "sleeper", "spec": {"ms": 300}}));
    let nap = api.wait_state(nap["id"].as_str().unwrap(), "FINISHED", T);
    assert_eq!(nap["message"], "slept 300 ms");
    assert_eq!(nap["details"]["planned_ms"], "300");
    assert_eq!(
        Api::history(&nap),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]
    );

    let long = api.submit(json!({"name": "long", "kind": "sleeper", "spec": {"ms": 600000}}));
    let id = long["id"].as_str().unwrap().to_string();
    api.wait_state(&id, "RUNNING", T);
    api.post(
        &format!("/api/v1/apps/{id}/kill"),
        &json!({"reason": "wake up"}),
    );
    let long = api.wait_state(&id, "KILLED", T);
    assert_eq!(long["message"], "killed: wake up");

    let bad = api.submit(json!({"name": "bad", "kind": "sleeper", "spec": {"ms": "soon"}}));
    let bad = api.wait_state(bad["id"].as_str().unwrap(), "ERROR", T);
    assert_eq!(
        bad["message"],
        r#"plugin refused the app: invalid spec: ms: invalid type: string "soon", expected u64"#
    );
}

#[test]
fn the_example_listener_builds_alone_and_hears_the_master() {
    let lib = build_example("event-types-listener", "libaloha_listener_event_types");
    let listener = |dir: &std::path::Path| {
        let config = json!({"path": dir.join("event-types.txt")});
        vec![
            "--listener".to_string(),
            format!("{}={config}", lib.display()),
        ]
    };
    let c = Cluster::start_with("3s", &[("w1", 1)], listener);
    let file = c.dir.path().join("event-types.txt");
    let api = c.api().clone();
    let id = api.submit_cmd("hello", &["true"], json!({}));
    api.wait_state(&id, "FINISHED", T);

    let lines = wait_for("the listener to write the app's end", T, || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.contains(&format!("app_state_changed {id} FINISHED"))
            .then_some(text)
    });
    // `<seq> <type> ...`, one line per event, in order and without gaps.
    let parsed: Vec<(u64, &str)> = lines
        .lines()
        .map(|l| {
            let (seq, rest) = l.split_once(' ').unwrap();
            (seq.parse().unwrap(), rest)
        })
        .collect();
    for w in parsed.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "{lines}");
    }
    assert!(
        parsed.iter().any(|(_, rest)| *rest == "worker_joined"),
        "{lines}"
    );
    let states: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, rest)| rest.strip_prefix(&format!("app_state_changed {id} ")))
        .collect();
    assert_eq!(
        states,
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"],
        "{lines}"
    );

    // A configuration the listener refuses stops the master, naming the field.
    let dir = c.dir.path();
    let opts = MasterOpts {
        http_port: aloha_e2e::free_port(),
        rpc_port: aloha_e2e::free_port(),
        state_dir: dir.join("master-2"),
        worker_timeout: "3s".into(),
        etcd: None,
    };
    let config = json!({"path": dir.join("other.txt"), "colour": "red"});
    let args = [
        "--listener".to_string(),
        format!("{}={config}", lib.display()),
    ];
    let mut refused = MasterProc::spawn_with("master-2", &opts, &args, dir);
    let status = refused.wait_exit(T).expect("the master stops");
    assert!(!status.success());
    let log = refused.log_text();
    assert!(
        log.contains(
            "invalid event-types configuration: colour: unknown field `colour`, expected `path`"
        ),
        "{log}"
    );
}
