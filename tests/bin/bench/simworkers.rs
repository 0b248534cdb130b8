//! Simulated workers for `scale`: thousands of them in the bench process, over real gRPC to a
//! real master. Each has its own 127.0.0.1 port and its own connection to the master; it
//! registers, heartbeats at a fixed interval and answers every launch by reporting RUNNING,
//! then FINISHED (exit code 0): the app ends at once. Launches come over the master's
//! `LaunchApps` stream to each worker. Reports are queued and sent as a real worker sends them:
//! whatever is queued, in one message of the worker's `StreamAppStates` stream, by one
//! delivery task per worker, and heartbeats over its `Heartbeats` stream (or all by unary
//! calls with `--calls unary`). One tonic server serves every port: a launch request carries
//! no worker id, so the handler finds the worker from the port the master connected to
//! (`Request::local_addr`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::worker_service_server::{WorkerService, WorkerServiceServer};
use aloha_proto::{
    AppStateReport, HeartbeatRequest, KillAppRequest, KillAppResponse, LaunchAppRequest,
    LaunchAppResponse, RegisterWorkerRequest, ReportAppStatesRequest,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// One simulated worker's identity and link to the master.
struct Sim {
    id: String,
    address: String,
    client: MasterServiceClient<Channel>,
    /// Reports waiting for delivery, oldest first.
    queue: std::sync::Mutex<Vec<AppStateReport>>,
    ready: tokio::sync::Notify,
}

/// What the simulated workers did, counted as it happens.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) heartbeats: AtomicU64,
    pub(crate) heartbeat_errors: AtomicU64,
    pub(crate) reregistrations: AtomicU64,
    pub(crate) launches: AtomicU64,
    /// FINISHED reports the master acknowledged.
    pub(crate) finished: AtomicU64,
    pub(crate) report_errors: AtomicU64,
    /// Nanoseconds after `base` of the first and the latest launch (0: none yet).
    pub(crate) first_launch_ns: AtomicU64,
    pub(crate) last_launch_ns: AtomicU64,
}

#[derive(Clone)]
struct Service {
    calls: Calls,
    sims: Arc<Vec<Sim>>,
    by_port: Arc<HashMap<u16, usize>>,
    counters: Arc<Counters>,
    base: Instant,
}

impl Service {
    /// Takes a launch on the worker listening on `port`: both its reports are queued.
    fn launch(&self, port: u16, req: LaunchAppRequest) -> Result<LaunchAppResponse, Status> {
        let Some(&i) = self.by_port.get(&port) else {
            return Err(Status::internal(format!(
                "no simulated worker on port {port}"
            )));
        };
        let now = self.base.elapsed().as_nanos() as u64;
        let _ = self.counters.first_launch_ns.compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.counters
            .last_launch_ns
            .fetch_max(now, Ordering::Relaxed);
        self.counters.launches.fetch_add(1, Ordering::Relaxed);
        // The app runs and ends at once: both reports go to the worker's delivery queue.
        let sim = &self.sims[i];
        {
            let mut q = sim.queue.lock().unwrap_or_else(|p| p.into_inner());
            for (state, exit_code) in [("RUNNING", None), ("FINISHED", Some(0))] {
                q.push(AppStateReport {
                    worker_id: sim.id.clone(),
                    app_id: req.app_id.clone(),
                    attempt: req.attempt,
                    state: state.into(),
                    exit_code,
                    ..Default::default()
                });
            }
        }
        sim.ready.notify_one();
        Ok(LaunchAppResponse {
            accepted: true,
            message: String::new(),
            app_id: req.app_id,
            attempt: req.attempt,
        })
    }
}

#[tonic::async_trait]
impl WorkerService for Service {
    async fn launch_app(
        &self,
        req: Request<LaunchAppRequest>,
    ) -> Result<Response<LaunchAppResponse>, Status> {
        let port = req.local_addr().map(|a| a.port()).unwrap_or(0);
        self.launch(port, req.into_inner()).map(Response::new)
    }

    type LaunchAppsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<LaunchAppResponse, Status>> + Send + 'static>,
    >;

    async fn launch_apps(
        &self,
        req: Request<tonic::Streaming<LaunchAppRequest>>,
    ) -> Result<Response<Self::LaunchAppsStream>, Status> {
        if self.calls == Calls::Unary {
            return Err(Status::unimplemented(
                "this simulation takes one call per launch",
            ));
        }
        let port = req.local_addr().map(|a| a.port()).unwrap_or(0);
        let this = self.clone();
        let answers =
            tokio_stream::StreamExt::map(req.into_inner(), move |req| this.launch(port, req?));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn kill_app(
        &self,
        _req: Request<KillAppRequest>,
    ) -> Result<Response<KillAppResponse>, Status> {
        // The apps finish at once; there is nothing left to kill.
        Ok(Response::new(KillAppResponse {
            accepted: true,
            message: String::new(),
        }))
    }

    async fn read_log(
        &self,
        _req: Request<aloha_proto::ReadLogRequest>,
    ) -> Result<Response<aloha_proto::LogChunk>, Status> {
        Err(Status::unimplemented("simulated workers keep no logs"))
    }

    type FollowLogStream = tokio_stream::Empty<Result<aloha_proto::LogChunk, Status>>;

    async fn follow_log(
        &self,
        _req: Request<aloha_proto::ReadLogRequest>,
    ) -> Result<Response<Self::FollowLogStream>, Status> {
        Err(Status::unimplemented("simulated workers keep no logs"))
    }
}

/// How the master and the simulated workers exchange launches and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Calls {
    /// Over one `LaunchApps`, one `StreamAppStates` and one `Heartbeats` stream per worker,
    /// as aloha-worker.
    Streams,
    /// One `LaunchApp` call per launch (the workers refuse the stream, so the master falls
    /// back), one `ReportAppStates` call per batch of reports and one `Heartbeat` call per
    /// beat: how it went before streams.
    Unary,
}

/// A worker's open bidirectional stream to the master: one request out, its answer back.
struct Duplex<Req, Resp> {
    tx: tokio::sync::mpsc::Sender<Req>,
    answers: tonic::Streaming<Resp>,
}

/// A `StreamAppStates` stream: one batch of reports out, then its answer back.
type ReportStream = Duplex<ReportAppStatesRequest, aloha_proto::ReportAppStatesResponse>;
/// A `Heartbeats` stream: one beat out, then its answer back.
type BeatStream = Duplex<HeartbeatRequest, aloha_proto::HeartbeatResponse>;

impl ReportStream {
    async fn open(client: &mut MasterServiceClient<Channel>) -> Result<ReportStream, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let answers = client
            .stream_app_states(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Duplex { tx, answers })
    }
}

impl BeatStream {
    async fn open(client: &mut MasterServiceClient<Channel>) -> Result<BeatStream, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let answers = client
            .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Duplex { tx, answers })
    }
}

impl<Req, Resp> Duplex<Req, Resp> {
    /// The master's answer to `req`; None when the stream broke (open another).
    async fn send(&mut self, req: Req) -> Option<Resp> {
        self.tx.send(req).await.ok()?;
        self.answers.message().await.ok().flatten()
    }
}

/// The running simulation. [`SimWorkers::stop`] ends every task it started.
pub(crate) struct SimWorkers {
    pub(crate) counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

async fn register(sim: &Sim, cores: u32) -> Result<(), String> {
    let req = RegisterWorkerRequest {
        worker_id: sim.id.clone(),
        address: sim.address.clone(),
        cores,
        memory_mb: 1 << 20,
        kinds: vec!["process".into()],
        ..Default::default()
    };
    let r = sim
        .client
        .clone()
        .register_worker(req)
        .await
        .map_err(|e| format!("{} RegisterWorker: {}", sim.id, e.message()))?;
    if !r.get_ref().accepted {
        return Err(format!("{} not accepted: {}", sim.id, r.get_ref().message));
    }
    Ok(())
}

impl SimWorkers {
    /// Starts `n` workers offering `cores` each, registers them all with the master at
    /// `master_rpc` (`http://127.0.0.1:PORT`) and starts their heartbeats.
    pub(crate) async fn start(
        master_rpc: &str,
        n: usize,
        cores: u32,
        heartbeat: Duration,
        calls: Calls,
    ) -> Result<SimWorkers, String> {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut listeners = Vec::with_capacity(n);
        let mut by_port = HashMap::with_capacity(n);
        let mut sims = Vec::with_capacity(n);
        let endpoint = Endpoint::from_shared(master_rpc.to_string())
            .map_err(|e| format!("bad master URL {master_rpc}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("bind 127.0.0.1:0 (worker {i}): {e}"))?;
            let port = l.local_addr().map_err(|e| e.to_string())?.port();
            by_port.insert(port, i);
            listeners.push(l);
            sims.push(Sim {
                id: format!("sim-{i:05}"),
                address: format!("127.0.0.1:{port}"),
                // Its own HTTP/2 connection, as a real worker has.
                client: MasterServiceClient::new(endpoint.connect_lazy()),
                queue: std::sync::Mutex::new(Vec::new()),
                ready: tokio::sync::Notify::new(),
            });
        }
        let sims = Arc::new(sims);
        let counters = Arc::new(Counters::default());
        let base = Instant::now();

        // Every port's connections go to one server.
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<std::io::Result<TcpStream>>(1024);
        for l in listeners {
            let (conn_tx, mut stop_rx) = (conn_tx.clone(), stop_rx.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop_rx.changed() => return,
                        r = l.accept() => {
                            let r = r.map(|(s, _)| {
                                let _ = s.set_nodelay(true);
                                s
                            });
                            if conn_tx.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        drop(conn_tx);
        let service = Service {
            calls,
            sims: sims.clone(),
            by_port: Arc::new(by_port),
            counters: counters.clone(),
            base,
        };
        let mut server_stop = stop_rx.clone();
        tasks.spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(conn_rx),
                    async move {
                        let _ = server_stop.changed().await;
                    },
                )
                .await;
            if let Err(e) = r {
                eprintln!("simulated workers' server: {e}");
            }
        });

        // Register, 64 at a time.
        let gate = Arc::new(Semaphore::new(64));
        let mut regs = tokio::task::JoinSet::new();
        for i in 0..n {
            let (sims, gate) = (sims.clone(), gate.clone());
            regs.spawn(async move {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
                register(&sims[i], cores).await
            });
        }
        while let Some(r) = regs.join_next().await {
            if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r) {
                let _ = stop.send(true);
                return Err(format!("registration failed: {e}"));
            }
        }

        // Report delivery, one task per worker: whatever is queued, in one message of the
        // worker's report stream, the next once the master answered it.
        for i in 0..n {
            let (sims, counters, mut stop_rx) = (sims.clone(), counters.clone(), stop_rx.clone());
            tasks.spawn(async move {
                let sim = &sims[i];
                let mut client = sim.client.clone();
                let mut stream: Option<ReportStream> = None;
                loop {
                    let reports =
                        std::mem::take(&mut *sim.queue.lock().unwrap_or_else(|p| p.into_inner()));
                    if reports.is_empty() {
                        tokio::select! {
                            _ = stop_rx.changed() => return,
                            _ = sim.ready.notified() => continue,
                        }
                    }
                    let finished = reports.iter().filter(|r| r.state == "FINISHED").count() as u64;
                    let req = ReportAppStatesRequest {
                        worker_id: sim.id.clone(),
                        reports,
                    };
                    if calls == Calls::Unary {
                        match client.report_app_states(req).await {
                            Ok(r) if r.get_ref().results.iter().all(|x| x.accepted) => {
                                counters.finished.fetch_add(finished, Ordering::Relaxed);
                            }
                            _ => {
                                counters.report_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    let s = match stream.as_mut() {
                        Some(s) => s,
                        None => match ReportStream::open(&mut client).await {
                            Ok(s) => stream.insert(s),
                            Err(_) => {
                                counters.report_errors.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        },
                    };
                    match s.send(req).await {
                        Some(r) if r.results.iter().all(|x| x.accepted) => {
                            counters.finished.fetch_add(finished, Ordering::Relaxed);
                        }
                        answer => {
                            if answer.is_none() {
                                stream = None;
                            }
                            counters.report_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }

        // Heartbeats, spread evenly over the interval.
        for i in 0..n {
            let (sims, counters, mut stop_rx) = (sims.clone(), counters.clone(), stop_rx.clone());
            let offset = heartbeat.mul_f64(i as f64 / n as f64);
            tasks.spawn(async move {
                let sim = &sims[i];
                let mut client = sim.client.clone();
                let mut stream: Option<BeatStream> = None;
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop_rx.changed() => return,
                        _ = tick.tick() => {}
                    }
                    let hb = HeartbeatRequest {
                        worker_id: sim.id.clone(),
                    };
                    let answer = if calls == Calls::Unary {
                        client.heartbeat(hb).await.map(|r| r.into_inner())
                    } else {
                        let s = match stream.as_mut() {
                            Some(s) => Ok(s),
                            None => BeatStream::open(&mut client)
                                .await
                                .map(|s| stream.insert(s)),
                        };
                        match s {
                            Ok(s) => match s.send(hb).await {
                                Some(r) => Ok(r),
                                None => {
                                    stream = None;
                                    Err(Status::unavailable("the heartbeat stream broke"))
                                }
                            },
                            Err(e) => Err(e),
                        }
                    };
                    match answer {
                        Ok(r) => {
                            counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                            if r.reregister {
                                counters.reregistrations.fetch_add(1, Ordering::Relaxed);
                                if register(sim, cores).await.is_err() {
                                    counters.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            counters.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        Ok(SimWorkers {
            counters,
            stop,
            tasks,
        })
    }

    /// Stops the server, the heartbeats and the listeners, and waits for them.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }

    /// When the first and the latest launch came, from the start (None before the first).
    pub(crate) fn launch_span(&self) -> Option<(Duration, Duration)> {
        let first = self.counters.first_launch_ns.load(Ordering::Relaxed);
        let last = self.counters.last_launch_ns.load(Ordering::Relaxed);
        (first > 0).then(|| (Duration::from_nanos(first), Duration::from_nanos(last)))
    }
}
