//! The gRPC MasterService workers call.

use std::sync::Arc;

use aloha_proto as pb;
use aloha_proto::master_service_server::MasterService;
use tonic::{Request, Response, Status};

use crate::master::MasterError;
use crate::node::Node;

/// Adapts [`Master`] to the generated tonic trait.
pub struct MasterRpc {
    node: Arc<Node>,
}

impl MasterRpc {
    /// Serves for `node`: its active master when it leads; otherwise it answers "not the
    /// leader" with the leader's gRPC address so workers move there.
    pub fn new(node: Arc<Node>) -> Self {
        MasterRpc { node }
    }

    fn leader_rpc(&self) -> String {
        self.node.leader().map(|l| l.rpc).unwrap_or_default()
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
        let _t = self.node.metrics.rpc_server_timer("register_worker");
        let Some(master) = self.node.active() else {
            return Ok(Response::new(pb::RegisterWorkerResponse {
                accepted: false,
                leader_rpc_address: self.leader_rpc(),
                message: "not leader".into(),
                ..Default::default()
            }));
        };
        master
            .register_worker(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let _t = self.node.metrics.rpc_server_timer("heartbeat");
        let Some(master) = self.node.active() else {
            return Ok(Response::new(pb::HeartbeatResponse {
                accepted: false,
                leader_rpc_address: self.leader_rpc(),
                ..Default::default()
            }));
        };
        Ok(Response::new(
            master.heartbeat(&req.into_inner().worker_id).await,
        ))
    }

    async fn report_app_state(
        &self,
        req: Request<pb::AppStateReport>,
    ) -> Result<Response<pb::ReportAppStateResponse>, Status> {
        let _t = self.node.metrics.rpc_server_timer("report_app_state");
        let Some(master) = self.node.active() else {
            return Ok(Response::new(pb::ReportAppStateResponse {
                accepted: false,
                kill: false,
                message: "not leader".into(),
            }));
        };
        master
            .report(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
