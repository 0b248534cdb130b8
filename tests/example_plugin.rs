//! The example plugin in `examples/sleeper-plugin` builds on its own and runs in a real worker
//! that loads it by path.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aloha_e2e::{bin, target_dir, workspace_root, Api, Cluster, Proc};
use serde_json::json;

const T: Duration = Duration::from_secs(40);

/// Builds the example with cargo, as its README says, and returns the library.
fn build_example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root().join("examples/sleeper-plugin/Cargo.toml");
    let target = workspace_root().join("target/examples");
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the example plugin does not build on its own:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target.join("debug/libaloha_plugin_sleeper.so");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

#[test]
fn the_example_plugin_builds_alone_and_runs_in_a_worker() {
    let lib = build_example();
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
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("`ms` must be a non-negative integer"),
        "{bad}"
    );
}
