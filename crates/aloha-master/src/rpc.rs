//! The gRPC MasterService workers call. Wire types stop here: requests are converted to the
//! core's [`Registration`] and [`WorkerReport`], answers back to `pb` types.

use std::sync::Arc;

use aloha_core::cluster::{Registration, ReportOutcome, WorkerReport};
use aloha_core::{AppId, AppState, WorkerId};
use aloha_proto as pb;
use aloha_proto::master_service_server::MasterService;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::master::{HeartbeatAnswer, MasterError};
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

/// A report's outcome on the wire.
fn answer(outcome: ReportOutcome) -> pb::ReportAppStateResponse {
    let (accepted, kill, message) = match outcome {
        ReportOutcome::Done => (true, false, String::new()),
        ReportOutcome::Kill(m) => (true, true, m),
        // Refused for good: the worker must not resend it.
        ReportOutcome::Refused(m) => (true, false, m),
        // Keep the report on the worker: it re-registers and lists the app.
        ReportOutcome::NotRegistered(m) => (false, false, m),
    };
    pb::ReportAppStateResponse {
        accepted,
        kill,
        message,
    }
}

fn not_leader_answer() -> pb::ReportAppStateResponse {
    pb::ReportAppStateResponse {
        accepted: false,
        kill: false,
        message: "not leader".into(),
    }
}

/// A report from the wire; `Err` when its state names no [`AppState`].
pub fn report_from_wire(r: &pb::AppStateReport) -> Result<WorkerReport, String> {
    let state: AppState = r
        .state
        .parse()
        .map_err(|e: aloha_core::state::ParseStateError| e.to_string())?;
    Ok(WorkerReport {
        app: AppId(r.app_id.clone()),
        attempt: r.attempt,
        state,
        exit_code: r.exit_code,
        message: Some(r.message.clone()).filter(|m| !m.is_empty()),
        worker_shutdown: r.worker_shutdown,
        details: r.details.clone().into_iter().collect(),
    })
}

/// A registration from the wire. Listed apps whose state is unreadable are left out (and
/// logged): they cannot be reconciled, and the worker is told to kill nothing it did not list.
pub fn registration_from_wire(req: pb::RegisterWorkerRequest) -> Registration {
    let apps = req
        .apps
        .iter()
        .filter_map(|r| match report_from_wire(r) {
            Ok(rep) => Some(rep),
            Err(e) => {
                warn!(worker_id = %req.worker_id, app_id = %r.app_id, "refused listed app: {e}");
                None
            }
        })
        .collect();
    Registration {
        id: WorkerId(req.worker_id),
        address: req.address,
        cores: req.cores,
        memory_mb: req.memory_mb,
        kinds: req.kinds,
        plugin_errors: req.plugin_errors,
        apps,
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
        let reg = registration_from_wire(req.into_inner());
        match master.register_worker(reg).await {
            Ok(kill) => Ok(Response::new(pb::RegisterWorkerResponse {
                accepted: true,
                leader_rpc_address: master.config().rpc_url(),
                epoch: master.epoch(),
                heartbeat_interval_ms: master.config().heartbeat_interval().as_millis() as u64,
                kill: kill
                    .into_iter()
                    .map(|(app, attempt)| pb::AppRef {
                        app_id: app.0,
                        attempt,
                    })
                    .collect(),
                message: String::new(),
            })),
            Err(MasterError::NotLeader { .. }) => Ok(Response::new(pb::RegisterWorkerResponse {
                accepted: false,
                leader_rpc_address: self.leader_rpc(),
                message: "not leader".into(),
                ..Default::default()
            })),
            Err(e) => Err(status(e)),
        }
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
        let answer = master.heartbeat(&req.into_inner().worker_id).await;
        Ok(Response::new(match answer {
            HeartbeatAnswer::NotLeader => pb::HeartbeatResponse {
                accepted: false,
                leader_rpc_address: self.leader_rpc(),
                ..Default::default()
            },
            HeartbeatAnswer::Ok | HeartbeatAnswer::Reregister => pb::HeartbeatResponse {
                reregister: answer == HeartbeatAnswer::Reregister,
                accepted: true,
                leader_rpc_address: master.config().rpc_url(),
                epoch: master.epoch(),
            },
        }))
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
        let r = req.into_inner();
        let report = match report_from_wire(&r) {
            Ok(report) => report,
            Err(e) => {
                warn!(app_id = %r.app_id, worker_id = %r.worker_id, "refused report: {e}");
                // Refused for good: the worker must not resend it.
                return Ok(Response::new(pb::ReportAppStateResponse {
                    accepted: true,
                    kill: false,
                    message: e,
                }));
            }
        };
        match master.report(WorkerId(r.worker_id.clone()), report).await {
            Ok(outcome) => Ok(Response::new(answer(outcome))),
            Err(MasterError::NotLeader { .. }) => Ok(Response::new(not_leader_answer())),
            Err(e) => Err(status(e)),
        }
    }

    async fn report_app_states(
        &self,
        req: Request<pb::ReportAppStatesRequest>,
    ) -> Result<Response<pb::ReportAppStatesResponse>, Status> {
        let _t = self.node.metrics.rpc_server_timer("report_app_states");
        let req = req.into_inner();
        let all = |a: pb::ReportAppStateResponse| pb::ReportAppStatesResponse {
            results: vec![a; req.reports.len()],
        };
        let Some(master) = self.node.active() else {
            return Ok(Response::new(all(not_leader_answer())));
        };
        if req.reports.iter().any(|r| r.worker_id != req.worker_id) {
            return Err(Status::invalid_argument(
                "every report must name the worker that sends the batch",
            ));
        }
        // Unreadable reports are refused for good here; the rest go to the engine together.
        let mut results: Vec<Option<pb::ReportAppStateResponse>> = Vec::new();
        let mut readable = Vec::new();
        for r in &req.reports {
            match report_from_wire(r) {
                Ok(rep) => {
                    results.push(None);
                    readable.push(rep);
                }
                Err(e) => {
                    warn!(app_id = %r.app_id, worker_id = %r.worker_id, "refused report: {e}");
                    results.push(Some(pb::ReportAppStateResponse {
                        accepted: true,
                        kill: false,
                        message: e,
                    }));
                }
            }
        }
        let outcomes = match master
            .reports(WorkerId(req.worker_id.clone()), readable)
            .await
        {
            Ok(o) => o,
            Err(MasterError::NotLeader { .. }) => {
                return Ok(Response::new(all(not_leader_answer())))
            }
            Err(e) => return Err(status(e)),
        };
        let mut outcomes = outcomes.into_iter();
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| answer(outcomes.next().unwrap_or(ReportOutcome::Done))))
            .collect();
        Ok(Response::new(pb::ReportAppStatesResponse { results }))
    }
}
