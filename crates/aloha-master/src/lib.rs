//! # aloha-master
//!
//! The master daemon: it keeps apps and workers, places waiting apps on workers, follows their
//! state, and serves the REST API.
//!
//! ## Layout
//! - [`config`]: flags, env vars and the TOML file, merged into one [`Config`].
//! - [`engine`]: the single writer: batches operations, applies them through the pure
//!   `aloha_core::cluster::Cluster`, commits each batch in one store transaction (group
//!   commit), then answers, publishes the read snapshot and events, and sends worker commands.
//! - [`master`]: one leadership: recovery, and the handle requests go through (operations to
//!   the engine, reads from the snapshot); [`liveness`]: heartbeats, apart from the engine.
//! - [`node`]: the process's role (ALIVE, STANDBY, RECOVERING), the HA loop (campaign, recover,
//!   lead, step down) and routing of requests to the active master; [`election`]: the
//!   [`election::Election`] trait with the etcd and in-memory implementations; [`lease`]: the
//!   leader's lease deadline; [`replica`]: a standby's read replica, followed through etcd's
//!   watch.
//! - [`store`]: the [`store::StateStore`] trait with the redb (embedded), etcd and memory stores.
//! - [`rpc`]: the gRPC MasterService workers call; [`worker_client`]: commands to workers.
//! - [`events`]: the event log; [`listeners`]: listener plugins; [`stream`]: the SSE stream.
//! - [`logs`]: apps' `stdout`/`stderr`, proxied from their workers.
//! - [`http`]: the REST API and [`error`], its one error type; [`metrics`]: Prometheus
//!   metrics; [`submission`]: Spark's REST submission protocol (`--submission-addr`), and
//!   [`jws`], the Spark JWS bearer it may take.
//! - [`clock`]: injected time.

pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod election;
pub mod engine;
pub mod error;
pub mod events;
pub mod http;
pub mod jws;
pub mod lease;
pub mod listeners;
pub mod liveness;
pub mod logs;
pub mod master;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod replica;
pub mod rpc;
pub mod store;
pub mod stream;
pub mod submission;
pub mod worker_client;

use std::sync::Arc;

use aloha_proto::master_service_server::MasterServiceServer;
use aloha_proto::tls::PeerRole;
use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

pub use config::Config;

/// Runs a master until SIGTERM or Ctrl-C: single-node over the embedded store, or HA over etcd
/// when `etcd_endpoints` is set.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let connector: Arc<dyn worker_client::WorkerConnector> =
        Arc::new(worker_client::GrpcWorkerConnector::from_config(&cfg));

    // Bind before anything else so a port clash fails fast and nothing changes.
    let http_listener = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_addr))?;
    let rpc_listener = TcpListener::bind(cfg.rpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", cfg.rpc_addr))?;
    if let Some(addr) = cfg.submission_addr {
        if !addr.ip().is_loopback()
            && cfg.auth_mode() != auth::AuthMode::Required
            && cfg.submission_jws.is_none()
        {
            anyhow::bail!(
                "Spark's REST submission protocol has no authentication of its own: bind \
                 --submission-addr to a loopback address, or use --auth required so that its \
                 requests need a token, or --submission-jws-secret-file so that they need \
                 Spark's JWS bearer (got {addr})"
            );
        }
    }
    let submission_listener = match cfg.submission_addr {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for Spark REST submissions on {addr}"))?,
        ),
    };

    let loaded = listeners::load(&cfg.listeners).map_err(|e| anyhow::anyhow!(e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut single_listeners = None;
    let (node, background) = if cfg.etcd_endpoints.is_empty() {
        let store: Arc<dyn store::StateStore> = Arc::new(store::RedbStore::open_with_cache(
            &cfg.state_dir,
            cfg.redb_cache_mb,
        )?);
        let epoch = master::next_local_epoch(store.as_ref())
            .await
            .context("cannot start a new epoch")?;
        let metrics = Arc::new(metrics::Metrics::new());
        let clock = Arc::new(clock::SystemClock::default());
        let master = master::Master::recover(
            cfg.clone(),
            store.clone(),
            connector,
            clock,
            epoch,
            metrics,
            events::EventLog::new(store.clone()),
        )
        .await
        .context("cannot recover state")?;
        let loops = tokio::spawn(master.clone().run_loops(stop_rx.clone()));
        let node = node::Node::single(cfg.clone(), store, master.clone(), loaded);
        single_listeners = node
            .start_listeners(&master)
            .map_err(|e| anyhow::anyhow!(e))?;
        (node, loops)
    } else {
        node::Node::ha(cfg.clone(), connector, loaded, stop_rx.clone()).await?
    };

    let auth_mode = cfg.auth_mode();
    if auth_mode == auth::AuthMode::Off && !cfg.http_addr.ip().is_loopback() {
        tracing::warn!(http = %cfg.http_addr, "--auth off on a non-loopback address: anyone who reaches it can run anything on the workers");
    }
    tokio::spawn(auth::keep_loaded(
        node.tokens.clone(),
        node.reader(),
        stop_rx.clone(),
    ));
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            // One process-wide crypto provider; a second install is refused harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot load the TLS certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            )
        }
        _ => None,
    };
    let http = serve_http(
        http_listener,
        http::router(node.clone()),
        tls,
        stop_rx.clone(),
    )?;
    let mut rpc_stop = stop_rx.clone();
    let rpc_stopped = async move {
        let _ = rpc_stop.changed().await;
    };
    // With mutual TLS, workers call MasterService and standbys call PeerService, each with
    // the certificate of its role.
    let role = |r| cfg.mutual_tls.as_ref().map(|_| r);
    let routes = tonic::transport::Server::builder()
        .add_service(MasterServiceServer::with_interceptor(
            rpc::MasterRpc::new(node.clone(), stop_rx.clone()),
            require_token(&cfg).with_peer_role(role(PeerRole::Worker)),
        ))
        .add_service(
            aloha_proto::peer_service_server::PeerServiceServer::with_interceptor(
                peer::PeerRpc::new(node.clone()),
                require_token(&cfg).with_peer_role(role(PeerRole::Master)),
            ),
        );
    let rpc: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match &cfg.mutual_tls
    {
        Some(tls) => {
            Box::pin(routes.serve_with_incoming_shutdown(tls.accept(rpc_listener), rpc_stopped))
        }
        None => Box::pin(routes.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(rpc_listener),
            rpc_stopped,
        )),
    };
    let mode = if cfg.etcd_endpoints.is_empty() {
        format!("single-node, state in {}", cfg.state_dir.display())
    } else {
        format!(
            "HA, etcd {} cluster {}",
            cfg.etcd_endpoints.join(","),
            cfg.cluster_name
        )
    };
    let submission_task = match submission_listener {
        None => None,
        Some(listener) => {
            // Open as Spark's own port only on loopback and without a JWS secret.
            let open = cfg.submission_addr.is_some_and(|a| a.ip().is_loopback())
                && cfg.submission_jws.is_none();
            let router = submission::router(node.clone(), open);
            Some(tokio::spawn(serve_http(
                listener,
                router,
                None,
                stop_rx.clone(),
            )?))
        }
    };
    if let Some(addr) = cfg.submission_addr {
        let guard = match (
            cfg.submission_jws.is_some(),
            addr.ip().is_loopback() && cfg.submission_jws.is_none(),
        ) {
            (true, _) if cfg.auth_mode() == auth::AuthMode::Required => {
                "a JWS signed with the submission secret, or a token"
            }
            (true, _) => "a JWS signed with the submission secret",
            (false, true) => "no authentication: loopback only",
            (false, false) => "a token",
        };
        info!(%addr, requests_need = guard, "serving Spark's REST submission protocol");
    }
    if let Some(tls) = &cfg.mutual_tls {
        info!(?tls, "gRPC links use mutual TLS");
    }
    info!(http = %cfg.http_url(), rpc = %cfg.rpc_url(), %mode, "aloha-master ready");

    let http_task = tokio::spawn(http);
    let rpc_task = tokio::spawn(rpc);
    aloha_daemon::shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    // Resign first (HA) so a standby takes over while we finish.
    let _ = background.await;
    node::stop_listeners(single_listeners).await;
    http_task.await??;
    if let Some(task) = submission_task {
        task.await??;
    }
    rpc_task.await??;
    Ok(())
}

/// The join-token check of this master's gRPC services; refusals are logged with the caller.
fn require_token(cfg: &config::Config) -> aloha_proto::auth::RequireToken {
    aloha_proto::auth::RequireToken::new(cfg.join_token.clone(), |from, calls, why| {
        tracing::warn!(
            %from, calls,
            "refused gRPC calls: {why} (reported at most every 10 s per address)"
        );
    })
}

/// How long a client may take to send a request's headers before its connection is closed:
/// slow-header (slowloris) connections must not pile up.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`, then lets requests in
/// flight finish for up to 10 s. Request headers must arrive within [`HEADER_READ_TIMEOUT`].
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>>
{
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = stop.changed().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let listener = listener.into_std()?;
    let service = router.into_make_service();
    fn limits(b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
        b.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
    }
    Ok(match tls {
        Some(tls) => {
            let mut server = axum_server::from_tcp_rustls(listener, tls);
            limits(server.http_builder());
            Box::pin(server.handle(handle).serve(service))
        }
        None => {
            let mut server = axum_server::from_tcp(listener);
            limits(server.http_builder());
            Box::pin(server.handle(handle).serve(service))
        }
    })
}
