//! Listener plugins: every event, delivered in order, to each listener on its own thread.
//!
//! Each listener has a bounded queue and a thread. Publishing never blocks: when a queue is
//! full the event is not queued (the `aloha_listener_queue_full_total` counter and a log line
//! say so), and the listener's thread reads what it missed from the persisted event log. So a
//! slow or stuck listener never slows scheduling, and never loses an event.
//!
//! Delivery is at least once. Each listener's position (`listeners/<name>/cursor`, the last
//! sequence number delivered) is written through the leader's fenced store after every batch;
//! after a crash or a failover, delivery resumes after the cursor, so events delivered after
//! the last cursor write may be delivered again (they keep their `seq`: listeners can skip
//! what they have; the jsonl listener does). A failed delivery is retried with backoff until
//! it succeeds. A brand-new listener starts with the events written after it was first loaded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloha_core::Event;
use aloha_plugin::host::{ListenerInstance, ListenerPlugin};
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::events::EventLog;
use crate::metrics::Metrics;
use crate::store::{StateStore, StoreError, Txn};

/// One listener as configured: `[[listeners]]` in the master config, or `--listener`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Name (unique; names the cursor). Defaults to the plugin's own name.
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin library (`.so`).
    pub path: PathBuf,
    /// Settings handed to the plugin's `create`.
    #[serde(default = "empty")]
    pub config: serde_json::Value,
    /// Queue capacity before events are left to the catch-up from the log.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn empty() -> serde_json::Value {
    serde_json::json!({})
}

fn default_queue() -> usize {
    1024
}

impl ListenerSpec {
    /// Parses `--listener PATH` or `--listener PATH=JSON-CONFIG`.
    pub fn parse_flag(s: &str) -> Result<ListenerSpec, String> {
        let (path, config) = match s.split_once('=') {
            Some((p, c)) => (
                p,
                serde_json::from_str(c)
                    .map_err(|e| format!("--listener {s:?}: bad JSON config: {e}"))?,
            ),
            None => (s, empty()),
        };
        if path.is_empty() {
            return Err(format!("--listener {s:?}: no plugin path"));
        }
        Ok(ListenerSpec {
            name: None,
            path: PathBuf::from(path),
            config,
            queue: default_queue(),
        })
    }
}

/// A listener plugin loaded at master start, with its settings checked.
pub struct LoadedListener {
    name: String,
    plugin: Arc<ListenerPlugin>,
    spec: ListenerSpec,
}

/// Loads every listener; any failure is a start-up error naming the listener.
pub fn load(specs: &[ListenerSpec]) -> Result<Vec<LoadedListener>, String> {
    let mut out: Vec<LoadedListener> = Vec::new();
    for spec in specs {
        let plugin = ListenerPlugin::load(&spec.path).map_err(|e| format!("listener: {e}"))?;
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| plugin.name().to_string());
        if out.iter().any(|l| l.name == name) {
            return Err(format!(
                "two listeners are named {name:?}; give them distinct `name`s"
            ));
        }
        // Create once to check the settings now rather than at the first leadership.
        plugin
            .create(&spec.config)
            .map_err(|e| format!("listener {name:?} refused its config: {e}"))?;
        info!(listener = %name, path = %spec.path.display(), "listener plugin loaded");
        out.push(LoadedListener {
            name,
            plugin: Arc::new(plugin),
            spec: spec.clone(),
        });
    }
    Ok(out)
}

fn cursor_key(name: &str) -> String {
    crate::store::keys::listener_cursor(name)
}

struct Running {
    name: String,
    tx: SyncSender<Arc<Event>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The listeners of one leadership: started when a master becomes ALIVE, stopped when it
/// steps down.
pub struct Listeners {
    running: Vec<Running>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Listeners {
    /// Starts a thread per listener, delivering from its cursor on.
    pub fn start(
        loaded: &[LoadedListener],
        store: Arc<dyn StateStore>,
        log: Arc<EventLog>,
        metrics: Arc<Metrics>,
        rt: tokio::runtime::Handle,
    ) -> Result<Arc<Listeners>, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for l in loaded {
            let instance = l
                .plugin
                .create(&l.spec.config)
                .map_err(|e| format!("listener {:?}: {e}", l.name))?;
            let (tx, rx) = sync_channel(l.spec.queue.max(1));
            let worker = Delivery {
                name: l.name.clone(),
                instance,
                rx,
                store: store.clone(),
                log: log.clone(),
                stop: stop.clone(),
                metrics: metrics.clone(),
                rt: rt.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("listener-{}", l.name))
                .spawn(move || worker.run())
                .map_err(|e| format!("cannot start listener thread: {e}"))?;
            running.push(Running {
                name: l.name.clone(),
                tx,
                thread: Some(thread),
            });
        }
        Ok(Arc::new(Listeners {
            running,
            stop,
            metrics,
        }))
    }

    /// Offers freshly committed events to every listener without ever blocking.
    pub fn publish(&self, events: &[Arc<Event>]) {
        for r in &self.running {
            for e in events {
                match r.tx.try_send(e.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.metrics.listener_queue_full(&r.name);
                        // The thread catches up from the log; this is only a note.
                        warn!(listener = %r.name, seq = e.seq, "listener queue full; it will catch up from the event log");
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
        }
    }

    /// Stops every thread (after its current delivery) and waits for them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for r in &mut self.running {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Delivery {
    name: String,
    instance: ListenerInstance,
    rx: Receiver<Arc<Event>>,
    store: Arc<dyn StateStore>,
    log: Arc<EventLog>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
}

impl Delivery {
    fn run(mut self) {
        let mut cursor = match self.load_cursor() {
            Ok(c) => c,
            Err(e) => {
                error!(listener = %self.name, "cannot read the listener cursor: {e}; not delivering");
                return;
            }
        };
        info!(listener = %self.name, cursor, "listener delivering");
        let mut saved = cursor;
        while !self.stop.load(Ordering::SeqCst) {
            // Catch up from the log whenever it is ahead of us (missed or queue-full events).
            let ahead = self.log.last_seq() > cursor;
            let next = if ahead {
                None
            } else {
                match self.rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let batch: Vec<Arc<Event>> = match next {
                Some(e) if e.seq <= cursor => continue,
                Some(e) if e.seq == cursor + 1 => vec![e],
                _ => match self.rt.block_on(self.log.read_after(cursor, 256)) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(listener = %self.name, "cannot read the event log: {e}");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                },
            };
            for e in batch {
                if e.seq <= cursor {
                    continue;
                }
                if !self.deliver(&e) {
                    break;
                }
                cursor = e.seq;
                self.metrics.listener_delivered(&self.name);
            }
            // Persist the position once caught up with the log (or every 100 events).
            if cursor != saved && (self.log.last_seq() <= cursor || cursor - saved >= 100) {
                match self.save_cursor(cursor) {
                    Ok(()) => saved = cursor,
                    Err(StoreError::Fenced) => break,
                    Err(e) => warn!(listener = %self.name, "cannot save the listener cursor: {e}"),
                }
            }
        }
        if cursor != saved {
            let _ = self.save_cursor(cursor);
        }
        info!(listener = %self.name, cursor, "listener stopped");
    }

    /// Delivers one event, retrying with backoff until it succeeds or the listener stops.
    fn deliver(&mut self, e: &Event) -> bool {
        let json = match serde_json::to_string(e) {
            Ok(j) => j,
            Err(err) => {
                error!(listener = %self.name, seq = e.seq, "cannot encode event: {err}");
                return true;
            }
        };
        let mut backoff = Duration::from_millis(200);
        let mut first_failure: Option<Instant> = None;
        loop {
            match self.instance.deliver(&json, e.body.type_name()) {
                Ok(()) => {
                    if let Some(t) = first_failure {
                        info!(listener = %self.name, seq = e.seq, after = ?t.elapsed(), "delivered after retries");
                    }
                    return true;
                }
                Err(err) => {
                    self.metrics.listener_failed(&self.name);
                    first_failure.get_or_insert_with(Instant::now);
                    warn!(listener = %self.name, seq = e.seq, "delivery failed: {err}; retrying in {backoff:?}");
                }
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if self.stop.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    fn load_cursor(&self) -> Result<u64, StoreError> {
        let key = cursor_key(&self.name);
        let current = self.rt.block_on(self.store.get(&key))?;
        match current.and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok()) {
            Some(c) => Ok(c),
            None => {
                // A new listener: start with what is written from now on.
                let last = self.rt.block_on(self.log.load_last_seq())?;
                self.save_cursor(last)?;
                Ok(last)
            }
        }
    }

    fn save_cursor(&self, cursor: u64) -> Result<(), StoreError> {
        let mut txn = Txn::default();
        txn.put(cursor_key(&self.name), cursor.to_string().into_bytes());
        if self.rt.block_on(self.store.txn(txn))? {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_flags_parse() {
        let s = ListenerSpec::parse_flag("/x/lib.so").unwrap();
        assert_eq!(s.path, PathBuf::from("/x/lib.so"));
        assert_eq!(s.config, serde_json::json!({}));
        let s = ListenerSpec::parse_flag(r#"/x/lib.so={"path": "/tmp/e.jsonl"}"#).unwrap();
        assert_eq!(s.config["path"], "/tmp/e.jsonl");
        assert!(ListenerSpec::parse_flag("/x/lib.so={nope").is_err());
        assert!(ListenerSpec::parse_flag("={}").is_err());
    }
}
