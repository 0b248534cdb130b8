//! Prometheus metrics (`GET /metrics`).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use aloha_core::{AppState, WorkerState};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// Every metric the master exports.
pub struct Metrics {
    registry: Registry,
    apps: Family<StateLabel, Gauge>,
    workers: Family<StateLabel, Gauge>,
    transitions: Family<StateLabel, Counter>,
    rpc: Family<MethodLabel, Histogram>,
    store_txn: Histogram,
    /// Apps waiting in the queue.
    pub queue_length: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Accepted submissions.
    pub submitted: Counter<u64, AtomicU64>,
    /// HTTP requests by route.
    http: Family<RouteLabel, Histogram>,
    /// gRPC calls served to workers, by method.
    rpc_server: Family<MethodLabel, Histogram>,
    listener_queue_full: Family<ListenerLabel, Counter>,
    listener_delivered: Family<ListenerLabel, Counter>,
    listener_failed: Family<ListenerLabel, Counter>,
    /// SSE clients connected.
    pub event_streams: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Operations per engine batch (one store commit each).
    pub engine_batch: Histogram,
    /// Operations waiting for the engine.
    pub engine_queue: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Time the engine's task spent working (applying, placing, preparing, publishing,
    /// answering), not waiting: its rate is the share of one core the single writer uses.
    pub engine_busy: Counter<f64, AtomicU64>,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aloha");
        let apps = Family::<StateLabel, Gauge>::default();
        registry.register("apps", "Apps by state", apps.clone());
        let workers = Family::<StateLabel, Gauge>::default();
        registry.register("workers", "Workers by state", workers.clone());
        let transitions = Family::<StateLabel, Counter>::default();
        registry.register(
            "app_transitions",
            "App state changes, by the state entered",
            transitions.clone(),
        );
        let rpc =
            Family::<MethodLabel, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "worker_rpc_duration_seconds",
            "Latency of master-to-worker commands",
            rpc.clone(),
        );
        let rpc_server =
            Family::<MethodLabel, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "rpc_server_duration_seconds",
            "Latency of the gRPC calls workers make, by method",
            rpc_server.clone(),
        );
        let listener_queue_full = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "listener_queue_full",
            "Events a listener's full queue did not take (the listener reads them from the log)",
            listener_queue_full.clone(),
        );
        let listener_delivered = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "listener_delivered",
            "Events delivered to each listener",
            listener_delivered.clone(),
        );
        let listener_failed = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "listener_failed_deliveries",
            "Failed delivery attempts per listener (each is retried)",
            listener_failed.clone(),
        );
        let event_streams = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "event_streams",
            "Clients connected to GET /api/v1/events",
            event_streams.clone(),
        );
        let http =
            Family::<RouteLabel, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Latency of REST requests by route",
            http.clone(),
        );
        let store_txn = latency();
        registry.register(
            "store_txn_duration_seconds",
            "Latency of durable state-store transactions",
            store_txn.clone(),
        );
        let queue_length = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "queue_length",
            "Apps waiting to be placed",
            queue_length.clone(),
        );
        let submitted = Counter::<u64, AtomicU64>::default();
        registry.register("apps_submitted", "Accepted submissions", submitted.clone());
        let engine_batch = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "engine_batch_operations",
            "Operations applied per engine batch (each batch is one store commit)",
            engine_batch.clone(),
        );
        let engine_queue = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "engine_queue",
            "Operations waiting for the engine",
            engine_queue.clone(),
        );
        let engine_busy = Counter::<f64, AtomicU64>::default();
        registry.register(
            "engine_busy_seconds",
            "Time the engine's task spent working rather than waiting (its rate near 1: the \
             single writer is saturated)",
            engine_busy.clone(),
        );
        Metrics {
            registry,
            apps,
            workers,
            transitions,
            rpc,
            store_txn,
            queue_length,
            submitted,
            http,
            rpc_server,
            listener_queue_full,
            listener_delivered,
            listener_failed,
            event_streams,
            engine_batch,
            engine_queue,
            engine_busy,
        }
    }

    pub(crate) fn set_apps(&self, state: AppState, n: i64) {
        self.apps
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(n);
    }

    pub(crate) fn set_workers(&self, state: WorkerState, n: i64) {
        self.workers
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(n);
    }

    pub(crate) fn transition(&self, state: AppState) {
        self.transitions
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc();
    }

    pub(crate) fn rpc_timer(&self, method: &str) -> Timer {
        Timer::new(
            self.rpc
                .get_or_create(&MethodLabel {
                    method: method.into(),
                })
                .clone(),
        )
    }

    pub(crate) fn http_timer(&self, route: &str) -> Timer {
        Timer::new(
            self.http
                .get_or_create(&RouteLabel {
                    route: route.into(),
                })
                .clone(),
        )
    }

    pub(crate) fn listener_queue_full(&self, name: &str) {
        self.listener_queue_full
            .get_or_create(&ListenerLabel {
                listener: name.into(),
            })
            .inc();
    }

    pub(crate) fn listener_delivered(&self, name: &str) {
        self.listener_delivered
            .get_or_create(&ListenerLabel {
                listener: name.into(),
            })
            .inc();
    }

    pub(crate) fn listener_failed(&self, name: &str) {
        self.listener_failed
            .get_or_create(&ListenerLabel {
                listener: name.into(),
            })
            .inc();
    }

    pub(crate) fn rpc_server_timer(&self, method: &str) -> Timer {
        Timer::new(
            self.rpc_server
                .get_or_create(&MethodLabel {
                    method: method.into(),
                })
                .clone(),
        )
    }

    pub(crate) fn store_txn_timer(&self) -> Timer {
        Timer::new(self.store_txn.clone())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Observes the elapsed time into a histogram when dropped.
pub(crate) struct Timer {
    hist: Histogram,
    start: Instant,
}

impl Timer {
    fn new(hist: Histogram) -> Self {
        Timer {
            hist,
            start: Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed().as_secs_f64());
    }
}
