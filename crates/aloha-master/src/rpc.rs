//! The gRPC MasterService workers call. Wire types stop here: requests are converted to the
//! core's [`Registration`] and [`WorkerReport`], answers back to `pb` types.

use std::pin::Pin;
use std::sync::Arc;

use aloha_core::cluster::{Registration, ReportOutcome, WorkerReport};
use aloha_core::{AppId, AppState, WorkerId};
use aloha_proto as pb;
use aloha_proto::master_service_server::MasterService;
use aloha_proto::streams::until_stopped;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::master::{HeartbeatAnswer, MasterError};
use crate::node::Node;

/// Adapts [`Master`] to the generated tonic trait.
pub struct MasterRpc {
    node: Arc<Node>,
    /// Turns true when the master stops: workers' report streams end then.
    stop: watch::Receiver<bool>,
}

impl MasterRpc {
    /// Serves for `node`: its active master when it leads; otherwise it answers "not the
    /// leader" with the leader's gRPC address so workers move there.
    /// Its streams end when `stop` turns true, so the server's graceful shutdown does not
    /// wait for the workers to close them.
    pub fn new(node: Arc<Node>, stop: watch::Receiver<bool>) -> Self {
        MasterRpc { node, stop }
    }

    fn leader_rpc(&self) -> String {
        self.node.leader().map(|l| l.rpc).unwrap_or_default()
    }
}

fn status(e: MasterError) -> Status {
    match e {
        MasterError::BadRequest(m) => Status::invalid_argument(m),
        // The only conflict a registration meets: the id belongs to another live process.
        MasterError::Conflict(m) => Status::already_exists(m),
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

// Limits of what a worker may send. Generous for real workers, small enough that one
// message cannot bloat the store, the API answers or the kinds submissions may use.

/// Longest worker id; ids are made of [`id_char`]s.
pub const MAX_WORKER_ID: usize = 128;
/// Most cores one worker may offer.
pub const MAX_CORES: u32 = 65_536;
/// Most memory one worker may offer, MiB (64 TiB).
pub const MAX_MEMORY_MB: u64 = 64 << 20;
/// Most kinds one worker may provide; each is 1..=[`MAX_KIND`] bytes of `[a-z0-9_-]`.
pub const MAX_KINDS: usize = 64;
/// Longest kind.
pub const MAX_KIND: usize = 64;
/// Longest instance token.
pub const MAX_INSTANCE: usize = 128;
/// Most apps one registration lists, and most reports in one batch.
pub const MAX_APPS: usize = 100_000;
/// Most plugin errors kept from a registration (the rest are counted in one line).
pub const MAX_PLUGIN_ERRORS: usize = 64;
/// Longest plugin error or report message kept, bytes (longer ones are cut).
pub const MAX_TEXT: usize = 4096;
/// Most details one report may carry, and the longest key.
pub const MAX_DETAILS: usize = 64;
/// Longest detail key, bytes.
pub const MAX_DETAIL_KEY: usize = 128;

/// Characters of worker ids and instance tokens.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// `Err` naming the field unless `id` is 1..=`max` [`id_char`]s.
fn check_id(field: &str, id: &str, max: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field} is required"));
    }
    if id.len() > max {
        return Err(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|&c| !id_char(c)) {
        return Err(format!(
            "{field} {:?} contains {:?}; only letters, digits and . _ : - are allowed",
            truncate(id, 64),
            c
        ));
    }
    Ok(())
}

/// A worker id from the wire.
fn worker_id(id: &str) -> Result<WorkerId, Status> {
    check_id("worker_id", id, MAX_WORKER_ID).map_err(Status::invalid_argument)?;
    Ok(WorkerId(id.to_string()))
}

/// `Err` unless `addr` is `ip:port` or `hostname:port` (port 1..=65535).
fn check_address(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "address {:?} is not host:port: {why}",
            truncate(addr, 300)
        ))
    };
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("no port");
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        return bad("the port must be 1..=65535");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return bad("the host is neither an IP address nor a hostname");
    }
    Ok(())
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Free text from a worker, cut to [`MAX_TEXT`]: it is only shown, so it is kept rather than
/// refused.
fn text(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        s.to_string()
    } else {
        format!("{}… (cut from {} bytes)", truncate(s, MAX_TEXT), s.len())
    }
}

/// A report from the wire; `Err` when it is malformed (its app id is not an app id, its
/// attempt is 0, its state names no [`AppState`], too many or too long details).
pub fn report_from_wire(r: &pb::AppStateReport) -> Result<WorkerReport, String> {
    let app = AppId(r.app_id.clone());
    if app.seq().is_none() {
        return Err(format!(
            "app_id {:?} is not an app id (app-<14 digits>-<digits>)",
            truncate(&r.app_id, 64)
        ));
    }
    if r.attempt == 0 {
        return Err(format!("{app}: attempt must be 1 or more"));
    }
    let state: AppState = r
        .state
        .parse()
        .map_err(|e: aloha_core::state::ParseStateError| e.to_string())?;
    if r.details.len() > MAX_DETAILS {
        return Err(format!(
            "{app}: {} details; at most {MAX_DETAILS} are allowed",
            r.details.len()
        ));
    }
    if let Some(k) = r
        .details
        .keys()
        .find(|k| k.is_empty() || k.len() > MAX_DETAIL_KEY)
    {
        return Err(format!(
            "{app}: detail key {:?} must be 1..={MAX_DETAIL_KEY} bytes",
            truncate(k, 64)
        ));
    }
    Ok(WorkerReport {
        app,
        attempt: r.attempt,
        state,
        exit_code: r.exit_code,
        message: Some(text(&r.message)).filter(|m| !m.is_empty()),
        worker_shutdown: r.worker_shutdown,
        details: r
            .details
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
    })
}

/// Checks a registration's identity and offer; `Err` says which field is wrong.
fn check_registration(req: &pb::RegisterWorkerRequest) -> Result<(), String> {
    check_id("worker_id", &req.worker_id, MAX_WORKER_ID)?;
    if !req.instance.is_empty() {
        check_id("instance", &req.instance, MAX_INSTANCE)?;
    }
    check_address(&req.address)?;
    if !(1..=MAX_CORES).contains(&req.cores) {
        return Err(format!("cores must be 1..={MAX_CORES} (got {})", req.cores));
    }
    if req.memory_mb > MAX_MEMORY_MB {
        return Err(format!(
            "memory_mb must be at most {MAX_MEMORY_MB} (64 TiB; got {})",
            req.memory_mb
        ));
    }
    if req.kinds.len() > MAX_KINDS {
        return Err(format!(
            "{} kinds; at most {MAX_KINDS} are allowed",
            req.kinds.len()
        ));
    }
    for k in &req.kinds {
        let ok = !k.is_empty()
            && k.len() <= MAX_KIND
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(format!(
                "kind {:?} must be 1..={MAX_KIND} characters of a-z, 0-9, _ and -",
                truncate(k, 80)
            ));
        }
    }
    if req.apps.len() > MAX_APPS {
        return Err(format!(
            "{} apps listed; at most {MAX_APPS} are allowed",
            req.apps.len()
        ));
    }
    Ok(())
}

/// A registration from the wire; `Err` (INVALID_ARGUMENT) when its identity or offer is
/// malformed (see [`check_registration`]). Listed apps that are malformed are left out (and
/// logged): they cannot be reconciled, and the worker is told to kill nothing it did not list.
/// Plugin errors are informational: too many or too long ones are cut, not refused.
pub fn registration_from_wire(req: pb::RegisterWorkerRequest) -> Result<Registration, Status> {
    check_registration(&req).map_err(Status::invalid_argument)?;
    let mut plugin_errors: Vec<String> = req
        .plugin_errors
        .iter()
        .take(MAX_PLUGIN_ERRORS)
        .map(|e| text(e))
        .collect();
    if req.plugin_errors.len() > MAX_PLUGIN_ERRORS {
        plugin_errors.push(format!(
            "… and {} more",
            req.plugin_errors.len() - MAX_PLUGIN_ERRORS
        ));
    }
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
    Ok(Registration {
        id: WorkerId(req.worker_id),
        address: req.address,
        cores: req.cores,
        memory_mb: req.memory_mb,
        kinds: req.kinds,
        plugin_errors,
        apps,
        instance: Some(req.instance).filter(|i| !i.is_empty()),
    })
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
        let req = req.into_inner();
        if self
            .node
            .worker_epoch_ahead(&req.worker_id, req.max_epoch_seen, master.epoch())
        {
            return Err(Status::failed_precondition(format!(
                "this worker already followed epoch {}, above this leader's {}: the master's \
                 state store went back in time; the masters refuse to lead until an operator \
                 accepts the restore (POST /api/v1/cluster/accept-restore)",
                req.max_epoch_seen,
                master.epoch()
            )));
        }
        let reg = registration_from_wire(req)?;
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
        beat(&self.node, req.into_inner()).await.map(Response::new)
    }

    type HeartbeatsStream = BeatStream;

    async fn heartbeats(
        &self,
        req: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        let node = self.node.clone();
        // One answer per beat, in order; an error answer ends the stream (the worker
        // registers again), as it fails one unary call.
        let answers = req.into_inner().then(move |hb| {
            let node = node.clone();
            async move {
                let _t = node.metrics.rpc_server_timer("heartbeats");
                beat(&node, hb?).await
            }
        });
        Ok(Response::new(Box::pin(until_stopped(
            answers,
            self.stop.clone(),
        ))))
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
        let wid = worker_id(&r.worker_id)?;
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
        match master.report(wid, report).await {
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
        apply_reports(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    type StreamAppStatesStream = ReportStream;

    async fn stream_app_states(
        &self,
        req: Request<Streaming<pb::ReportAppStatesRequest>>,
    ) -> Result<Response<Self::StreamAppStatesStream>, Status> {
        let node = self.node.clone();
        // One batch at a time, in order; an error answer ends the stream (the worker opens
        // another), as it fails one unary call.
        let answers = req.into_inner().then(move |batch| {
            let node = node.clone();
            async move {
                let _t = node.metrics.rpc_server_timer("stream_app_states");
                apply_reports(&node, batch?).await
            }
        });
        Ok(Response::new(Box::pin(until_stopped(
            answers,
            self.stop.clone(),
        ))))
    }
}

/// The answers of a worker's heartbeat stream.
pub type BeatStream =
    Pin<Box<dyn Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send + 'static>>;

/// Counts one heartbeat: the unary `Heartbeat` and each message of `Heartbeats`. A master
/// that does not lead answers with the leader's address.
async fn beat(node: &Node, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
    let leader_rpc = || node.leader().map(|l| l.rpc).unwrap_or_default();
    let Some(master) = node.active() else {
        return Ok(pb::HeartbeatResponse {
            accepted: false,
            leader_rpc_address: leader_rpc(),
            ..Default::default()
        });
    };
    let id = worker_id(&req.worker_id)?;
    let answer = master.heartbeat(id.as_str()).await;
    Ok(match answer {
        HeartbeatAnswer::NotLeader => pb::HeartbeatResponse {
            accepted: false,
            leader_rpc_address: leader_rpc(),
            ..Default::default()
        },
        HeartbeatAnswer::Ok | HeartbeatAnswer::Reregister => pb::HeartbeatResponse {
            reregister: answer == HeartbeatAnswer::Reregister,
            accepted: true,
            leader_rpc_address: master.config().rpc_url(),
            epoch: master.epoch(),
        },
    })
}

/// The answers of a worker's report stream.
pub type ReportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ReportAppStatesResponse, Status>> + Send + 'static>>;

/// Applies one worker's batch of reports in order (one engine operation, one commit): the
/// unary `ReportAppStates` and each message of `StreamAppStates`.
async fn apply_reports(
    node: &Node,
    req: pb::ReportAppStatesRequest,
) -> Result<pb::ReportAppStatesResponse, Status> {
    let all = |a: pb::ReportAppStateResponse| pb::ReportAppStatesResponse {
        results: vec![a; req.reports.len()],
    };
    let Some(master) = node.active() else {
        return Ok(all(not_leader_answer()));
    };
    let wid = worker_id(&req.worker_id)?;
    if req.reports.len() > MAX_APPS {
        return Err(Status::invalid_argument(format!(
            "{} reports in one call; at most {MAX_APPS} are allowed",
            req.reports.len()
        )));
    }
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
    let outcomes = match master.reports(wid, readable).await {
        Ok(o) => o,
        Err(MasterError::NotLeader { .. }) => return Ok(all(not_leader_answer())),
        Err(e) => return Err(status(e)),
    };
    let mut outcomes = outcomes.into_iter();
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| answer(outcomes.next().unwrap_or(ReportOutcome::Done))))
        .collect();
    Ok(pb::ReportAppStatesResponse { results })
}
