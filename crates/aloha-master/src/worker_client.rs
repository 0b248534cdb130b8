//! Commands from the master to workers (launch, kill), behind a trait so the scheduling logic is
//! testable without sockets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aloha_proto::worker_service_client::WorkerServiceClient;
use aloha_proto::{KillAppRequest, KillAppResponse, LaunchAppRequest, LaunchAppResponse};
use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};

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
}

/// The real connector: one lazily connected gRPC channel per worker address.
#[derive(Default)]
pub struct GrpcWorkerConnector {
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcWorkerConnector {
    fn client(&self, address: &str) -> Result<WorkerServiceClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(address) {
            return Ok(WorkerServiceClient::new(ch.clone()));
        }
        let url = if address.starts_with("http") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let ch = Endpoint::from_shared(url)
            .map_err(|e| format!("bad worker address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        channels.insert(address.to_string(), ch.clone());
        Ok(WorkerServiceClient::new(ch))
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
}
