//! # aloha-master
//!
//! The master daemon: it keeps apps and workers, places waiting apps on workers, follows their
//! state, and serves the REST API.
//!
//! ## Layout
//! - [`config`]: flags, env vars and the TOML file, merged into one [`Config`].
//! - [`master`]: the state and every operation on it (submit, kill, register, report, schedule,
//!   liveness), built on the pure decisions of `aloha-core`.
//! - [`store`]: the [`store::StateStore`] trait with the redb (embedded) and memory stores.
//! - [`rpc`]: the gRPC MasterService workers call; [`worker_client`]: commands to workers.
//! - [`http`]: the REST API; [`metrics`]: Prometheus metrics.
//! - [`clock`]: injected time.

pub mod clock;
pub mod config;
pub mod http;
pub mod master;
pub mod metrics;
pub mod rpc;
pub mod store;
pub mod worker_client;

use std::sync::Arc;

use aloha_proto::master_service_server::MasterServiceServer;
use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

pub use config::Config;

/// Runs a master until SIGTERM or Ctrl-C.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let store: Arc<dyn store::StateStore> = Arc::new(store::RedbStore::open(&cfg.state_dir)?);
    let connector = Arc::new(worker_client::GrpcWorkerConnector::default());
    let clock = Arc::new(clock::SystemClock::default());

    // Bind before recovering so a port clash fails fast and nothing else changes.
    let http_listener = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_addr))?;
    let rpc_listener = TcpListener::bind(cfg.rpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", cfg.rpc_addr))?;

    let master = master::Master::recover(cfg.clone(), store, connector, clock)
        .await
        .context("cannot recover state")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(master.clone().run_loops(stop_rx.clone()));

    let mut http_stop = stop_rx.clone();
    let http = axum::serve(http_listener, http::router(master.clone())).with_graceful_shutdown(
        async move {
            let _ = http_stop.changed().await;
        },
    );
    let mut rpc_stop = stop_rx.clone();
    let rpc = tonic::transport::Server::builder()
        .add_service(MasterServiceServer::new(rpc::MasterRpc::new(
            master.clone(),
        )))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(rpc_listener),
            async move {
                let _ = rpc_stop.changed().await;
            },
        );
    info!(http = %cfg.http_url(), rpc = %cfg.rpc_url(), epoch = master.epoch(),
          state_dir = %cfg.state_dir.display(), "aloha-master ready");

    let http_task = tokio::spawn(async move { http.await });
    let rpc_task = tokio::spawn(rpc);
    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    http_task.await??;
    rpc_task.await??;
    let _ = loops.await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Sets up logging to stderr with the configured filter (`RUST_LOG` wins when set).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
