//! The chaos engine behind `aloha-bench chaos` and `tests/chaos.rs`: a real 3-member etcd on
//! loopback, three HA masters and two workers under continuous submissions of short and long
//! `process` apps, while faults are injected in cycles (SIGKILL / SIGSTOP of the leader, worker
//! SIGKILL, etcd member loss, etcd quorum loss).
//!
//! What it checks, from outside only:
//! - every app a master acknowledged with `201` still exists at the end (else it is *lost*);
//! - it ends (short apps) or runs (long apps) within a deadline after the last fault (else it is
//!   *stuck*);
//! - no two processes of one app are alive at once (a *double run*), sampled from /proc every
//!   ~100 ms by a marker in the apps' environment (`ALOHA_CHAOS_RUN`, beside the `ALOHA_APP_ID`
//!   and `ALOHA_ATTEMPT` the process plugin sets);
//! - no process of the run survives the end (an *orphan*).
//!
//! It also measures failover: from the leader's SIGKILL to the first `201` another master gives.
//!
//! The engine only collects; the caller judges ([`ChaosReport::ok`]) and prints. Every process
//! is owned by the rig, whose drop stops the threads first and then the processes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::etcd::EtcdCluster;
use crate::{free_port, start_worker, MasterOpts, MasterProc, Proc, WorkerOpts};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL the leader, measure the failover, start it again.
    LeaderKill,
    /// SIGSTOP the leader for 3× the lease TTL, then SIGCONT.
    LeaderStop,
    /// SIGKILL a worker, start it again with the same id a few seconds later.
    WorkerKill,
    /// SIGKILL one etcd member, start it again a few seconds later.
    EtcdMember,
    /// SIGKILL two of the three etcd members (quorum lost), start them again.
    EtcdQuorum,
}

impl Fault {
    /// Every fault, in the order a cycle runs them.
    pub const ALL: [Fault; 5] = [
        Fault::LeaderKill,
        Fault::LeaderStop,
        Fault::WorkerKill,
        Fault::EtcdMember,
        Fault::EtcdQuorum,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::LeaderStop => "leader-stop",
            Fault::WorkerKill => "worker-kill",
            Fault::EtcdMember => "etcd-member",
            Fault::EtcdQuorum => "etcd-quorum",
        }
    }

    /// The fault named `s`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?} (known: {})", names.join(", "))
            })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOpts {
    /// Cycles per fault kind; kinds are interleaved (one of each per round).
    pub plan: Vec<(Fault, usize)>,
    /// The masters' `--lease-ttl`, whole seconds.
    pub lease_ttl: Duration,
    /// Passed to every master as `--fast-failover <value>` when set.
    pub fast_failover: Option<bool>,
    /// The masters' `--worker-timeout`.
    pub worker_timeout: Duration,
    /// The pause between two acknowledged submissions.
    pub submit_every: Duration,
    /// Every this-many-th submission is a long app.
    pub long_every: u64,
    /// How long a short app's process runs.
    pub short_run: Duration,
    /// How long a long app's process runs (they are killed at the end).
    pub long_run: Duration,
    /// After the last fault, how long short apps may take to end and long apps to run before
    /// they count as stuck.
    pub stuck_after: Duration,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl ChaosOpts {
    /// `plan` with a `lease_ttl` and the defaults: worker timeout 5 s, a submission every 100 ms,
    /// every 10th a long app (20 s), short apps 0.3 s, stuck after 60 s.
    pub fn new(plan: Vec<(Fault, usize)>, lease_ttl: Duration) -> ChaosOpts {
        ChaosOpts {
            plan,
            lease_ttl,
            fast_failover: None,
            worker_timeout: Duration::from_secs(5),
            submit_every: Duration::from_millis(100),
            long_every: 10,
            short_run: Duration::from_millis(300),
            long_run: Duration::from_secs(20),
            stuck_after: Duration::from_secs(60),
            verbose: true,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Faults injected, per kind.
    pub faults: BTreeMap<Fault, usize>,
    /// Apps acknowledged with 201: short and long.
    pub acknowledged_short: usize,
    /// See `acknowledged_short`.
    pub acknowledged_long: usize,
    /// Acknowledged apps missing at the end: `id (name): why`.
    pub lost: Vec<String>,
    /// Acknowledged apps neither ended nor running by the deadline: `id (name): state`.
    pub stuck: Vec<String>,
    /// Apps seen with two live processes at once: `id: pids and attempts, when`.
    pub double_runs: Vec<String>,
    /// Processes of the run still alive at the end: `pid app attempt`.
    pub orphans: Vec<String>,
    /// How many times the sampler scanned /proc, and the most app processes it saw at once
    /// (a sampler that sees nothing would find no double run either).
    pub samples: usize,
    /// See `samples`.
    pub max_live: usize,
    /// Leader SIGKILL → first 201 from another master, one per `leader-kill`.
    pub failovers: Vec<Duration>,
    /// The acknowledged apps' final states, counted.
    pub end_states: BTreeMap<String, usize>,
    /// Acknowledged apps that ran more than one attempt (relaunched after a fault).
    pub relaunched: usize,
    /// Everything else that went wrong: a fault the cluster did not recover from, a submission
    /// refused as invalid, a check that could not run.
    pub errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The run's directory (logs, state), kept when the run found something.
    pub kept_dir: Option<PathBuf>,
}

impl ChaosReport {
    /// Acknowledged apps, short and long.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged_short + self.acknowledged_long
    }

    /// Nothing lost, stuck, run twice or left behind, and nothing else went wrong.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.stuck.is_empty()
            && self.double_runs.is_empty()
            && self.orphans.is_empty()
            && self.errors.is_empty()
    }

    /// The findings, one per line (at most `max` of each kind), for a failure message.
    pub fn findings(&self, max: usize) -> String {
        let mut out = String::new();
        let lists = [
            ("lost", &self.lost),
            ("stuck", &self.stuck),
            ("double run", &self.double_runs),
            ("orphan", &self.orphans),
            ("error", &self.errors),
        ];
        for (what, list) in lists {
            for item in list.iter().take(max) {
                out.push_str(&format!("{what}: {item}\n"));
            }
            if list.len() > max {
                out.push_str(&format!("... and {} more {what}\n", list.len() - max));
            }
        }
        if let Some(d) = &self.kept_dir {
            out.push_str(&format!("logs and state kept in {}\n", d.display()));
        }
        out
    }
}

/// Runs the plan and reports. Panics only when the rig cannot be set up or a process cannot be
/// started; a cluster that does not recover is reported in [`ChaosReport::errors`].
pub fn run(opts: &ChaosOpts) -> ChaosReport {
    let started = Instant::now();
    let mut rig = Rig::start(opts);
    let mut report = ChaosReport::default();
    rig.inject(opts, &mut report);
    rig.check(opts, &mut report);
    report.elapsed = started.elapsed();
    if !report.ok() {
        report.kept_dir = rig.dir.take().map(|d| d.keep());
    }
    report
}

/// A short client: a stopped master must not hold the engine for long.
#[derive(Clone)]
struct Http(reqwest::blocking::Client);

impl Http {
    fn new() -> Http {
        Http(
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client"),
        )
    }

    fn finish(r: reqwest::Result<reqwest::blocking::Response>) -> Result<(u16, Value), String> {
        let r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn get(&self, base: &str, path: &str) -> Result<(u16, Value), String> {
        Self::finish(self.0.get(format!("{base}{path}")).send())
    }

    fn post(&self, base: &str, path: &str, body: &Value) -> Result<(u16, Value), String> {
        Self::finish(self.0.post(format!("{base}{path}")).json(body).send())
    }
}

/// An acknowledged app.
struct Acked {
    id: String,
    name: String,
    long: bool,
}

/// What the threads share with the engine.
#[derive(Default)]
struct Shared {
    acked: Mutex<Vec<Acked>>,
    /// App id → the first double run seen of it.
    doubles: Mutex<BTreeMap<String, String>>,
    errors: Mutex<Vec<String>>,
    /// Scans of /proc, and the most app processes one scan found.
    samples: Mutex<(usize, usize)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The processes and threads of one run. Dropping it stops the threads, then the workers, the
/// masters, etcd, and removes the directory (fields drop in declaration order).
struct Rig {
    run_id: String,
    http: Http,
    shared: Arc<Shared>,
    stop_submitter: Arc<AtomicBool>,
    stop_sampler: Arc<AtomicBool>,
    submitter: Option<JoinHandle<()>>,
    sampler: Option<JoinHandle<()>>,
    started: Instant,
    bases: Vec<String>,
    submissions: u64,
    workers: Vec<Option<Proc>>,
    worker_opts: Vec<WorkerOpts>,
    masters: Vec<MasterProc>,
    master_args: Vec<String>,
    restarts: usize,
    etcd: EtcdCluster,
    dir: Option<tempfile::TempDir>,
    log_dir: PathBuf,
    /// The master last found leading, asked first.
    leader_hint: std::cell::Cell<usize>,
    /// Set when no master answered for an app: later lookups fail at once instead of each
    /// waiting out its deadline.
    unreachable: std::cell::Cell<bool>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_threads();
        // A master stopped by a failed leader-stop would ignore the SIGTERM it gets on drop.
        for m in &self.masters {
            m.proc.signal(libc::SIGCONT);
        }
        if std::thread::panicking() {
            let procs = self
                .masters
                .iter()
                .map(|m| &m.proc)
                .chain(self.workers.iter().flatten());
            for p in procs {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                eprintln!("----- last lines of {} -----\n{}", p.name, tail.join("\n"));
            }
        }
    }
}

impl Rig {
    fn start(opts: &ChaosOpts) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("aloha-chaos-")
            .tempdir()
            .expect("temp dir");
        let log_dir = dir.path().to_path_buf();
        let etcd = EtcdCluster::start(3, &log_dir);
        let mut master_args: Vec<String> = [
            "--retain-finished",
            "10000000",
            "--retain-finished-for",
            "30days",
        ]
        .map(String::from)
        .to_vec();
        if let Some(v) = opts.fast_failover {
            master_args.extend(["--fast-failover".to_string(), v.to_string()]);
        }
        let lease = format!("{}s", opts.lease_ttl.as_secs().max(1));
        let masters: Vec<MasterProc> = (0..3)
            .map(|i| {
                let o = MasterOpts {
                    http_port: free_port(),
                    rpc_port: free_port(),
                    state_dir: log_dir.join(format!("m{i}")),
                    worker_timeout: humantime::format_duration(opts.worker_timeout).to_string(),
                    etcd: Some((etcd.endpoints(), lease.clone())),
                };
                MasterProc::start_with(&format!("m{i}"), o, master_args.clone(), &log_dir)
            })
            .collect();
        let rpc: Vec<String> = masters.iter().map(MasterProc::rpc_url).collect();
        let worker_opts: Vec<WorkerOpts> = ["w1", "w2"]
            .iter()
            .map(|id| WorkerOpts {
                id: id.to_string(),
                cores: 16,
                memory_mb: 4096,
                work_dir: log_dir.join(id),
                kill_grace_ms: 1000,
            })
            .collect();
        let workers = worker_opts
            .iter()
            .map(|o| Some(start_worker(&rpc, o, &log_dir)))
            .collect();
        let bases = masters.iter().map(|m| m.api.base.clone()).collect();
        let run_id = format!(
            "{}-{}-{}",
            std::process::id(),
            crate::unique(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let mut rig = Rig {
            run_id,
            http: Http::new(),
            shared: Arc::new(Shared::default()),
            stop_submitter: Arc::new(AtomicBool::new(false)),
            stop_sampler: Arc::new(AtomicBool::new(false)),
            submitter: None,
            sampler: None,
            started: Instant::now(),
            bases,
            submissions: 0,
            workers,
            worker_opts,
            masters,
            master_args,
            restarts: 0,
            etcd,
            dir: Some(dir),
            log_dir,
            leader_hint: std::cell::Cell::new(0),
            unreachable: std::cell::Cell::new(false),
        };
        if let Err(e) = rig.settle(Duration::from_secs(60), None) {
            panic!("the chaos cluster did not start: {e}");
        }
        rig.start_threads(opts);
        rig
    }

    fn say(&self, opts: &ChaosOpts, msg: &str) {
        if opts.verbose {
            eprintln!(
                "chaos [{:>6.1}s] {msg}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn start_threads(&mut self, opts: &ChaosOpts) {
        let sub = Submitter {
            bases: self.bases.clone(),
            http: self.http.clone(),
            run_id: self.run_id.clone(),
            shared: self.shared.clone(),
            every: opts.submit_every,
            long_every: opts.long_every.max(1),
            short_run: opts.short_run,
            long_run: opts.long_run,
        };
        let stop = self.stop_submitter.clone();
        self.submitter = Some(
            std::thread::Builder::new()
                .name("chaos-submitter".into())
                .spawn(move || sub.run(&stop))
                .expect("spawn the submitter"),
        );
        let (run_id, shared, stop, t0) = (
            self.run_id.clone(),
            self.shared.clone(),
            self.stop_sampler.clone(),
            self.started,
        );
        self.sampler = Some(
            std::thread::Builder::new()
                .name("chaos-sampler".into())
                .spawn(move || sampler(&run_id, &shared, &stop, t0))
                .expect("spawn the sampler"),
        );
    }

    fn stop_submitter(&mut self) {
        self.stop_submitter.store(true, Ordering::SeqCst);
        if let Some(h) = self.submitter.take() {
            let _ = h.join();
        }
    }

    fn stop_threads(&mut self) {
        self.stop_submitter();
        self.stop_sampler.store(true, Ordering::SeqCst);
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
    }

    fn role(&self, i: usize) -> Option<String> {
        let (status, body) = self.http.get(&self.bases[i], "/api/v1/cluster").ok()?;
        (status == 200).then(|| body["role"].as_str().unwrap_or("").to_string())
    }

    /// Waits until every master answers, exactly one is ALIVE and the others STANDBY, and the
    /// leader sees both workers ALIVE. `skip` is a master not to ask (a stopped one).
    fn settle(&self, timeout: Duration, skip: Option<usize>) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let roles: Vec<Option<String>> = (0..self.masters.len())
                .map(|i| if skip == Some(i) { None } else { self.role(i) })
                .collect();
            let alive: Vec<usize> = (0..roles.len())
                .filter(|&i| roles[i].as_deref() == Some("ALIVE"))
                .collect();
            let standbys_ok = (0..roles.len()).all(|i| {
                skip == Some(i) || alive.contains(&i) || roles[i].as_deref() == Some("STANDBY")
            });
            let workers = match alive.as_slice() {
                [l] => self
                    .http
                    .get(&self.bases[*l], "/api/v1/workers")
                    .ok()
                    .and_then(|(_, b)| {
                        b["workers"]
                            .as_array()
                            .map(|ws| ws.iter().filter(|w| w["state"] == "ALIVE").count())
                    })
                    .unwrap_or(0),
                _ => 0,
            };
            if alive.len() == 1 && standbys_ok && workers >= self.workers.len() {
                return Ok(alive[0]);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not settled after {timeout:?} (one ALIVE master, the others STANDBY, both \
                     workers ALIVE): roles {roles:?}, ALIVE workers on the leader {workers}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts master `i` again (its process is gone) with the same ports, state and flags.
    fn restart_master(&mut self, i: usize) -> Result<(), String> {
        self.restarts += 1;
        let name = format!("m{i}-r{}", self.restarts);
        let m = &mut self.masters[i];
        m.proc.kill9();
        m.proc = MasterProc::spawn_with(&name, &m.opts, &self.master_args, &self.log_dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.http.get(&self.bases[i], "/healthz") {
                return Ok(());
            }
            if let Some(st) = self.masters[i].proc.wait_exit(Duration::ZERO) {
                return Err(format!("{name} exited with {st} after its restart"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} not healthy 30 s after its restart"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart_worker(&mut self, i: usize) {
        let rpc: Vec<String> = self.masters.iter().map(MasterProc::rpc_url).collect();
        self.workers[i] = Some(start_worker(&rpc, &self.worker_opts[i], &self.log_dir));
    }

    /// Submits probes (short apps) to the masters in `to` every 10 ms until one answers 201;
    /// the time of that answer.
    fn probe_until_accepted(&mut self, to: &[usize], timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut k = 0;
        while Instant::now() < deadline {
            let i = to[k % to.len()];
            k += 1;
            self.submissions += 1;
            let name = format!("chaos-probe-{}", self.submissions);
            let body = app_body(&self.run_id, &name, false, Duration::from_millis(300));
            if let Ok((201, b)) = self.http.post(&self.bases[i], "/api/v1/apps", &body) {
                let at = Instant::now();
                record_ack(&self.shared, &b, name, false);
                return Some(at);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn inject(&mut self, opts: &ChaosOpts, report: &mut ChaosReport) {
        let rounds = opts.plan.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let ttl = opts.lease_ttl.max(Duration::from_secs(1));
        'rounds: for round in 0..rounds {
            for &(fault, n) in &opts.plan {
                if round >= n {
                    continue;
                }
                // Let submissions flow in the steady state, for a random while so that faults
                // do not always land at the same point of the lease keep-alive cycle.
                std::thread::sleep(Duration::from_millis(300) + random_below(ttl));
                let leader = match self.settle(Duration::from_secs(90), None) {
                    Ok(l) => l,
                    Err(e) => {
                        report.errors.push(format!(
                            "before {} {}/{n}: {e}",
                            fault.name(),
                            round + 1
                        ));
                        break 'rounds;
                    }
                };
                let what = format!("{} {}/{n}", fault.name(), round + 1);
                let result = self.fault(fault, round, leader, ttl, report);
                *report.faults.entry(fault).or_default() += 1;
                match result {
                    Ok(note) => self.say(opts, &format!("{what}: {note}")),
                    Err(e) => {
                        self.say(opts, &format!("{what}: FAILED: {e}"));
                        report.errors.push(format!("{what}: {e}"));
                        break 'rounds;
                    }
                }
            }
        }
    }

    /// One fault; what happened, for the progress line.
    fn fault(
        &mut self,
        fault: Fault,
        round: usize,
        leader: usize,
        ttl: Duration,
        report: &mut ChaosReport,
    ) -> Result<String, String> {
        match fault {
            Fault::LeaderKill => {
                let killed = Instant::now();
                self.masters[leader].proc.kill9();
                let others: Vec<usize> = (0..self.masters.len()).filter(|&i| i != leader).collect();
                let at = self
                    .probe_until_accepted(&others, Duration::from_secs(60))
                    .ok_or("no other master accepted a submission within 60 s")?;
                let failover = at - killed;
                report.failovers.push(failover);
                self.restart_master(leader)?;
                Ok(format!(
                    "m{leader} SIGKILLed, failover {:.0} ms, restarted",
                    failover.as_secs_f64() * 1000.0
                ))
            }
            Fault::LeaderStop => {
                self.masters[leader].proc.signal(libc::SIGSTOP);
                std::thread::sleep(3 * ttl);
                // Another master should have taken over meanwhile.
                let took_over = self.settle(Duration::from_millis(1), Some(leader)).is_ok();
                self.masters[leader].proc.signal(libc::SIGCONT);
                Ok(format!(
                    "m{leader} SIGSTOPped for {:?}, then SIGCONT (another leader during the \
                     pause: {took_over})",
                    3 * ttl
                ))
            }
            Fault::WorkerKill => {
                let w = round % self.workers.len();
                if let Some(mut p) = self.workers[w].take() {
                    p.kill9();
                }
                // Sometimes back before the worker timeout (it re-registers), sometimes after
                // (the master has declared it lost).
                let down = Duration::from_secs(1) + random_below(Duration::from_secs(6));
                std::thread::sleep(down);
                self.restart_worker(w);
                Ok(format!(
                    "{} SIGKILLed, restarted after {:.1} s",
                    self.worker_opts[w].id,
                    down.as_secs_f64()
                ))
            }
            Fault::EtcdMember => {
                let m = round % self.etcd.member_count();
                self.etcd.kill_member(m);
                let down = Duration::from_secs(2) + random_below(Duration::from_secs(2));
                std::thread::sleep(down);
                self.etcd.start_member(m);
                self.etcd.wait_healthy();
                Ok(format!(
                    "etcd{m} SIGKILLed, restarted after {:.1} s",
                    down.as_secs_f64()
                ))
            }
            Fault::EtcdQuorum => {
                let n = self.etcd.member_count();
                let (a, b) = (round % n, (round + 1) % n);
                self.etcd.kill_member(a);
                self.etcd.kill_member(b);
                let down = Duration::from_secs(2) + random_below(Duration::from_secs(3));
                std::thread::sleep(down);
                self.etcd.start_member(a);
                self.etcd.start_member(b);
                self.etcd.wait_healthy();
                Ok(format!(
                    "etcd{a} and etcd{b} SIGKILLed (quorum lost), restarted after {:.1} s",
                    down.as_secs_f64()
                ))
            }
        }
    }

    /// The leader, found within `timeout`.
    fn leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let n = self.masters.len();
        loop {
            let hint = self.leader_hint.get();
            if let Some(l) = (hint..hint + n)
                .map(|i| i % n)
                .find(|&i| self.role(i).as_deref() == Some("ALIVE"))
            {
                self.leader_hint.set(l);
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /api/v1/apps/{id}` on the leader, retried (finding the leader again) for up to 30 s
    /// while no master answers 200 or 404.
    fn app(&self, id: &str) -> Result<(u16, Value), String> {
        if self.unreachable.get() {
            return Err(format!("GET app {id}: skipped, no master answered before"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no leader");
        loop {
            if let Some(l) = self.leader(Duration::from_secs(5)) {
                match self.http.get(&self.bases[l], &format!("/api/v1/apps/{id}")) {
                    Ok((s @ (200 | 404), b)) => return Ok((s, b)),
                    Ok((s, b)) => last = format!("{s} {b}"),
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                self.unreachable.set(true);
                return Err(format!("GET app {id}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn check(&mut self, opts: &ChaosOpts, report: &mut ChaosReport) {
        let settled = self.settle(Duration::from_secs(90), None);
        let faults_ended = Instant::now();
        self.stop_submitter();
        if let Err(e) = &settled {
            report.errors.push(format!("after the last fault: {e}"));
        }
        let acked: Vec<Acked> = std::mem::take(&mut *lock(&self.shared.acked));
        report.acknowledged_short = acked.iter().filter(|a| !a.long).count();
        report.acknowledged_long = acked.iter().filter(|a| a.long).count();
        self.say(
            opts,
            &format!(
                "faults done; {} short and {} long apps acknowledged; waiting for short apps to \
                 end and long ones to run",
                report.acknowledged_short, report.acknowledged_long
            ),
        );

        // Stuck: a short app not ended, a long app neither running nor ended, by the deadline.
        let mut pending: Vec<&Acked> = acked.iter().collect();
        let mut states: HashMap<&str, String> = HashMap::new();
        let deadline = faults_ended + opts.stuck_after;
        loop {
            let mut still = Vec::new();
            for a in pending {
                let state = match self.app(&a.id) {
                    Ok((200, b)) => b["state"].as_str().unwrap_or("?").to_string(),
                    // Lost or unreadable: judged in the final pass.
                    _ => continue,
                };
                let done = terminal(&state) || (a.long && state == "RUNNING");
                if !done {
                    still.push(a);
                }
                states.insert(&a.id, state);
            }
            pending = still;
            if pending.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let stuck: Vec<&str> = pending.iter().map(|a| a.id.as_str()).collect();
        for a in &pending {
            report.stuck.push(format!(
                "{} ({}): {} {:?} after the last fault",
                a.id,
                a.name,
                states.get(a.id.as_str()).map_or("?", String::as_str),
                opts.stuck_after
            ));
        }

        // Kill what still runs, then every acknowledged app must be there and ended.
        self.say(opts, "killing the long apps");
        for a in acked.iter().filter(|a| a.long) {
            if states.get(a.id.as_str()).is_some_and(|s| terminal(s)) {
                continue;
            }
            let ok = (|| {
                let l = self.leader(Duration::from_secs(10))?;
                let path = format!("/api/v1/apps/{}/kill", a.id);
                let (s, _) = self.http.post(&self.bases[l], &path, &json!({})).ok()?;
                [202, 409].contains(&s).then_some(())
            })();
            if ok.is_none() {
                report
                    .errors
                    .push(format!("could not kill long app {}", a.id));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for a in &acked {
            loop {
                let found = self.app(&a.id);
                let state = match &found {
                    Ok((200, b)) => {
                        let state = b["state"].as_str().unwrap_or("?").to_string();
                        if terminal(&state) && b["attempt"].as_u64().is_some_and(|a| a > 1) {
                            report.relaunched += 1;
                        }
                        state
                    }
                    Ok((_, b)) => {
                        report.lost.push(format!("{} ({}): 404 {b}", a.id, a.name));
                        break;
                    }
                    Err(e) => {
                        report.errors.push(e.clone());
                        break;
                    }
                };
                if terminal(&state) {
                    *report.end_states.entry(state).or_default() += 1;
                    break;
                }
                if Instant::now() > deadline {
                    if !stuck.contains(&a.id.as_str()) {
                        report.stuck.push(format!(
                            "{} ({}): {state} 30 s after the end{}",
                            a.id,
                            a.name,
                            if a.long { " and a kill" } else { "" }
                        ));
                    }
                    *report.end_states.entry(state).or_default() += 1;
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        // Orphans: no process of the run may outlive its app.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut live = live_processes(&self.run_id);
        while !live.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            live = live_processes(&self.run_id);
        }
        report.orphans = live
            .iter()
            .map(|p| format!("pid {} app {} attempt {}", p.pid, p.app, p.attempt))
            .collect();

        self.stop_threads();
        report.double_runs = lock(&self.shared.doubles)
            .iter()
            .map(|(id, d)| format!("{id}: {d}"))
            .collect();
        report
            .errors
            .extend(lock(&self.shared.errors).iter().cloned());
        (report.samples, report.max_live) = *lock(&self.shared.samples);
        self.say(opts, "checked");
    }
}

fn terminal(state: &str) -> bool {
    ["FINISHED", "FAILED", "KILLED", "ERROR"].contains(&state)
}

/// A `process` app running `sleep` for `run`, marked with the run id in its environment.
fn app_body(run_id: &str, name: &str, long: bool, run: Duration) -> Value {
    json!({
        "name": name,
        "kind": "process",
        "cores": 1,
        "memory_mb": 64,
        // Relaunched when its worker is lost: the relaunch is where a double run would hide.
        "max_retries": 3,
        "spec": {
            "command": ["sleep", format!("{}", run.as_secs_f64())],
            "env": {"ALOHA_CHAOS_RUN": run_id, "ALOHA_CHAOS_LONG": long.to_string()},
        },
    })
}

fn record_ack(shared: &Shared, body: &Value, name: String, long: bool) {
    match body["id"].as_str() {
        Some(id) => lock(&shared.acked).push(Acked {
            id: id.to_string(),
            name,
            long,
        }),
        None => lock(&shared.errors).push(format!("201 without an app id: {body}")),
    }
}

/// Submits apps round-robin to all masters, following a standby's 503 to the leader it names.
struct Submitter {
    bases: Vec<String>,
    http: Http,
    run_id: String,
    shared: Arc<Shared>,
    every: Duration,
    long_every: u64,
    short_run: Duration,
    long_run: Duration,
}

impl Submitter {
    fn run(&self, stop: &AtomicBool) {
        let mut n = 0u64;
        let mut first = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let long = n.is_multiple_of(self.long_every);
            let name = format!("chaos-{}-{n}", if long { "long" } else { "short" });
            let run = if long { self.long_run } else { self.short_run };
            let body = app_body(&self.run_id, &name, long, run);
            first = (first + 1) % self.bases.len();
            let mut at = first;
            loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match self.http.post(&self.bases[at], "/api/v1/apps", &body) {
                    Ok((201, b)) => {
                        record_ack(&self.shared, &b, name, long);
                        break;
                    }
                    Ok((503, b)) => {
                        let named = b["leader"].as_str().and_then(|l| {
                            self.bases.iter().position(|x| x == l.trim_end_matches('/'))
                        });
                        match named {
                            // Straight to the leader it names.
                            Some(l) if l != at => {
                                at = l;
                                continue;
                            }
                            _ => at = (at + 1) % self.bases.len(),
                        }
                    }
                    Ok((s @ 400..=499, b)) => {
                        lock(&self.shared.errors).push(format!("submission refused: {s} {b}"));
                        break;
                    }
                    _ => at = (at + 1) % self.bases.len(),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(self.every);
        }
    }
}

/// A live process of the run.
struct Live {
    pid: i32,
    app: String,
    attempt: String,
}

/// The run's live app processes: `sleep` processes (not the supervisor that starts them) whose
/// environment carries `ALOHA_CHAOS_RUN=<run_id>`.
fn live_processes(run_id: &str) -> Vec<Live> {
    let marker = format!("ALOHA_CHAOS_RUN={run_id}");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // Processes come and go while we look; a zombie's environ reads empty.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !vars.contains(&marker.as_bytes()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        if Path::new(&*String::from_utf8_lossy(argv0)).file_name() != Some("sleep".as_ref()) {
            continue;
        }
        let var = |name: &str| {
            let prefix = format!("{name}=");
            vars.iter()
                .find_map(|v| v.strip_prefix(prefix.as_bytes()))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        out.push(Live {
            pid,
            app: var("ALOHA_APP_ID"),
            attempt: var("ALOHA_ATTEMPT"),
        });
    }
    out
}

/// Every ~100 ms: two live processes of one app is a double run.
fn sampler(run_id: &str, shared: &Shared, stop: &AtomicBool, t0: Instant) {
    while !stop.load(Ordering::SeqCst) {
        let live = live_processes(run_id);
        {
            let mut s = lock(&shared.samples);
            *s = (s.0 + 1, s.1.max(live.len()));
        }
        let mut by_app: BTreeMap<String, Vec<Live>> = BTreeMap::new();
        for p in live {
            by_app.entry(p.app.clone()).or_default().push(p);
        }
        for (app, procs) in by_app.into_iter().filter(|(_, p)| p.len() > 1) {
            let seen: Vec<String> = procs
                .iter()
                .map(|p| format!("pid {} attempt {}", p.pid, p.attempt))
                .collect();
            lock(&shared.doubles).entry(app).or_insert_with(|| {
                format!(
                    "{} live at once, {:.1} s into the run",
                    seen.join(" and "),
                    t0.elapsed().as_secs_f64()
                )
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A random duration in `[0, max)`. std has no random generator; its hasher keys are random.
fn random_below(max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    Duration::from_nanos(r % (max.as_nanos().max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampler finds two live processes of one app, and only the run's `sleep`s.
    #[test]
    fn live_processes_finds_the_runs_sleeps_by_their_environment() {
        let run = format!("unit-{}", std::process::id());
        let spawn = |app: &str, attempt: &str, run: &str| {
            let mut p = std::process::Command::new("sleep")
                .arg("30")
                .env("ALOHA_CHAOS_RUN", run)
                .env("ALOHA_APP_ID", app)
                .env("ALOHA_ATTEMPT", attempt)
                .spawn()
                .expect("spawn sleep");
            let pid = p.id() as i32;
            (pid, std::thread::spawn(move || p.wait()))
        };
        let procs = [
            spawn("app-1", "1", &run),
            spawn("app-1", "2", &run),
            spawn("app-2", "1", "another-run"),
        ];
        let mut live = crate::wait_for("the sleeps", Duration::from_secs(10), || {
            let live = live_processes(&run);
            (live.len() == 2).then_some(live)
        });
        live.sort_by(|a, b| a.attempt.cmp(&b.attempt));
        let seen: Vec<(i32, &str, &str)> = live
            .iter()
            .map(|p| (p.pid, p.app.as_str(), p.attempt.as_str()))
            .collect();
        assert_eq!(
            seen,
            [(procs[0].0, "app-1", "1"), (procs[1].0, "app-1", "2")]
        );
        for (pid, waiter) in procs {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = waiter.join();
        }
        assert!(live_processes(&run).is_empty());
    }
}
