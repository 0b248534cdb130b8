//! The gRPC WorkerService the master calls.

use std::sync::Arc;

use aloha_proto as pb;
use aloha_proto::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::worker::Worker;

/// Adapts [`Worker`] to the generated tonic trait.
pub struct WorkerRpc {
    worker: Arc<Worker>,
}

impl WorkerRpc {
    /// Wraps a worker.
    pub fn new(worker: Arc<Worker>) -> Self {
        WorkerRpc { worker }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn launch_app(
        &self,
        req: Request<pb::LaunchAppRequest>,
    ) -> Result<Response<pb::LaunchAppResponse>, Status> {
        let req = req.into_inner();
        let (app_id, attempt, epoch) = (req.app_id.clone(), req.attempt, req.epoch);
        Ok(Response::new(match self.worker.launch(req) {
            Ok(()) => {
                info!(%app_id, attempt, epoch, "launch accepted");
                pb::LaunchAppResponse {
                    accepted: true,
                    message: String::new(),
                }
            }
            Err(message) => {
                warn!(%app_id, attempt, epoch, "launch refused: {message}");
                pb::LaunchAppResponse {
                    accepted: false,
                    message,
                }
            }
        }))
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
}
