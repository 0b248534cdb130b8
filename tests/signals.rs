//! The signal state a worker inherits is not its apps': a worker started under `nohup` (SIGHUP
//! ignored) with SIGTERM blocked still runs apps that die by SIGHUP, and still stops on SIGTERM.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use aloha_e2e::{bin, Cluster, Proc, WorkerOpts};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// A worker like the harness's `start_worker`, started with SIGHUP ignored and SIGTERM blocked.
fn start_worker_with_a_dirty_signal_state(c: &Cluster, opts: &WorkerOpts) -> Proc {
    let log_dir = c.dir.path();
    let config = log_dir.join(format!("{}.toml", opts.id));
    std::fs::write(
        &config,
        format!(
            "[plugins.process]\nkill_grace_ms = {}\n",
            opts.kill_grace_ms
        ),
    )
    .expect("write worker config");
    let mut cmd = Command::new(bin("aloha-worker"));
    cmd.arg("--master")
        .arg(c.master.rpc_url())
        .arg("--config")
        .arg(&config)
        .arg("--id")
        .arg(&opts.id)
        .arg("--cores")
        .arg(opts.cores.to_string())
        .arg("--memory-mb")
        .arg(opts.memory_mb.to_string())
        .arg("--work-dir")
        .arg(&opts.work_dir)
        .arg("--plugin-dir")
        .arg(aloha_e2e::target_dir())
        .arg("--shutdown-timeout")
        .arg("10s")
        .env("ALOHA_LOG", "info,aloha_worker=debug");
    // SAFETY: signal, sigemptyset, sigaddset and sigprocmask are async-signal-safe; `set` is
    // initialized before use. std has cleared the mask already, so this is what exec keeps.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    Proc::spawn(&opts.id, cmd, log_dir)
}

#[test]
fn a_worker_under_nohup_with_sigterm_blocked_runs_clean_apps_and_stops_on_sigterm() {
    let mut c = Cluster::start("3s", &[]);
    let opts = c.worker_opts("w1", 1);
    let worker = start_worker_with_a_dirty_signal_state(&c, &opts);
    c.workers.push(worker);
    let api = c.api().clone();
    api.wait_alive_workers(1, T);

    let id = api.submit_cmd(
        "hangup",
        &["sh", "-c", "kill -HUP $$; echo survived"],
        json!({}),
    );
    let app = api.wait_state(&id, "FAILED", T);
    assert_eq!(app["exit_code"], 129, "{app:#}");
    assert_eq!(app["message"], "killed by signal 1 (SIGHUP)", "{app:#}");

    let asked = Instant::now();
    c.workers[0].signal(libc::SIGTERM);
    let status = c.workers[0].wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker did not stop cleanly on SIGTERM: {status:?} after {:?}",
        asked.elapsed()
    );
}
