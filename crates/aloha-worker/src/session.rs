//! The worker's link to the leader: find it among the configured masters, register, heartbeat,
//! deliver reports in order, and start over when the master restarts or leadership moves.

use std::sync::Arc;
use std::time::Duration;

use aloha_proto as pb;
use aloha_proto::auth::{Authed, JoinToken, WithToken};
use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::tls::TlsConnect;
use tokio::sync::{mpsc, watch, RwLock};
use tonic::transport::Endpoint;
use tracing::{debug, error, info, warn};

use crate::worker::Worker;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Most reports sent in one batch.
const MAX_REPORTS_PER_CALL: usize = 256;
/// Deadline of one registration or report call: a master that does not answer by then is
/// treated as gone.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
// Short: after a failover the new leader should hear from every worker within about a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The master the worker currently follows.
#[derive(Clone)]
struct Leader {
    url: String,
    client: MasterServiceClient<Authed>,
}

/// How reports reach the master: the first the master serves, from the cheapest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Each batch as one message of a `StreamAppStates` stream.
    Stream,
    /// Each batch in one `ReportAppStates` call.
    Batches,
    /// One `ReportAppState` call per report.
    One,
}

/// An open `StreamAppStates` to the master at `url`: one batch out, then its answer back.
struct ReportStream {
    url: String,
    tx: mpsc::Sender<pb::ReportAppStatesRequest>,
    answers: tonic::Streaming<pb::ReportAppStatesResponse>,
}

impl ReportStream {
    async fn open(leader: &mut Leader) -> Result<ReportStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(1);
        let answers = leader
            .client
            .stream_app_states(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(ReportStream {
            url: leader.url.clone(),
            tx,
            answers,
        })
    }

    /// The master's answers to `batch`, one per report, in order.
    async fn send(
        &mut self,
        batch: pb::ReportAppStatesRequest,
    ) -> Result<Vec<pb::ReportAppStateResponse>, tonic::Status> {
        self.tx
            .send(batch)
            .await
            .map_err(|_| tonic::Status::unavailable("the report stream closed"))?;
        match self.answers.message().await? {
            Some(answer) => Ok(answer.results),
            None => Err(tonic::Status::unavailable(
                "the master ended the report stream",
            )),
        }
    }
}

/// How the worker beats to one leader: over a `Heartbeats` stream opened at the first beat,
/// or, to a master without it, one `Heartbeat` call per beat.
#[derive(Default)]
struct Beats {
    stream: Option<(
        mpsc::Sender<pb::HeartbeatRequest>,
        tonic::Streaming<pb::HeartbeatResponse>,
    )>,
    unary: bool,
}

impl Beats {
    /// Sends one beat and returns the master's answer. An error leaves the stream unusable;
    /// the caller registers again, with fresh `Beats`.
    async fn beat(
        &mut self,
        client: &mut MasterServiceClient<Authed>,
        hb: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        if !self.unary && self.stream.is_none() {
            let (tx, rx) = mpsc::channel(1);
            match client
                .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                Ok(answers) => self.stream = Some((tx, answers.into_inner())),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    debug!("the master has no heartbeat stream; one call per beat");
                    self.unary = true;
                }
                Err(status) => return Err(status),
            }
        }
        let Some((tx, answers)) = self.stream.as_mut() else {
            return client.heartbeat(hb).await.map(|r| r.into_inner());
        };
        tx.send(hb)
            .await
            .map_err(|_| tonic::Status::unavailable("the heartbeat stream closed"))?;
        answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the master ended the heartbeat stream"))
    }
}

/// Registration, heartbeats and report delivery.
pub struct Session {
    worker: Arc<Worker>,
    masters: Vec<String>,
    leader: RwLock<Option<Leader>>,
    token: WithToken,
    tls: Option<TlsConnect>,
}

fn client_for(
    url: &str,
    token: &WithToken,
    tls: Option<&TlsConnect>,
) -> Result<MasterServiceClient<Authed>, String> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad master URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    Ok(MasterServiceClient::with_interceptor(
        aloha_proto::tls::connect_lazy(ep, tls),
        token.clone(),
    ))
}

fn normalise(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

impl Session {
    /// A session for `worker` over `masters`, whose calls carry `token`, over mutual TLS with
    /// `tls` (which requires the master role of the servers).
    pub fn new(
        worker: Arc<Worker>,
        masters: Vec<String>,
        token: Option<JoinToken>,
        tls: Option<TlsConnect>,
    ) -> Arc<Session> {
        Arc::new(Session {
            worker,
            masters,
            leader: RwLock::new(None),
            token: WithToken(token),
            tls,
        })
    }

    /// Registers with the master that accepts (the leader). Every configured master is asked
    /// at once, each with a short deadline: a paused or dead master must not hold up finding
    /// the live one. At most one master can accept, because accepting means a successful write
    /// under the leadership fence. Standbys point at the leader; that address is tried too.
    async fn register(&self) -> Result<(Leader, Duration), Option<tonic::Status>> {
        let mut tried: Vec<String> = Vec::new();
        let mut round: Vec<String> = self.masters.clone();
        while !round.is_empty() {
            let apps = self.worker.app_reports();
            let req = pb::RegisterWorkerRequest {
                worker_id: self.worker.id.clone(),
                address: self.worker.address.clone(),
                cores: self.worker.cores,
                memory_mb: self.worker.memory_mb,
                kinds: self.worker.kinds(),
                apps: apps.clone(),
                plugin_errors: self.worker.plugin_errors.clone(),
                instance: self.worker.instance.clone(),
                max_epoch_seen: self.worker.max_epoch(),
            };
            let mut calls = tokio::task::JoinSet::new();
            for url in round.drain(..) {
                tried.push(url.clone());
                let req = req.clone();
                let token = self.token.clone();
                let tls = self.tls.clone();
                calls.spawn(async move {
                    let mut client = match client_for(&url, &token, tls.as_ref()) {
                        Ok(c) => c,
                        Err(e) => return (url, None, Err(tonic::Status::unavailable(e))),
                    };
                    let res = tokio::time::timeout(RPC_TIMEOUT, client.register_worker(req)).await;
                    let res = match res {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(status)) => Err(status),
                        Err(_) => Err(tonic::Status::deadline_exceeded("timed out")),
                    };
                    (url, Some(client), res)
                });
            }
            let mut hints: Vec<String> = Vec::new();
            // A refusal of this worker itself (its id is taken, its offer is invalid, it has no
            // valid join token).
            let mut refused: Option<tonic::Status> = None;
            while let Some(joined) = calls.join_next().await {
                let Ok((url, client, res)) = joined else {
                    continue;
                };
                match (client, res) {
                    (Some(client), Ok(resp)) if resp.accepted => {
                        calls.abort_all();
                        self.worker.observe_epoch(resp.epoch);
                        self.worker.registered(&apps);
                        for k in &resp.kill {
                            self.worker.kill_unowned(&k.app_id, k.attempt);
                        }
                        let interval = Duration::from_millis(resp.heartbeat_interval_ms.max(50));
                        info!(master = %url, epoch = resp.epoch, apps = apps.len(),
                              heartbeat_ms = interval.as_millis() as u64, "registered with the leader");
                        return Ok((Leader { url, client }, interval));
                    }
                    (_, Ok(resp)) => {
                        if !resp.leader_rpc_address.is_empty() {
                            hints.push(normalise(&resp.leader_rpc_address));
                        }
                    }
                    (_, Err(status))
                        if matches!(
                            status.code(),
                            tonic::Code::AlreadyExists
                                | tonic::Code::InvalidArgument
                                | tonic::Code::Unauthenticated
                                | tonic::Code::PermissionDenied
                        ) =>
                    {
                        refused = Some(status);
                    }
                    (_, Err(status)) => {
                        debug!(master = %url, "registration failed: {}", status.message())
                    }
                }
            }
            hints.sort();
            hints.dedup();
            round = hints.into_iter().filter(|h| !tried.contains(h)).collect();
            if round.is_empty() && refused.is_some() {
                return Err(refused);
            }
        }
        Err(None)
    }

    /// Keeps the worker registered with the leader until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let reporter = tokio::spawn(self.clone().deliver_reports(stop.clone()));
        let mut backoff = MIN_BACKOFF;
        let mut warned = false;
        let mut last_refusal = String::new();
        'outer: loop {
            if *stop.borrow() {
                break;
            }
            let (leader, interval) = match self.register().await {
                Ok(l) => l,
                Err(refusal) => {
                    match refusal {
                        // Refused by the leader (e.g. another live process has this id): said
                        // loudly, and retried, so that this worker takes over once the master
                        // declares the other one DEAD.
                        Some(status) if status.message() != last_refusal => {
                            error!(code = ?status.code(), "the master refused the registration: {}; retrying",
                                   status.message());
                            last_refusal = status.message().to_string();
                        }
                        Some(_) => {}
                        None if !warned => {
                            warn!(masters = ?self.masters, "no master accepted the registration; retrying");
                            warned = true;
                        }
                        None => {}
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            warned = false;
            last_refusal.clear();
            backoff = MIN_BACKOFF;
            *self.leader.write().await = Some(leader.clone());
            self.worker.report_ready.notify_one();
            let mut client = leader.client.clone();
            let mut beats = Beats::default();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = self.worker.reregister.notified() => {
                        debug!("re-registering on request");
                        break;
                    }
                    _ = stop.changed() => break 'outer,
                }
                let hb = pb::HeartbeatRequest {
                    worker_id: self.worker.id.clone(),
                };
                // Two intervals without an answer: the master is gone or paused; find the leader.
                match tokio::time::timeout(interval * 2, beats.beat(&mut client, hb))
                    .await
                    .unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(
                            "no answer in two heartbeat intervals",
                        ))
                    }) {
                    Ok(r) => {
                        if !r.accepted {
                            info!(master = %leader.url, "master is no longer the leader");
                            break;
                        }
                        if r.reregister {
                            info!(master = %leader.url, "master asked for a new registration");
                            break;
                        }
                        self.worker.observe_epoch(r.epoch);
                    }
                    Err(status) => {
                        warn!(master = %leader.url, "heartbeat failed: {}", status.message());
                        break;
                    }
                }
            }
            *self.leader.write().await = None;
        }
        *self.leader.write().await = None;
        let _ = reporter.await;
    }

    /// Sends queued reports to the leader, oldest first, until each is acknowledged: all that
    /// are queued (up to [`MAX_REPORTS_PER_CALL`]) in one message of a `StreamAppStates`
    /// stream kept open to the leader, which the master applies in order in one commit and
    /// answers before the next batch goes. A master without streams gets each batch in one
    /// `ReportAppStates` call, one without that call the reports one at a time.
    async fn deliver_reports(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut mode = Delivery::Stream;
        let mut stream: Option<ReportStream> = None;
        loop {
            let reports = self.worker.next_reports(if mode == Delivery::One {
                1
            } else {
                MAX_REPORTS_PER_CALL
            });
            if reports.is_empty() {
                tokio::select! {
                    _ = self.worker.report_ready.notified() => continue,
                    _ = stop.changed() => {
                        if *stop.borrow() { return; }
                        continue;
                    }
                }
            }
            let leader = self.leader.read().await.clone();
            let Some(mut leader) = leader else {
                // Not registered: reports wait (the registration lists the apps anyway).
                tokio::select! {
                    _ = self.worker.report_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            };
            let batch = || pb::ReportAppStatesRequest {
                worker_id: self.worker.id.clone(),
                reports: reports.clone(),
            };
            let sent: Result<Vec<pb::ReportAppStateResponse>, tonic::Status> = match mode {
                Delivery::Stream => {
                    let sent = tokio::time::timeout(RPC_TIMEOUT, async {
                        if stream.as_ref().is_none_or(|s| s.url != leader.url) {
                            stream = Some(ReportStream::open(&mut leader).await?);
                        }
                        match stream.as_mut() {
                            Some(s) => s.send(batch()).await,
                            None => Err(tonic::Status::unavailable("no report stream")),
                        }
                    })
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("report timed out")));
                    if sent.is_err() {
                        // A late answer must not be read as the next batch's.
                        stream = None;
                    }
                    sent
                }
                Delivery::Batches => {
                    tokio::time::timeout(RPC_TIMEOUT, leader.client.report_app_states(batch()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(tonic::Status::deadline_exceeded("report timed out"))
                        })
                        .map(|r| r.into_inner().results)
                }
                Delivery::One => tokio::time::timeout(
                    RPC_TIMEOUT,
                    leader.client.report_app_state(reports[0].clone()),
                )
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("report timed out")))
                .map(|r| vec![r.into_inner()]),
            };
            match sent {
                Ok(results) => {
                    for (report, resp) in reports.iter().zip(results) {
                        if !self.answered(&leader.url, report, resp).await {
                            break;
                        }
                    }
                }
                Err(status)
                    if mode != Delivery::One && status.code() == tonic::Code::Unimplemented =>
                {
                    mode = if mode == Delivery::Stream {
                        info!(master = %leader.url, "the master has no report stream; one call per batch");
                        Delivery::Batches
                    } else {
                        info!(master = %leader.url, "the master takes one report per call");
                        Delivery::One
                    };
                }
                Err(status) => {
                    debug!(master = %leader.url, "report delivery failed: {}", status.message());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Acts on the master's answer to one report; false when the rest must wait (the master
    /// did not accept it: the worker registers again first).
    async fn answered(
        &self,
        master: &str,
        report: &pb::AppStateReport,
        resp: pb::ReportAppStateResponse,
    ) -> bool {
        if resp.accepted {
            if resp.kill {
                self.worker.kill_unowned(&report.app_id, report.attempt);
            }
            if !resp.message.is_empty() {
                debug!(app_id = %report.app_id, "master: {}", resp.message);
            }
            self.worker.report_delivered(report);
            true
        } else {
            info!(%master, "report not accepted ({}); re-registering", resp.message);
            self.worker.reregister.notify_one();
            tokio::time::sleep(Duration::from_millis(200)).await;
            false
        }
    }
}
