//! The gRPC MasterService workers call.

use std::sync::Arc;

use aloha_proto as pb;
use aloha_proto::master_service_server::MasterService;
use tonic::{Request, Response, Status};

use crate::master::{Master, MasterError};

/// Adapts [`Master`] to the generated tonic trait.
pub struct MasterRpc {
    master: Arc<Master>,
}

impl MasterRpc {
    /// Wraps a master.
    pub fn new(master: Arc<Master>) -> Self {
        MasterRpc { master }
    }
}

fn status(e: MasterError) -> Status {
    match e {
        MasterError::BadRequest(m) => Status::invalid_argument(m),
        MasterError::NotLeader { .. } => Status::failed_precondition("not leader"),
        MasterError::Store(e) => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl MasterService for MasterRpc {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let _t = self.master.metrics.http_timer("rpc:register_worker");
        self.master
            .register_worker(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let _t = self.master.metrics.http_timer("rpc:heartbeat");
        Ok(Response::new(
            self.master.heartbeat(&req.into_inner().worker_id).await,
        ))
    }

    async fn report_app_state(
        &self,
        req: Request<pb::AppStateReport>,
    ) -> Result<Response<pb::ReportAppStateResponse>, Status> {
        let _t = self.master.metrics.http_timer("rpc:report_app_state");
        self.master
            .report(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
