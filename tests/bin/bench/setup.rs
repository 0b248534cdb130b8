//! The processes of one run, how to read a master's metrics, and its event stream.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{free_port, start_worker, wait_for, Api, MasterOpts, MasterProc, Proc, WorkerOpts};
use serde_json::{json, Value};

use crate::T;

/// The processes of one run. Fields drop in declaration order: workers first (they report to
/// the masters), then the masters (they resign in etcd), then etcd, then the directory.
pub(crate) struct Setup {
    pub(crate) workers: Vec<Proc>,
    pub(crate) masters: Vec<MasterProc>,
    pub(crate) etcd: Option<EtcdCluster>,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The run failed and its directory is about to go: show what the daemons said.
            let procs = self.masters.iter().map(|m| &m.proc).chain(&self.workers);
            for p in procs {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                eprintln!("----- last lines of {} -----\n{}", p.name, tail.join("\n"));
            }
        }
    }
}

impl Setup {
    pub(crate) fn new(prefix: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        Setup {
            workers: Vec::new(),
            masters: Vec::new(),
            etcd: None,
            dir,
        }
    }

    pub(crate) fn start_etcd(&mut self) {
        self.etcd = Some(EtcdCluster::start(1, self.dir.path()));
    }

    /// Starts a master: HA with `lease_ttl` when etcd runs, single-node otherwise.
    pub(crate) fn add_master(&mut self, lease_ttl: &str) {
        self.add_master_with(lease_ttl, Vec::new());
    }

    /// Starts a master as [`Setup::add_master`] does, with `extra` flags.
    pub(crate) fn add_master_with(&mut self, lease_ttl: &str, extra: Vec<String>) {
        let i = self.masters.len();
        let opts = MasterOpts {
            http_port: free_port(),
            rpc_port: free_port(),
            state_dir: self.dir.path().join(format!("m{i}")),
            worker_timeout: "10s".into(),
            etcd: self
                .etcd
                .as_ref()
                .map(|e| (e.endpoints(), lease_ttl.to_string())),
        };
        let m = MasterProc::start_with(&format!("m{i}"), opts, extra, self.dir.path());
        self.masters.push(m);
    }

    /// Starts a worker that knows every master.
    pub(crate) fn add_worker(&mut self, id: &str, cores: u32) {
        let work_dir = self.dir.path().join(id);
        self.add_worker_in(id, cores, &work_dir);
    }

    /// Starts a worker that knows every master and keeps its app directories in `work_dir`.
    pub(crate) fn add_worker_in(&mut self, id: &str, cores: u32, work_dir: &Path) {
        let masters: Vec<String> = self.masters.iter().map(|m| m.rpc_url()).collect();
        let opts = WorkerOpts {
            id: id.into(),
            cores,
            memory_mb: 4096,
            work_dir: work_dir.to_path_buf(),
            kill_grace_ms: 1000,
        };
        self.workers
            .push(start_worker(&masters, &opts, self.dir.path()));
    }

    pub(crate) fn cluster(&self, i: usize) -> Option<Value> {
        let r = self.masters[i].api.try_get("/api/v1/cluster").ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// Waits until a master is ALIVE; returns its index.
    pub(crate) fn wait_leader(&self) -> usize {
        wait_for("an ALIVE master", T, || {
            (0..self.masters.len()).find(|&i| self.cluster(i).is_some_and(|c| c["role"] == "ALIVE"))
        })
    }
}

pub(crate) fn app_body(name: &str) -> Value {
    json!({"name": name, "kind": "process", "spec": {"command": ["true"]}, "cores": 1})
}

/// A sample value from the Prometheus text format: the line `name value` (labels included).
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /metrics` as text (the harness's client parses JSON).
pub(crate) fn metrics(api: &Api) -> String {
    let url = format!("{}/metrics", api.base);
    reqwest::blocking::get(&url)
        .and_then(|r| r.error_for_status()?.text())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `GET /api/v1/events?QUERY`, read on a thread of its own. The request is plain HTTP/1.0 on a
/// socket of our own (no chunked encoding: the body is the stream itself), so dropping this
/// closes it: the master waits for open connections before it exits.
pub(crate) struct EventStream {
    sock: TcpStream,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl EventStream {
    /// Opens the stream and returns once its headers are read: from then on the stream's
    /// starting point is fixed and every later event comes. The thread passes each event's
    /// `data` to `on_event` until it returns false or the stream ends.
    pub(crate) fn open(
        api: &Api,
        query: &str,
        on_event: impl FnMut(&str) -> bool + Send + 'static,
    ) -> EventStream {
        let addr = api.base.trim_start_matches("http://").to_string();
        let mut sock = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        write!(
            sock,
            "GET /api/v1/events?{query} HTTP/1.0\r\nHost: {addr}\r\n\
             Accept: text/event-stream\r\n\r\n"
        )
        .expect("send the event stream request");
        let mut reader = BufReader::new(sock.try_clone().expect("dup socket"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("read the status line");
        assert!(
            status.contains(" 200"),
            "GET /api/v1/events?{query}: {status}"
        );
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read the headers");
            if line.trim().is_empty() {
                break;
            }
        }
        let reader = std::thread::spawn(move || read_sse(reader, on_event));
        EventStream {
            sock,
            reader: Some(reader),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// Reads an SSE stream, passing each event's `data` to `on_event` until it returns false or the
/// stream ends (an event cut off by the end is dropped).
pub(crate) fn read_sse(body: impl BufRead, mut on_event: impl FnMut(&str) -> bool) {
    let mut data = String::new();
    for line in body.lines() {
        let Ok(line) = line else { return };
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            // A blank line ends an SSE event.
            if !on_event(&data) {
                return;
            }
            data.clear();
        }
    }
}
