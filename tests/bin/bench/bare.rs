//! The hidden `bare-server` subcommand: an axum 0.8 endpoint doing the least a submission
//! needs — parse the JSON into `aloha_core::SubmitRequest`, answer `201` with a small JSON body —
//! and nothing else (no validation, no store, no lock). `http` starts it as a separate process,
//! like the masters, so the three targets share the machine the same way: its rate is the
//! ceiling of HTTP + JSON on this machine, and the masters' rates are read against it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use aloha_core::SubmitRequest;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub(crate) struct BareArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn submit(Json(req): Json<SubmitRequest>) -> (StatusCode, Json<Value>) {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        Json(json!({"id": format!("app-{n:08}"), "name": req.name, "state": "SUBMITTED"})),
    )
}

pub(crate) fn serve(a: &BareArgs) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare-server: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let app = Router::new()
            .route("/api/v1/apps", post(submit))
            .route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
        axum::serve(listener, app).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-server: {e}");
            ExitCode::FAILURE
        }
    }
}
