//! # aloha-worker
//!
//! The worker daemon: it registers with the leading master, heartbeats, runs apps through
//! `Application` plugins loaded from `*.so` files, reports every state change, and follows the
//! leader across master restarts and failovers.
//!
//! ## Layout
//! - [`config`]: flags, env vars and the TOML file, merged into one [`Config`].
//! - [`worker`]: the app table; one OS thread per app attempt drives its plugin.
//! - [`session`]: registration, heartbeats and ordered, acknowledged report delivery.
//! - [`rpc`]: the gRPC WorkerService (launch, kill, logs) the master calls.
//! - [`logs`]: the attempts' `stdout`/`stderr`, read by range or followed as they grow.
//! - `src/bin/aloha-supervise.rs`: the process supervisor, a separate small binary that leads
//!   each app's process group and kills it when the worker dies; handed to plugins in
//!   `AppContext::supervisor` (see [`default_supervisor`]).

pub mod config;
pub mod logs;
pub mod rpc;
pub mod session;
pub mod spares;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aloha_proto::tls::PeerRole;
use aloha_proto::worker_service_server::WorkerServiceServer;
use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

pub use config::Config;

/// The directory plugins are loaded from when none is configured: the binary's own.
pub fn default_plugin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The file name of the process supervisor the worker ships with (`src/bin/aloha-supervise.rs`).
pub const SUPERVISOR_NAME: &str = "aloha-supervise";

/// The supervisor handed to plugins: `aloha-supervise` beside the worker's own binary, if it is
/// there (cargo and the installer put them side by side).
pub fn default_supervisor() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(SUPERVISOR_NAME);
    path.is_file().then_some(path)
}

/// Runs a worker until SIGTERM or Ctrl-C, then stops its apps, reports them, and returns.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("cannot create work dir {}", cfg.work_dir.display()))?;
    let plugin_dir = cfg.plugin_dir.clone().unwrap_or_else(default_plugin_dir);
    let (plugins, plugin_errors) = aloha_plugin::host::scan_dir(&plugin_dir);
    for e in &plugin_errors {
        error!("plugin skipped: {e}");
    }
    if plugins.is_empty() {
        warn!(dir = %plugin_dir.display(), "no Application plugin found; this worker can run nothing");
    }
    for p in &plugins {
        info!(kind = p.kind(), path = %p.path().display(), "plugin loaded");
    }
    let supervisor = default_supervisor();
    match &supervisor {
        Some(path) => info!(path = %path.display(), "apps run under the process supervisor"),
        None => warn!(
            "no {SUPERVISOR_NAME} beside the worker binary: apps run without the process \
             supervisor, so the children of an app may outlive the worker if it is killed"
        ),
    }

    let listener = TcpListener::bind(cfg.rpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.rpc_addr))?;
    let bound = listener.local_addr()?;
    let address = cfg
        .advertise_addr
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let id = cfg.id.clone().unwrap_or_else(|| {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("worker-{host}-{}", bound.port())
    });
    let worker = Arc::new(worker::Worker::new(
        cfg.clone(),
        id.clone(),
        address.clone(),
        plugins,
        plugin_errors,
        supervisor,
    ));
    info!(worker_id = %id, %address, cores = worker.cores, memory_mb = worker.memory_mb,
          kinds = ?worker.kinds(), work_dir = %cfg.work_dir.display(), "aloha-worker ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (rpc_stop_tx, mut rpc_stop_rx) = tokio::sync::watch::channel(false);
    let routes =
        tonic::transport::Server::builder().add_service(WorkerServiceServer::with_interceptor(
            rpc::WorkerRpc::new(worker.clone(), rpc_stop_rx.clone()),
            aloha_proto::auth::RequireToken::new(cfg.join_token.clone(), |from, calls, why| {
                warn!(
                    %from, calls,
                    "refused gRPC calls: {why} (reported at most every 10 s per address)"
                );
            })
            // With mutual TLS only masters may command this worker.
            .with_peer_role(cfg.mutual_tls.as_ref().map(|_| PeerRole::Master)),
        ));
    let stopped = async move {
        let _ = rpc_stop_rx.changed().await;
    };
    let server = match &cfg.mutual_tls {
        Some(tls) => {
            info!(?tls, "gRPC links use mutual TLS");
            tokio::spawn(routes.serve_with_incoming_shutdown(tls.accept(listener), stopped))
        }
        None => tokio::spawn(routes.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stopped,
        )),
    };
    let session = session::Session::new(
        worker.clone(),
        cfg.masters.clone(),
        cfg.join_token.clone(),
        cfg.mutual_tls.as_ref().map(|t| t.dialer(PeerRole::Master)),
    );
    let session_task = tokio::spawn(session.run(stop_rx));

    aloha_daemon::shutdown_signal().await;
    info!("shutting down: stopping apps");
    worker.shutdown_all();
    if !worker.wait_apps_stopped(cfg.shutdown_timeout).await {
        warn!(
            "some apps did not stop within {}",
            humantime::format_duration(cfg.shutdown_timeout)
        );
    }
    // Give the session a moment to deliver the final reports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while worker.pending_reports() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if worker.pending_reports() > 0 {
        warn!(
            pending = worker.pending_reports(),
            "exiting with undelivered reports"
        );
    }
    let _ = stop_tx.send(true);
    let _ = rpc_stop_tx.send(true);
    let _ = session_task.await;
    server.await??;
    info!("stopped");
    Ok(())
}
