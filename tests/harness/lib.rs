//! The end-to-end harness: starts the real `aloha-master`, `aloha-worker` and `alohactl`
//! binaries on free 127.0.0.1 ports with temp dirs, talks to them over HTTP, and never leaks a
//! process: every child gets `PR_SET_PDEATHSIG` (it dies with the test thread that started it)
//! and is killed and reaped on drop.
//!
//! Binaries come from the workspace target dir; build them first with
//! `cargo build --workspace` (the test command in the README does).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod chaos;
pub mod etcd;

/// A number unique within this test process, for names.
pub fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// Where the workspace's binaries and plugins are.
pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d.join("debug")
        } else {
            workspace_root().join(d).join("debug")
        };
    }
    workspace_root().join("target").join("debug")
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A built binary; panics with the fix when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        p.display()
    );
    p
}

static PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free 127.0.0.1 port, never handed out twice by this process.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        let mut used = PORTS.lock().unwrap_or_else(|p| p.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// Waits until `f` returns `Some`, polling every 50 ms; panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed and reaped on drop.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    /// Its stderr log.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with output to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        cmd.stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a process (or, with a negative id, a process group) exists.
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// An HTTP response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON.
    pub body: Value,
}

/// How long the harness's clients keep an idle connection for reuse: well under the master's
/// 10 s header timeout, which also closes a keep-alive connection idle that long, so a request
/// never goes out on a connection the master is closing.
const IDLE_REUSE: Duration = Duration::from_secs(5);

/// A small blocking client for the REST API.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Api {
    /// A client for the master at `base`.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_idle_timeout(IDLE_REUSE)
                .build()
                .expect("http client"),
        }
    }

    /// A client for the master at `base` that sends `token` as its bearer token.
    pub fn with_token(base: &str, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a token header"),
        );
        Api {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_idle_timeout(IDLE_REUSE)
                .default_headers(headers)
                .build()
                .expect("http client"),
        }
    }

    fn finish(r: reqwest::Result<reqwest::blocking::Response>) -> Result<Resp, String> {
        let r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().map_err(|e| e.to_string())?;
        Ok(Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    /// GET, or an error when the master is unreachable.
    pub fn try_get(&self, path: &str) -> Result<Resp, String> {
        Self::finish(self.client.get(format!("{}{path}", self.base)).send())
    }

    /// GET.
    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.try_post(path, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// PATCH with a JSON body.
    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        Self::finish(
            self.client
                .patch(format!("{}{path}", self.base))
                .json(body)
                .send(),
        )
        .unwrap_or_else(|e| panic!("PATCH {path}: {e}"))
    }

    /// PUT with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Resp {
        Self::finish(
            self.client
                .put(format!("{}{path}", self.base))
                .json(body)
                .send(),
        )
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Resp {
        Self::finish(self.client.delete(format!("{}{path}", self.base)).send())
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    /// POST with a JSON body, or an error when the master is unreachable.
    pub fn try_post(&self, path: &str, body: &Value) -> Result<Resp, String> {
        Self::finish(
            self.client
                .post(format!("{}{path}", self.base))
                .json(body)
                .send(),
        )
    }

    /// POST with a JSON body and extra headers, or an error when the master is unreachable.
    pub fn try_post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Resp, String> {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::finish(req.send())
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        Self::finish(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body)
                .send(),
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Submits an app; panics unless 201. Returns the app.
    pub fn submit(&self, body: Value) -> Value {
        let r = self.post("/api/v1/apps", &body);
        assert_eq!(r.status, 201, "submit {body}: {:?}", r.body);
        r.body
    }

    /// Submits a `process` app running `command`.
    pub fn submit_cmd(&self, name: &str, command: &[&str], extra: Value) -> String {
        let mut body = json!({"name": name, "kind": "process", "spec": {"command": command}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.submit(body)["id"]
            .as_str()
            .expect("app id")
            .to_string()
    }

    /// One app.
    pub fn app(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/v1/apps/{id}"));
        assert_eq!(r.status, 200, "GET app {id}: {:?}", r.body);
        r.body
    }

    /// Waits until the app is in `state`; panics (showing the app) on timeout or if it ends in
    /// another terminal state.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.try_get(&format!("/api/v1/apps/{id}")) {
                if r.status == 200 {
                    last = r.body;
                    let s = last["state"].as_str().unwrap_or("");
                    if s == state {
                        return last;
                    }
                    let terminal = ["FINISHED", "FAILED", "KILLED", "ERROR"].contains(&s);
                    if terminal {
                        panic!("app {id} ended {s} while waiting for {state}: {last:#}");
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for app {id} to be {state}: {last:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Workers as served.
    pub fn workers(&self) -> Vec<Value> {
        self.get("/api/v1/workers").body["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `n` workers are ALIVE.
    pub fn wait_alive_workers(&self, n: usize, timeout: Duration) {
        wait_for(&format!("{n} ALIVE workers"), timeout, || {
            let alive = self.try_get("/api/v1/workers").ok()?.body["workers"]
                .as_array()?
                .iter()
                .filter(|w| w["state"] == "ALIVE")
                .count();
            (alive >= n).then_some(())
        })
    }

    /// The states an app went through.
    pub fn history(app: &Value) -> Vec<String> {
        app["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| e["state"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Options for a master.
#[derive(Clone, Debug)]
pub struct MasterOpts {
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port.
    pub rpc_port: u16,
    /// State dir.
    pub state_dir: PathBuf,
    /// Worker timeout, humantime.
    pub worker_timeout: String,
    /// etcd endpoints (HA mode) and the lease TTL.
    pub etcd: Option<(String, String)>,
}

/// A running master.
pub struct MasterProc {
    /// The process.
    pub proc: Proc,
    /// Its options (to restart it the same way).
    pub opts: MasterOpts,
    /// Its API.
    pub api: Api,
    /// Flags beyond the options (kept across restarts).
    pub extra_args: Vec<String>,
}

impl MasterProc {
    /// Starts a master and waits for /healthz.
    pub fn start(name: &str, opts: MasterOpts, log_dir: &Path) -> MasterProc {
        Self::start_with(name, opts, Vec::new(), log_dir)
    }

    /// Starts a master with extra flags (e.g. `--listener`) and waits for /healthz.
    pub fn start_with(
        name: &str,
        opts: MasterOpts,
        extra_args: Vec<String>,
        log_dir: &Path,
    ) -> MasterProc {
        let proc = Self::spawn_with(name, &opts, &extra_args, log_dir);
        let base = format!("http://127.0.0.1:{}", opts.http_port);
        // A master with a bootstrap token: the test's API client is its admin.
        let bootstrap = extra_args
            .iter()
            .position(|a| a == "--bootstrap-token-file")
            .and_then(|i| extra_args.get(i + 1))
            .and_then(|f| std::fs::read_to_string(f).ok());
        let api = match bootstrap {
            Some(t) => Api::with_token(&base, t.trim()),
            None => Api::new(&base),
        };
        let mut m = MasterProc {
            proc,
            opts,
            api,
            extra_args,
        };
        m.wait_healthy();
        m
    }

    /// Spawns without waiting.
    pub fn spawn(name: &str, opts: &MasterOpts, log_dir: &Path) -> Proc {
        Self::spawn_with(name, opts, &[], log_dir)
    }

    /// Spawns with extra flags, without waiting.
    pub fn spawn_with(
        name: &str,
        opts: &MasterOpts,
        extra_args: &[String],
        log_dir: &Path,
    ) -> Proc {
        let mut cmd = Command::new(bin("aloha-master"));
        cmd.args(extra_args);
        cmd.arg("--http-addr")
            .arg(format!("127.0.0.1:{}", opts.http_port))
            .arg("--rpc-addr")
            .arg(format!("127.0.0.1:{}", opts.rpc_port))
            .arg("--state-dir")
            .arg(&opts.state_dir)
            .arg("--worker-timeout")
            .arg(&opts.worker_timeout)
            .env("ALOHA_LOG", "info,aloha_master=debug");
        if let Some((endpoints, lease_ttl)) = &opts.etcd {
            cmd.arg("--etcd-endpoints")
                .arg(endpoints)
                .arg("--lease-ttl")
                .arg(lease_ttl);
        }
        Proc::spawn(name, cmd, log_dir)
    }

    fn wait_healthy(&mut self) {
        let api = self.api.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = api.try_get("/healthz") {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(st) = self.proc.wait_exit(Duration::from_millis(0)) {
                panic!("master exited with {st}: {}", self.proc.log_text());
            }
            if Instant::now() > deadline {
                panic!("master not healthy in 30s: {}", self.proc.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gRPC URL workers use.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.rpc_port)
    }

    /// SIGKILLs it and starts it again with the same options.
    pub fn restart_hard(&mut self, log_dir: &Path) {
        self.proc.kill9();
        let name = format!("{}-restarted", self.proc.name);
        self.proc = Self::spawn_with(&name, &self.opts, &self.extra_args, log_dir);
        self.wait_healthy();
    }
}

/// Options for a worker.
#[derive(Clone, Debug)]
pub struct WorkerOpts {
    /// Worker id.
    pub id: String,
    /// Cores offered.
    pub cores: u32,
    /// Memory offered, MiB.
    pub memory_mb: u64,
    /// Work dir.
    pub work_dir: PathBuf,
    /// Kill grace for the process plugin, ms.
    pub kill_grace_ms: u64,
}

/// Starts a worker against the given master gRPC URLs.
pub fn start_worker(masters: &[String], opts: &WorkerOpts, log_dir: &Path) -> Proc {
    start_worker_with_config(masters, opts, "", log_dir)
}

/// Starts a worker like [`start_worker`], with `plugin_config` (TOML, e.g. a `[plugins.spark]`
/// table) added to its configuration file after the `[plugins.process]` table.
pub fn start_worker_with_config(
    masters: &[String],
    opts: &WorkerOpts,
    plugin_config: &str,
    log_dir: &Path,
) -> Proc {
    let mut cmd = Command::new(bin("aloha-worker"));
    for m in masters {
        cmd.arg("--master").arg(m);
    }
    let config = log_dir.join(format!("{}.toml", opts.id));
    std::fs::write(
        &config,
        format!(
            "[plugins.process]\nkill_grace_ms = {}\n{plugin_config}",
            opts.kill_grace_ms
        ),
    )
    .expect("write worker config");
    cmd.arg("--config")
        .arg(&config)
        .arg("--id")
        .arg(&opts.id)
        .arg("--cores")
        .arg(opts.cores.to_string())
        .arg("--memory-mb")
        .arg(opts.memory_mb.to_string())
        .arg("--work-dir")
        .arg(&opts.work_dir)
        .arg("--plugin-dir")
        .arg(target_dir())
        .arg("--shutdown-timeout")
        .arg("10s")
        .env("ALOHA_LOG", "info,aloha_worker=debug");
    Proc::spawn(&opts.id, cmd, log_dir)
}

/// A master and its workers in one temp dir.
pub struct Cluster {
    /// The master.
    pub master: MasterProc,
    /// Workers by position.
    pub workers: Vec<Proc>,
    /// Temp dir holding state, work dirs and logs. Declared last: fields drop in order, and
    /// the processes must stop before their directories go.
    pub dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Show what the daemons said: the test failed and the temp dir is about to go.
            for p in std::iter::once(&self.master.proc).chain(self.workers.iter()) {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("----- last lines of {} -----\n{}", p.name, tail.join("\n"));
            }
        }
    }
}

impl Cluster {
    /// A master with `worker_timeout` and the given workers `(id, cores)`, all ALIVE.
    pub fn start(worker_timeout: &str, workers: &[(&str, u32)]) -> Cluster {
        Self::start_with(worker_timeout, workers, |_| Vec::new())
    }

    /// Like [`Cluster::start`], with extra master flags built from the cluster's temp dir.
    pub fn start_with(
        worker_timeout: &str,
        workers: &[(&str, u32)],
        master_args: impl FnOnce(&Path) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("aloha-e2e-")
            .tempdir()
            .expect("temp dir");
        let opts = MasterOpts {
            http_port: free_port(),
            rpc_port: free_port(),
            state_dir: dir.path().join("master"),
            worker_timeout: worker_timeout.to_string(),
            etcd: None,
        };
        let extra = master_args(dir.path());
        let master = MasterProc::start_with("master", opts, extra, dir.path());
        let mut c = Cluster {
            master,
            workers: Vec::new(),
            dir,
        };
        for (id, cores) in workers {
            c.add_worker(id, *cores);
        }
        c.api()
            .wait_alive_workers(workers.len(), Duration::from_secs(30));
        c
    }

    /// The master's API.
    pub fn api(&self) -> &Api {
        &self.master.api
    }

    /// The options a worker with this id gets.
    pub fn worker_opts(&self, id: &str, cores: u32) -> WorkerOpts {
        WorkerOpts {
            id: id.to_string(),
            cores,
            memory_mb: 4096,
            work_dir: self.dir.path().join(id),
            kill_grace_ms: 2000,
        }
    }

    /// Starts another worker.
    pub fn add_worker(&mut self, id: &str, cores: u32) -> usize {
        let opts = self.worker_opts(id, cores);
        let p = start_worker(&[self.master.rpc_url()], &opts, self.dir.path());
        self.workers.push(p);
        self.workers.len() - 1
    }

    /// The directory of an app attempt on a worker.
    pub fn app_dir(&self, worker: &str, app: &str, attempt: u32) -> PathBuf {
        self.dir
            .path()
            .join(worker)
            .join(app)
            .join(attempt.to_string())
    }

    /// Runs `alohactl` against the master; returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin("alohactl"))
            .arg("--master")
            .arg(&self.master.api.base)
            .args(args)
            .output()
            .expect("run alohactl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Reads the pid an app's process plugin wrote, waiting for it to appear.
pub fn app_pid(dir: &Path) -> i32 {
    let f = dir.join("pid");
    wait_for(&format!("{}", f.display()), Duration::from_secs(10), || {
        std::fs::read_to_string(&f).ok()?.trim().parse().ok()
    })
}

impl Cluster {
    /// Starts another worker with `plugin_config` (TOML tables such as `[plugins.spark]`) added
    /// to its configuration file; see [`start_worker_with_config`].
    pub fn add_worker_with_config(&mut self, id: &str, cores: u32, plugin_config: &str) -> usize {
        let opts = self.worker_opts(id, cores);
        let p = start_worker_with_config(
            &[self.master.rpc_url()],
            &opts,
            plugin_config,
            self.dir.path(),
        );
        self.workers.push(p);
        self.workers.len() - 1
    }
}

/// `s` as a TOML basic string, quotes included (for paths in generated configuration files).
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The live (non-zombie) members of process group `pgid`, with their command names, from /proc.
pub fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Processes may vanish while we look.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() >= 3 && rest[0] != "Z" && rest[2].parse::<i32>() == Ok(pgid) {
            members.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    members
}

/// Where `scripts/install-spark-flink.sh` puts its venvs: `$ALOHA_TOOLS_DIR`, else
/// `$HOME/.cache/aloha-tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("ALOHA_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/aloha-tools"),
    }
}

/// `<venv>/lib/python3.*/site-packages/<package>` in the newest venv of [`tools_dir`] whose name
/// starts with `prefix` (`pyspark-`, `flink-`), if there is one.
pub fn find_in_tool_venvs(prefix: &str, package: &str) -> Option<PathBuf> {
    let mut venvs: Vec<PathBuf> = std::fs::read_dir(tools_dir())
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    venvs.sort();
    venvs.into_iter().rev().find_map(|venv| {
        std::fs::read_dir(venv.join("lib"))
            .ok()?
            .flatten()
            .map(|e| e.path().join("site-packages").join(package))
            .find(|p| p.is_dir())
    })
}

/// Panics, saying how to install it (`install`), unless `java -version` works.
pub fn require_java(install: &str) {
    let ok = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "`java -version` failed: Java is missing; {install}");
}

/// Panics, saying how to install it (`install`), unless `python` can import `module`.
pub fn require_python_module(python: &Path, module: &str, install: &str) {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import {module}; {install}", python.display());
}

/// The release build's directory: [`target_dir`]'s sibling `release` (`target/release`, or
/// `$CARGO_TARGET_DIR/release`).
pub fn release_dir() -> PathBuf {
    target_dir().with_file_name("release")
}

/// Makes [`target_dir`] — so [`bin`], every master and worker started here and the plugins the
/// workers load — use the binaries in `dir` (e.g. [`release_dir`]) instead of the debug build,
/// for benchmarks. It points `CARGO_TARGET_DIR` at a new temp dir whose `debug` is a link to
/// `dir`; keep the returned dir alive while processes start. Setting an environment variable is
/// only sound before other threads start: call it first thing in `main`, never from a test.
pub fn use_bin_dir(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    let dir = dir.canonicalize()?;
    let link = tempfile::Builder::new()
        .prefix("aloha-bin-dir-")
        .tempdir()?;
    std::os::unix::fs::symlink(&dir, link.path().join("debug"))?;
    std::env::set_var("CARGO_TARGET_DIR", link.path());
    Ok(link)
}

/// Two HA masters on `etcd` (lease 2 s, worker timeout 3 s), their state under `dir`.
pub fn ha_masters(etcd: &etcd::EtcdCluster, dir: &Path) -> Vec<MasterProc> {
    (0..2)
        .map(|i| {
            let opts = MasterOpts {
                http_port: free_port(),
                rpc_port: free_port(),
                state_dir: dir.join(format!("m{i}")),
                worker_timeout: "3s".into(),
                etcd: Some((etcd.endpoints(), "2s".into())),
            };
            MasterProc::start(&format!("m{i}"), opts, dir)
        })
        .collect()
}

/// The role a master reports (`ALIVE`, `STANDBY`, `RECOVERING`), if it answers.
pub fn role_of(m: &MasterProc) -> Option<String> {
    let r = m.api.try_get("/api/v1/cluster").ok()?;
    r.body["role"].as_str().map(str::to_string)
}

/// Waits until one of `masters` is ALIVE; its index.
pub fn leader_of(masters: &[MasterProc], timeout: Duration) -> usize {
    wait_for("a leader", timeout, || {
        masters
            .iter()
            .position(|m| role_of(m).as_deref() == Some("ALIVE"))
    })
}

/// The Spark distribution inside the pyspark package (it has `bin/spark-submit`): `SPARK_HOME`,
/// else the pyspark venv under [`tools_dir`]. Panics with `install` when Java or pyspark is
/// missing.
pub fn spark_home(install: &str) -> PathBuf {
    require_java(install);
    let home = std::env::var_os("SPARK_HOME")
        .map(PathBuf::from)
        .or_else(|| find_in_tool_venvs("pyspark-", "pyspark"))
        .unwrap_or_else(|| {
            panic!(
                "pyspark is missing: SPARK_HOME is not set and {} has no pyspark venv; {install}",
                tools_dir().display()
            )
        });
    assert!(
        home.join("bin/spark-submit").is_file(),
        "{} has no bin/spark-submit; {install}",
        home.display()
    );
    home
}
