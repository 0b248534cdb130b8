//! The gRPC WorkerService the master calls.

use std::pin::Pin;
use std::sync::Arc;

use aloha_proto as pb;
use aloha_proto::streams::until_stopped;
use aloha_proto::worker_service_server::WorkerService;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::logs::{Chunk, LogError, LogQuery, Logs};
use crate::worker::Worker;

/// The answers of the leader's launch stream.
pub type LaunchAnswers =
    Pin<Box<dyn Stream<Item = Result<pb::LaunchAppResponse, Status>> + Send + 'static>>;

/// Launches one app attempt (a `LaunchApp` call or one message of `LaunchApps`).
fn launch(worker: &Arc<Worker>, req: pb::LaunchAppRequest) -> pb::LaunchAppResponse {
    let (app_id, attempt, epoch) = (req.app_id.clone(), req.attempt, req.epoch);
    let (accepted, message) = match worker.launch(req) {
        Ok(()) => {
            info!(%app_id, attempt, epoch, "launch accepted");
            (true, String::new())
        }
        Err(message) => {
            warn!(%app_id, attempt, epoch, "launch refused: {message}");
            (false, message)
        }
    };
    pb::LaunchAppResponse {
        accepted,
        message,
        app_id,
        attempt,
    }
}

/// Adapts [`Worker`] and its [`Logs`] to the generated tonic trait.
pub struct WorkerRpc {
    worker: Arc<Worker>,
    logs: Arc<Logs>,
    /// Turns true when the worker's server stops: the leader's launch stream ends then.
    stop: watch::Receiver<bool>,
}

impl WorkerRpc {
    /// Wraps a worker whose server stops when `stop` turns true (so its graceful shutdown
    /// does not wait for the master to close the launch stream).
    pub fn new(worker: Arc<Worker>, stop: watch::Receiver<bool>) -> Self {
        let logs = Arc::new(Logs::of(worker.clone()));
        WorkerRpc { worker, logs, stop }
    }
}

fn log_query(r: pb::ReadLogRequest) -> Result<LogQuery, Status> {
    LogQuery::new(&r.app_id, r.attempt, &r.stream, r.offset, r.limit).map_err(status)
}

fn log_chunk(c: Chunk) -> pb::LogChunk {
    pb::LogChunk {
        data: c.data,
        offset: c.offset,
        next_offset: c.next_offset,
        size: c.size,
        ended: c.ended,
    }
}

/// The one mapping of log errors to gRPC codes (the master maps the codes to HTTP).
fn status(e: LogError) -> Status {
    match e {
        LogError::BadRequest(m) => Status::invalid_argument(m),
        LogError::NotFound(m) => Status::not_found(m),
        LogError::Busy(m) => Status::resource_exhausted(m),
        e @ LogError::Io(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn launch_app(
        &self,
        req: Request<pb::LaunchAppRequest>,
    ) -> Result<Response<pb::LaunchAppResponse>, Status> {
        Ok(Response::new(launch(&self.worker, req.into_inner())))
    }

    type LaunchAppsStream = LaunchAnswers;

    async fn launch_apps(
        &self,
        req: Request<Streaming<pb::LaunchAppRequest>>,
    ) -> Result<Response<Self::LaunchAppsStream>, Status> {
        let worker = self.worker.clone();
        // In order: each launch is answered before the next is read.
        let answers = req
            .into_inner()
            .map(move |req| req.map(|req| launch(&worker, req)));
        Ok(Response::new(Box::pin(until_stopped(
            answers,
            self.stop.clone(),
        ))))
    }

    async fn kill_app(
        &self,
        req: Request<pb::KillAppRequest>,
    ) -> Result<Response<pb::KillAppResponse>, Status> {
        let req = req.into_inner();
        let (app_id, attempt) = (req.app_id.clone(), req.attempt);
        Ok(Response::new(match self.worker.kill(req) {
            Ok(()) => pb::KillAppResponse {
                accepted: true,
                message: String::new(),
            },
            Err(message) => {
                warn!(%app_id, attempt, "kill refused: {message}");
                pb::KillAppResponse {
                    accepted: false,
                    message,
                }
            }
        }))
    }

    async fn read_log(
        &self,
        req: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::LogChunk>, Status> {
        let q = log_query(req.into_inner())?;
        let chunk = self.logs.read(&q).await.map_err(status)?;
        Ok(Response::new(log_chunk(chunk)))
    }

    type FollowLogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

    async fn follow_log(
        &self,
        req: Request<pb::ReadLogRequest>,
    ) -> Result<Response<Self::FollowLogStream>, Status> {
        let q = log_query(req.into_inner())?;
        let (app_id, attempt) = (q.app_id.clone(), q.attempt);
        let rx = self.logs.follow(q).await.map_err(|e| {
            warn!(%app_id, attempt, "log follow refused: {e}");
            status(e)
        })?;
        let stream = ReceiverStream::new(rx).map(|r| r.map(log_chunk).map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }
}
