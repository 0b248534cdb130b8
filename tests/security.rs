//! Who may talk to the cluster: a join token on every gRPC call between masters and workers,
//! and plugins loaded only from files and directories nobody else can change.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{bin, free_port, target_dir, wait_for, Cluster, MasterOpts, MasterProc, Proc};
use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::worker_service_client::WorkerServiceClient;
use aloha_proto::{HeartbeatRequest, KillAppRequest, RegisterWorkerRequest};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "7d1f0c8e2b9a4f65a3c1e0d9b8a7f6e5";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
}

/// A token file with `token`, mode 0600.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, format!("{token}\n")).unwrap();
    chmod(&f, 0o600);
    f
}

/// A worker of `c`'s master on `plugin_dir`, with extra flags.
fn worker(c: &Cluster, id: &str, plugin_dir: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("aloha-worker"));
    cmd.arg("--master")
        .arg(c.master.rpc_url())
        .arg("--id")
        .arg(id)
        .arg("--cores")
        .arg("1")
        .arg("--memory-mb")
        .arg("512")
        .arg("--work-dir")
        .arg(c.dir.path().join(id))
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .args(extra)
        .env("ALOHA_LOG", "info,aloha_worker=debug");
    Proc::spawn(id, cmd, c.dir.path())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn without_the_join_token_nothing_registers_heartbeats_reports_or_launches() {
    let mut c = Cluster::start_with("3s", &[], |dir| {
        let f = token_file(dir, "master.token", TOKEN);
        vec!["--join-token-file".into(), f.display().to_string()]
    });
    let api = c.api().clone();
    let dir = c.dir.path().to_path_buf();

    // No token, then a wrong one: refused, loudly on both sides.
    let wrong = token_file(&dir, "wrong.token", "ffffffffffffffffffffffffffffffff");
    let wrong = wrong.display().to_string();
    c.workers.push(worker(&c, "none", &target_dir(), &[]));
    c.workers.push(worker(
        &c,
        "wrong",
        &target_dir(),
        &["--join-token-file", &wrong],
    ));
    for w in &c.workers {
        wait_for("the worker to say it was refused", T, || {
            let log = w.log_text();
            (log.contains("the master refused the registration")
                && log.contains("a valid join token is required"))
            .then_some(())
        });
    }
    wait_for("the master to log the attempts", T, || {
        let log = c.master.proc.log_text();
        // Reported at most every 10 s per address, with a count: both workers are on 127.0.0.1.
        log.contains("refused gRPC calls without a valid join token")
            .then_some(())
    });
    assert!(api.workers().is_empty(), "{:?}", api.workers());

    // Straight gRPC without the token: register, heartbeat and report are all UNAUTHENTICATED.
    let url = c.master.rpc_url();
    rt().block_on(async {
        let mut m = MasterServiceClient::connect(url).await.unwrap();
        let reg = RegisterWorkerRequest {
            worker_id: "raw".into(),
            address: "127.0.0.1:1".into(),
            cores: 1,
            memory_mb: 512,
            kinds: vec!["process".into()],
            ..Default::default()
        };
        let code = m.register_worker(reg).await.unwrap_err().code();
        assert_eq!(code, tonic::Code::Unauthenticated);
        let hb = HeartbeatRequest {
            worker_id: "raw".into(),
        };
        assert_eq!(
            m.heartbeat(hb).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let report = aloha_proto::AppStateReport {
            worker_id: "raw".into(),
            app_id: "app-20260101000000-0001".into(),
            attempt: 1,
            state: "FINISHED".into(),
            ..Default::default()
        };
        assert_eq!(
            m.report_app_state(report).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    });

    // With the token: it registers and runs apps (the master's launch carries the token too,
    // which the worker requires).
    let good = token_file(&dir, "worker.token", TOKEN);
    let good = good.display().to_string();
    c.workers.push(worker(
        &c,
        "good",
        &target_dir(),
        &["--join-token-file", &good],
    ));
    api.wait_alive_workers(1, T);
    assert_eq!(api.workers()[0]["id"], "good");
    let id = api.submit_cmd("hello", &["true"], json!({}));
    api.wait_state(&id, "FINISHED", T);

    // Someone else posing as a master cannot tell that worker what to do.
    let address = api.workers()[0]["address"].as_str().unwrap().to_string();
    rt().block_on(async {
        let mut w = WorkerServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let kill = KillAppRequest {
            epoch: u64::MAX,
            app_id: id.clone(),
            attempt: 1,
            ..Default::default()
        };
        assert_eq!(
            w.kill_app(kill).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    });
    let good_log = c.workers[2].log_text();
    assert!(good_log.contains("refused gRPC calls without a valid join token"));
}

#[test]
fn a_join_token_file_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let f = token_file(dir.path(), "open.token", TOKEN);
    chmod(&f, 0o644);
    for (daemon, extra) in [
        (
            "aloha-master",
            vec![
                "--state-dir".to_string(),
                dir.path().join("m").display().to_string(),
            ],
        ),
        (
            "aloha-worker",
            vec![
                "--work-dir".to_string(),
                dir.path().join("w").display().to_string(),
            ],
        ),
    ] {
        let out = Command::new(bin(daemon))
            .arg("--join-token-file")
            .arg(&f)
            .args(&extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{daemon} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permissions 0644 are too open"),
            "{daemon}: {err}"
        );
    }
    let short = token_file(dir.path(), "short.token", "tooshort");
    let out = Command::new(bin("aloha-master"))
        .arg("--join-token-file")
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[test]
fn masters_watch_each_other_with_the_join_token() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-sec-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let f = token_file(dir.path(), "token", TOKEN);
    let mut masters: Vec<MasterProc> = (0..2)
        .map(|i| {
            let opts = MasterOpts {
                http_port: free_port(),
                rpc_port: free_port(),
                state_dir: dir.path().join(format!("m{i}")),
                worker_timeout: "3s".into(),
                etcd: Some((etcd.endpoints(), "10s".into())),
            };
            let extra = vec!["--join-token-file".into(), f.display().to_string()];
            MasterProc::start_with(&format!("m{i}"), opts, extra, dir.path())
        })
        .collect();
    let leader = aloha_e2e::leader_of(&masters, T);
    wait_for("the standby to watch the leader", T, || {
        masters[leader]
            .proc
            .log_text()
            .contains("a standby watches this leader")
            .then_some(())
    });
    masters[leader].proc.kill9();
    let standby = 1 - leader;
    wait_for("the standby to revoke the dead leader's lease", T, || {
        masters[standby]
            .proc
            .log_text()
            .contains("revoked its lease (fast failover)")
            .then_some(())
    });
    aloha_e2e::leader_of(&masters[standby..=standby], T);
    drop(etcd);
}

#[test]
fn a_plugin_others_can_write_to_is_refused_with_a_clear_error() {
    let mut c = Cluster::start("3s", &[]);
    let api = c.api().clone();
    let plugins = c.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    chmod(&plugins, 0o755);
    let lib = plugins.join("libaloha_plugin_process.so");
    std::fs::copy(target_dir().join("libaloha_plugin_process.so"), &lib).unwrap();
    chmod(&lib, 0o666);

    c.workers.push(worker(&c, "loose", &plugins, &[]));
    let shown = wait_for("the worker to register", T, || {
        api.workers().into_iter().find(|w| w["id"] == "loose")
    });
    let errors = shown["plugin_errors"].to_string();
    assert!(
        errors.contains(
            "libaloha_plugin_process.so: refused: writable by group or others (mode 0666)"
        ),
        "{shown}"
    );
    assert_eq!(shown["kinds"], json!([]), "{shown}");

    // Fixed, the same plugin loads.
    let mut loose = c.workers.pop().unwrap();
    loose.terminate(T);
    chmod(&lib, 0o644);
    c.workers.push(worker(&c, "tight", &plugins, &[]));
    let shown = wait_for("the fixed worker to register", T, || {
        api.workers().into_iter().find(|w| w["id"] == "tight")
    });
    assert_eq!(shown["kinds"], json!(["process"]), "{shown}");
    assert_eq!(shown["plugin_errors"], json!([]), "{shown}");
}
