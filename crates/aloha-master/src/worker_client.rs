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
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

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
/// the join token, if any.
#[derive(Default)]
pub struct GrpcWorkerConnector {
    channels: Mutex<HashMap<String, Channel>>,
    token: WithToken,
    tls: Option<TlsConnect>,
}

type Client = WorkerServiceClient<Authed>;

impl GrpcWorkerConnector {
    /// A connector whose calls carry `token`, over plain TCP.
    pub fn new(token: Option<JoinToken>) -> Self {
        GrpcWorkerConnector {
            channels: Mutex::default(),
            token: WithToken(token),
            tls: None,
        }
    }

    /// The connector of a master's configuration: its join token and mutual TLS, if any.
    pub fn from_config(cfg: &crate::Config) -> Self {
        GrpcWorkerConnector {
            channels: Mutex::default(),
            token: WithToken(cfg.join_token.clone()),
            tls: cfg.mutual_tls.as_ref().map(|t| t.dialer(PeerRole::Worker)),
        }
    }

    fn log_client(&self, address: &str) -> Result<Client, LogCallError> {
        self.client(address).map_err(LogCallError::Failed)
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
        let mut c = self.client(address)?;
        c.launch_app(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
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
