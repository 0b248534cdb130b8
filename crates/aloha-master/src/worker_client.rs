//! Commands from the master to workers (launch, kill) and reads of their apps' logs, behind a
//! trait so the scheduling logic is testable without sockets.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use aloha_proto::auth::{Authed, JoinToken, WithToken};
use aloha_proto::tls::{PeerRole, TlsConnect};
use aloha_proto::worker_service_client::WorkerServiceClient;
use aloha_proto::{
    KillAppRequest, KillAppResponse, LaunchAppRequest, LaunchAppResponse, LogChunk, ReadLogRequest,
};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

/// Why a worker did not serve a log request; the gRPC code, classified once here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogCallError {
    /// The worker has no such attempt or file (its message says which).
    #[error("{0}")]
    NotFound(String),
    /// The worker refused the request's fields (a malformed id, an offset past the end).
    #[error("{0}")]
    BadRequest(String),
    /// The worker serves as many followers as it will.
    #[error("{0}")]
    Busy(String),
    /// The worker could not be reached, or the connection broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Anything else the worker or the transport said.
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::Status> for LogCallError {
    fn from(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::NotFound => LogCallError::NotFound(m),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => LogCallError::BadRequest(m),
            tonic::Code::ResourceExhausted => LogCallError::Busy(m),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                LogCallError::Unreachable(m)
            }
            code => LogCallError::Failed(format!("{code}: {m}")),
        }
    }
}

/// The chunks of a followed log, until the attempt ended (the last has `ended`) or an error.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, LogCallError>> + Send>>;

/// Sends commands to the WorkerService at a worker's address.
#[async_trait]
pub trait WorkerConnector: Send + Sync + 'static {
    /// Asks the worker to launch an app attempt.
    async fn launch(
        &self,
        address: &str,
        req: LaunchAppRequest,
    ) -> Result<LaunchAppResponse, String>;
    /// Asks the worker to kill an app attempt.
    async fn kill(&self, address: &str, req: KillAppRequest) -> Result<KillAppResponse, String>;
    /// Reads a range of an app attempt's `stdout` or `stderr`.
    async fn read_log(
        &self,
        _address: &str,
        _req: ReadLogRequest,
    ) -> Result<LogChunk, LogCallError> {
        Err(LogCallError::Failed("this connector reads no logs".into()))
    }
    /// Follows an app attempt's `stdout` or `stderr` until the attempt ended.
    async fn follow_log(
        &self,
        _address: &str,
        _req: ReadLogRequest,
    ) -> Result<LogStream, LogCallError> {
        Err(LogCallError::Failed("this connector reads no logs".into()))
    }
}

/// The real connector: one lazily connected gRPC channel per worker address, over mutual TLS
/// when configured (the worker's certificate must carry the worker role); every call carries
/// the join token, if any. Launches go over one `LaunchApps` stream per worker, opened on the
/// first launch and again after it broke (one `LaunchApp` call each to a worker without it).
#[derive(Default)]
pub struct GrpcWorkerConnector {
    channels: Mutex<HashMap<String, Channel>>,
    links: Mutex<Links>,
    token: WithToken,
    tls: Option<TlsConnect>,
}

/// The launch links by worker address. A link ends when its stream broke and nothing waits
/// for it; ended links are dropped from the map as it grows, so workers that went away (and
/// their addresses) are not kept for ever.
#[derive(Default)]
struct Links {
    by_address: HashMap<String, mpsc::UnboundedSender<PendingLaunch>>,
    /// The size at which ended links are next swept out.
    sweep_at: usize,
}

/// How long a launch waits for the worker's answer (as long as a `LaunchApp` call).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

type LaunchResult = Result<LaunchAppResponse, String>;

/// A launch on its way to a worker's link, and where its answer goes.
type PendingLaunch = (LaunchAppRequest, oneshot::Sender<LaunchResult>);

fn call_error(s: &tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// Launches with one `LaunchApp` call, answering `reply` in its own task.
fn launch_by_call(client: &Client, req: LaunchAppRequest, reply: oneshot::Sender<LaunchResult>) {
    let mut c = client.clone();
    tokio::spawn(async move {
        let r = c.launch_app(req).await;
        let _ = reply.send(r.map(|r| r.into_inner()).map_err(|s| call_error(&s)));
    });
}

/// Serves one worker's launches over a `LaunchApps` stream, opened when the first launch
/// comes; its answers come back in order and are matched to the launches waiting for them.
/// When the stream breaks, every launch waiting on it fails (as a broken call does) and the
/// link ends once the launches already queued are served: the next launch starts a new link.
async fn serve_link(mut client: Client, mut launches: mpsc::UnboundedReceiver<PendingLaunch>) {
    while let Some((req, reply)) = launches.recv().await {
        let (out, out_rx) = mpsc::unbounded_channel();
        let mut waiting = std::collections::VecDeque::new();
        waiting.push_back((req.app_id.clone(), req.attempt, reply));
        let first = req.clone();
        let _ = out.send(req);
        let mut answers = match client
            .launch_apps(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                // A worker without the stream: one call per launch, from now on.
                if let Some((_, _, reply)) = waiting.pop_front() {
                    launch_by_call(&client, first, reply);
                }
                while let Some((req, reply)) = launches.recv().await {
                    launch_by_call(&client, req, reply);
                }
                return;
            }
            Err(s) => {
                // The worker cannot be reached: this launch and those queued behind it fail
                // alike, and the link ends (the next launch tries again).
                launches.close();
                let why = call_error(&s);
                for (_, _, reply) in waiting {
                    let _ = reply.send(Err(why.clone()));
                }
                while let Ok((_, reply)) = launches.try_recv() {
                    let _ = reply.send(Err(why.clone()));
                }
                return;
            }
        };
        // Launches are taken while `taking`; after that the answers still due are read.
        let mut taking = true;
        let broke = loop {
            if !taking && waiting.is_empty() {
                return;
            }
            tokio::select! {
                next = launches.recv(), if taking => match next {
                    Some((req, reply)) => {
                        waiting.push_back((req.app_id.clone(), req.attempt, reply));
                        if out.send(req).is_err() {
                            break "the launch stream closed".to_string();
                        }
                    }
                    // The link was closed after a break, or the connector is gone.
                    None => taking = false,
                },
                answer = answers.next() => match answer {
                    Some(Ok(a)) => match waiting.pop_front() {
                        Some((app, attempt, reply)) if app == a.app_id && attempt == a.attempt => {
                            let _ = reply.send(Ok(a));
                        }
                        Some((app, attempt, reply)) => {
                            let why = format!(
                                "the worker answered {} attempt {} when {app} attempt {attempt} \
                                 was due",
                                a.app_id, a.attempt
                            );
                            let _ = reply.send(Err(why.clone()));
                            break why;
                        }
                        None => {
                            break format!(
                                "the worker answered {} attempt {}, which was not launched",
                                a.app_id, a.attempt
                            )
                        }
                    },
                    Some(Err(s)) => break call_error(&s),
                    None => break "the worker ended the launch stream".to_string(),
                },
            }
        };
        debug!("launch stream broke: {broke}");
        for (_, _, reply) in waiting {
            let _ = reply.send(Err(broke.clone()));
        }
        // This link ends: launches already queued are served (over a new stream), later ones
        // start a new link, and a link to a worker that went away is not kept.
        launches.close();
    }
}

type Client = WorkerServiceClient<Authed>;

impl GrpcWorkerConnector {
    /// A connector whose calls carry `token`, over plain TCP.
    pub fn new(token: Option<JoinToken>) -> Self {
        GrpcWorkerConnector {
            channels: Mutex::default(),
            links: Mutex::default(),
            token: WithToken(token),
            tls: None,
        }
    }

    /// The connector of a master's configuration: its join token and mutual TLS, if any.
    pub fn from_config(cfg: &crate::Config) -> Self {
        GrpcWorkerConnector {
            channels: Mutex::default(),
            links: Mutex::default(),
            token: WithToken(cfg.join_token.clone()),
            tls: cfg.mutual_tls.as_ref().map(|t| t.dialer(PeerRole::Worker)),
        }
    }

    fn log_client(&self, address: &str) -> Result<Client, LogCallError> {
        self.client(address).map_err(LogCallError::Failed)
    }

    /// The sender of launches to the worker at `address`, whose link starts on first use.
    fn link(&self, address: &str) -> Result<mpsc::UnboundedSender<PendingLaunch>, String> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = links.by_address.get(address).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        if links.by_address.len() >= links.sweep_at {
            // The channels of ended links go too (another call connects again): a worker that
            // went away leaves nothing behind.
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            links.by_address.retain(|address, tx| {
                let keep = !tx.is_closed();
                if !keep {
                    channels.remove(address);
                }
                keep
            });
            links.sweep_at = (2 * links.by_address.len()).max(64);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve_link(self.client(address)?, rx));
        links.by_address.insert(address.to_string(), tx.clone());
        Ok(tx)
    }

    fn client(&self, address: &str) -> Result<Client, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(address) {
            return Ok(WorkerServiceClient::with_interceptor(
                ch.clone(),
                self.token.clone(),
            ));
        }
        let url = if address.starts_with("http") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| format!("bad worker address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10));
        let ch = aloha_proto::tls::connect_lazy(endpoint, self.tls.as_ref());
        channels.insert(address.to_string(), ch.clone());
        Ok(WorkerServiceClient::with_interceptor(
            ch,
            self.token.clone(),
        ))
    }
}

#[async_trait]
impl WorkerConnector for GrpcWorkerConnector {
    async fn launch(
        &self,
        address: &str,
        req: LaunchAppRequest,
    ) -> Result<LaunchAppResponse, String> {
        let (reply, answer) = oneshot::channel();
        let mut launch = (req, reply);
        // A link ends when its stream broke and nothing was queued; the next one starts here.
        let mut sent = false;
        for _ in 0..2 {
            match self.link(address)?.send(launch) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(mpsc::error::SendError(back)) => launch = back,
            }
        }
        if !sent {
            return Err("the worker's launch link is gone".into());
        }
        match tokio::time::timeout(LAUNCH_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the worker's launch link is gone".into()),
            Err(_) => Err(format!(
                "DeadlineExceeded: no answer to the launch in {LAUNCH_TIMEOUT:?}"
            )),
        }
    }

    async fn kill(&self, address: &str, req: KillAppRequest) -> Result<KillAppResponse, String> {
        let mut c = self.client(address)?;
        c.kill_app(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }

    async fn read_log(&self, address: &str, req: ReadLogRequest) -> Result<LogChunk, LogCallError> {
        let mut c = self.log_client(address)?;
        Ok(c.read_log(req).await?.into_inner())
    }

    async fn follow_log(
        &self,
        address: &str,
        req: ReadLogRequest,
    ) -> Result<LogStream, LogCallError> {
        let mut c = self.log_client(address)?;
        // The channel's timeout bounds the call until the stream starts, not the stream.
        let stream = c.follow_log(req).await?.into_inner();
        Ok(Box::pin(stream.map(|r| r.map_err(LogCallError::from))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aloha_proto::worker_service_server::{WorkerService, WorkerServiceServer};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    /// A WorkerService on 127.0.0.1 that accepts every launch and counts how they came.
    #[derive(Default)]
    struct Fake {
        /// Serves `LaunchApps` (else UNIMPLEMENTED, as a worker without it).
        streams: bool,
        /// Each stream fails after answering this many launches (0: never).
        break_after: usize,
        opened: AtomicUsize,
        calls: AtomicUsize,
    }

    /// The server's handle on a [`Fake`] the test also holds.
    struct Served(Arc<Fake>);

    impl std::ops::Deref for Served {
        type Target = Fake;
        fn deref(&self) -> &Fake {
            &self.0
        }
    }

    fn accepted(req: &LaunchAppRequest, how: &str) -> LaunchAppResponse {
        LaunchAppResponse {
            accepted: true,
            message: how.into(),
            app_id: req.app_id.clone(),
            attempt: req.attempt,
        }
    }

    #[tonic::async_trait]
    impl WorkerService for Served {
        async fn launch_app(
            &self,
            req: Request<LaunchAppRequest>,
        ) -> Result<Response<LaunchAppResponse>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(accepted(req.get_ref(), "call")))
        }

        type LaunchAppsStream =
            Pin<Box<dyn Stream<Item = Result<LaunchAppResponse, Status>> + Send + 'static>>;

        async fn launch_apps(
            &self,
            req: Request<Streaming<LaunchAppRequest>>,
        ) -> Result<Response<Self::LaunchAppsStream>, Status> {
            if !self.streams {
                return Err(Status::unimplemented("no LaunchApps here"));
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            let (limit, mut answered) = (self.break_after, 0);
            let answers = req.into_inner().map(move |req| {
                answered += 1;
                if limit > 0 && answered > limit {
                    return Err(Status::aborted("the stream broke"));
                }
                req.map(|r| accepted(&r, "stream"))
            });
            Ok(Response::new(Box::pin(answers)))
        }

        async fn kill_app(
            &self,
            _req: Request<KillAppRequest>,
        ) -> Result<Response<KillAppResponse>, Status> {
            Err(Status::unimplemented("no kills here"))
        }

        async fn read_log(
            &self,
            _req: Request<ReadLogRequest>,
        ) -> Result<Response<LogChunk>, Status> {
            Err(Status::unimplemented("no logs here"))
        }

        type FollowLogStream = tokio_stream::Empty<Result<LogChunk, Status>>;

        async fn follow_log(
            &self,
            _req: Request<ReadLogRequest>,
        ) -> Result<Response<Self::FollowLogStream>, Status> {
            Err(Status::unimplemented("no logs here"))
        }
    }

    /// Serves `fake` on a fresh 127.0.0.1 port; its address.
    async fn serve(fake: Arc<Fake>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(Served(fake)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        address
    }

    fn launch(app: &str, attempt: u32) -> LaunchAppRequest {
        LaunchAppRequest {
            epoch: 1,
            app_id: app.into(),
            attempt,
            description_json: "{}".into(),
        }
    }

    #[tokio::test]
    async fn launches_to_a_worker_share_one_stream_and_each_gets_its_own_answer() {
        let fake = Arc::new(Fake {
            streams: true,
            ..Fake::default()
        });
        let address = serve(fake.clone()).await;
        let connector = Arc::new(GrpcWorkerConnector::new(None));
        let mut all = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let (connector, address) = (connector.clone(), address.clone());
            all.spawn(async move {
                let app = format!("app-{i}");
                let r = connector.launch(&address, launch(&app, i % 3 + 1)).await;
                (app, i % 3 + 1, r)
            });
        }
        while let Some(done) = all.join_next().await {
            let (app, attempt, r) = done.unwrap();
            let r = r.unwrap();
            assert!(r.accepted);
            assert_eq!(
                (r.app_id.as_str(), r.attempt, r.message.as_str()),
                (app.as_str(), attempt, "stream")
            );
        }
        assert_eq!(fake.opened.load(Ordering::SeqCst), 1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_worker_without_the_stream_gets_one_call_per_launch() {
        let fake = Arc::new(Fake::default());
        let address = serve(fake.clone()).await;
        let connector = GrpcWorkerConnector::new(None);
        for i in 0..5 {
            let r = connector
                .launch(&address, launch(&format!("app-{i}"), 1))
                .await
                .unwrap();
            assert_eq!((r.accepted, r.message.as_str()), (true, "call"));
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_broken_stream_fails_the_launch_on_it_and_the_next_launch_opens_another() {
        let fake = Arc::new(Fake {
            streams: true,
            break_after: 1,
            ..Fake::default()
        });
        let address = serve(fake.clone()).await;
        let connector = GrpcWorkerConnector::new(None);
        let a = connector.launch(&address, launch("a", 1)).await;
        assert_eq!(a.unwrap().app_id, "a");
        let b = connector.launch(&address, launch("b", 1)).await;
        let why = b.expect_err("the stream broke under b");
        assert!(why.contains("the stream broke"), "{why}");
        // The broken link ended; the next launch starts another.
        let ended = connector.links.lock().unwrap().by_address[&address].is_closed();
        assert!(ended, "the link of a broken stream ends");
        let c = connector.launch(&address, launch("c", 1)).await;
        assert_eq!(c.unwrap().app_id, "c");
        assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
    }

    /// Addresses on 127.0.0.1 nothing listens on.
    fn unused_addresses(n: usize) -> Vec<String> {
        let held: Vec<_> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        held.iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn launches_queued_to_an_unreachable_worker_all_fail_with_its_error() {
        let address = unused_addresses(1).remove(0);
        let connector = Arc::new(GrpcWorkerConnector::new(None));
        let mut all = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (connector, address) = (connector.clone(), address.clone());
            all.spawn(async move {
                connector
                    .launch(&address, launch(&format!("a{i}"), 1))
                    .await
            });
        }
        while let Some(r) = all.join_next().await {
            let why = r.unwrap().expect_err("nobody there");
            assert!(why.contains("tcp connect error"), "{why}");
        }
    }

    #[tokio::test]
    async fn links_to_workers_that_went_away_are_not_kept() {
        let connector = GrpcWorkerConnector::new(None);
        for address in unused_addresses(150) {
            let r = connector.launch(&address, launch("a", 1)).await;
            assert!(r.is_err());
        }
        let links = connector.links.lock().unwrap().by_address.len();
        let channels = connector.channels.lock().unwrap().len();
        assert!(
            links <= 64 && channels <= 64,
            "{links} links and {channels} channels kept"
        );
    }

    #[tokio::test]
    async fn a_launch_to_an_unreachable_worker_fails() {
        // A port nothing listens on.
        let address = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let connector = GrpcWorkerConnector::new(None);
        let why = connector
            .launch(&address, launch("a", 1))
            .await
            .expect_err("nobody there");
        assert!(why.contains("unavailable: tcp connect error"), "{why}");
    }
}
