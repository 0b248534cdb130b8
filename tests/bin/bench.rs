//! `aloha-bench`: benchmarks on the real binaries, reusing the end-to-end harness. Not a test:
//! the numbers depend on the machine, so nothing here asserts a duration.
//!
//! - `failover`: three HA masters on a one-member etcd; the time from SIGKILL (or SIGTERM) of
//!   the leader to the first submission another master answers `201`.
//! - `submit`: submission throughput and latency against a single-node master (embedded redb)
//!   and an HA master on a one-member etcd, with no worker (the apps only queue); then, end to
//!   end, how long it takes to submit the apps to a master with two workers and run them all.
//!
//! Build first (`cargo build --workspace`): the harness runs the binaries from the target dir.
//! `--write docs/benchmarks.md` replaces the section between `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->`, so a rerun updates the page. Every process is started through the
//! harness, whose `Drop` stops it: each run owns its processes and drops them when it ends,
//! also when it fails (a failed run is reported and the benchmark goes on).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{free_port, start_worker, wait_for, Api, MasterOpts, MasterProc, Proc, WorkerOpts};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// How long any single setup step may take before the run is declared failed.
const T: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "aloha-bench",
    about = "Benchmarks on the real Aloha-rs binaries (build them first: cargo build --workspace)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time from killing the HA leader to the first submission another master accepts.
    Failover(FailoverArgs),
    /// Submission throughput and latency, single-node (redb) and HA (etcd).
    Submit(SubmitArgs),
}

#[derive(clap::Args)]
struct FailoverArgs {
    /// Runs per lease TTL and signal; every run starts a fresh etcd, 3 masters and a worker.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The masters' --lease-ttl, whole seconds; several, comma-separated, e.g. "2s,5s".
    #[arg(long, value_delimiter = ',', default_value = "5s", value_parser = humantime::parse_duration)]
    lease_ttl: Vec<Duration>,
    /// Signals sent to the leader, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "kill,term")]
    signal: Vec<Signal>,
    /// Markdown file whose `bench:failover` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SubmitArgs {
    /// Submissions per measurement.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Concurrent clients, comma-separated, e.g. "1,8".
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Stores to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "redb,etcd")]
    store: Vec<Store>,
    /// Workers of the end-to-end run: registered first, they run every app to FINISHED, with
    /// the largest --concurrency submitting (0: skip that run).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Cores each of those workers offers (every app takes one).
    #[arg(long, default_value_t = 4)]
    worker_cores: u32,
    /// Runs per row, round-robin over the rows; each row shows its run with the median time.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Markdown file whose `bench:submit` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Signal {
    /// SIGKILL: the standbys wait for the leader's lease to expire.
    Kill,
    /// SIGTERM: the leader resigns before exiting.
    Term,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Store {
    /// Single-node master, embedded redb (fsync per commit).
    Redb,
    /// One HA master on a one-member etcd.
    Etcd,
}

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Redb => "single-node, redb",
            Store::Etcd => "HA, 1-member etcd",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The harness asks for debug logs; the daemons' hot paths should log as in production.
    // RUST_LOG overrides ALOHA_LOG in both daemons. Set before any thread starts.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info");
    }
    let command_line = std::iter::once("aloha-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let result = match cli.cmd {
        Cmd::Failover(a) => failover(&a, &command_line),
        Cmd::Submit(a) => submit(&a, &command_line),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloha-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes of one run

/// The processes of one run. Fields drop in declaration order: workers first (they report to
/// the masters), then the masters (they resign in etcd), then etcd, then the directory.
struct Setup {
    workers: Vec<Proc>,
    masters: Vec<MasterProc>,
    etcd: Option<EtcdCluster>,
    dir: tempfile::TempDir,
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
    fn new(prefix: &str) -> Setup {
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

    fn start_etcd(&mut self) {
        self.etcd = Some(EtcdCluster::start(1, self.dir.path()));
    }

    /// Starts a master: HA with `lease_ttl` when etcd runs, single-node otherwise.
    fn add_master(&mut self, lease_ttl: &str) {
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
        let m = MasterProc::start(&format!("m{i}"), opts, self.dir.path());
        self.masters.push(m);
    }

    /// Starts a worker that knows every master.
    fn add_worker(&mut self, id: &str, cores: u32) {
        let masters: Vec<String> = self.masters.iter().map(|m| m.rpc_url()).collect();
        let opts = WorkerOpts {
            id: id.into(),
            cores,
            memory_mb: 4096,
            work_dir: self.dir.path().join(id),
            kill_grace_ms: 1000,
        };
        self.workers
            .push(start_worker(&masters, &opts, self.dir.path()));
    }

    fn cluster(&self, i: usize) -> Option<Value> {
        let r = self.masters[i].api.try_get("/api/v1/cluster").ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// Waits until a master is ALIVE; returns its index.
    fn wait_leader(&self) -> usize {
        wait_for("an ALIVE master", T, || {
            (0..self.masters.len()).find(|&i| self.cluster(i).is_some_and(|c| c["role"] == "ALIVE"))
        })
    }
}

fn app_body(name: &str) -> Value {
    json!({"name": name, "kind": "process", "spec": {"command": ["true"]}, "cores": 1})
}

// ---------------------------------------------------------------------------------------------
// failover

/// One failover: when the first submission was accepted, and when the new leader logged its
/// election and became ALIVE, all counted from the signal.
struct Failover {
    accepted: Duration,
    elected: Option<Duration>,
    alive: Option<Duration>,
}

/// Threads that submit to some masters every ~10 ms until one answers 201 (or they are
/// dropped: they stop and are joined, so a failed run leaves nothing behind).
struct Pollers {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(Instant, usize)>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Pollers {
    fn start(targets: &[(usize, Api)]) -> Pollers {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let handles = targets
            .iter()
            .map(|(i, api)| {
                let (i, api, stop, accepted) = (*i, api.clone(), stop.clone(), accepted.clone());
                std::thread::spawn(move || {
                    let body = app_body("failover-probe");
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(r) = api.try_post("/api/v1/apps", &body) {
                            if r.status == 201 {
                                let at = Instant::now();
                                accepted
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((at, i));
                                stop.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Pollers {
            stop,
            accepted,
            handles,
        }
    }

    /// The earliest 201 so far, with the index of the master that gave it.
    fn first(&self) -> Option<(Instant, usize)> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .min_by_key(|(at, _)| *at)
            .copied()
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A random duration in `[0, max)`. std has no random generator; its hasher keys are random.
fn random_below(max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let nanos = max.as_nanos().max(1) as u64;
    Duration::from_nanos(r % nanos)
}

/// The first line of `log` containing `needle` logged at or after `after`, as time since then.
/// The daemons log an RFC 3339 UTC timestamp first on every line.
fn logged_after(log: &str, needle: &str, after: SystemTime) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?;
            let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
            SystemTime::from(t).duration_since(after).ok()
        })
        .next()
}

fn failover_run(ttl: Duration, signal: Signal) -> Failover {
    let mut s = Setup::new("aloha-bench-failover-");
    s.start_etcd();
    let ttl_flag = format!("{}s", ttl.as_secs());
    for _ in 0..3 {
        s.add_master(&ttl_flag);
    }
    let leader = s.wait_leader();
    s.add_worker("w1", 2);
    let leader_api = s.masters[leader].api.clone();
    leader_api.wait_alive_workers(1, T);
    // Steady state: every master sees all three members, the standbys know the leader.
    wait_for("three members and standbys following the leader", T, || {
        (0..3)
            .all(|i| {
                s.cluster(i).is_some_and(|c| {
                    c["members"].as_array().map(Vec::len) == Some(3)
                        && (i == leader
                            || (c["role"] == "STANDBY" && c["leader"] == leader_api.base.as_str()))
                })
            })
            .then_some(())
    });
    // Something for the new leader to recover: one running app.
    let running = leader_api.submit_cmd("failover-running", &["sleep", "600"], json!({}));
    leader_api.wait_state(&running, "RUNNING", T);

    let others: Vec<(usize, Api)> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| (i, s.masters[i].api.clone()))
        .collect();
    let pollers = Pollers::start(&others);
    // The start-up above takes about as long every run, so without a random pause the signal
    // would always land at the same point of the leader's keep-alive cycle (every ttl/3), and
    // a SIGKILL would always find the same time left on the lease.
    std::thread::sleep(Duration::from_millis(200) + random_below(ttl));
    assert!(
        pollers.first().is_none(),
        "a standby accepted a submission while the leader was alive"
    );
    let signalled_wall = SystemTime::now();
    let signalled = Instant::now();
    s.masters[leader].proc.signal(signal.number());
    let (at, new_leader) = wait_for("a submission accepted by another master", T, || {
        pollers.first()
    });
    drop(pollers);
    match signal {
        Signal::Kill => s.masters[leader].proc.kill9(),
        Signal::Term => {
            let st = s.masters[leader].proc.wait_exit(T);
            assert!(
                st.is_some_and(|s| s.success()),
                "the old leader did not exit cleanly after SIGTERM: {st:?}"
            );
        }
    }
    let log = s.masters[new_leader].proc.log_text();
    Failover {
        accepted: at - signalled,
        elected: logged_after(&log, "elected leader", signalled_wall),
        alive: logged_after(&log, "ALIVE: scheduling", signalled_wall),
    }
}

fn failover(a: &FailoverArgs, command_line: &str) -> Result<(), String> {
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    for ttl in &a.lease_ttl {
        if ttl.subsec_nanos() != 0 || ttl.as_secs() == 0 {
            return Err(format!(
                "--lease-ttl must be whole seconds, at least 1s (got {ttl:?})"
            ));
        }
    }
    let mut rows = Vec::new();
    for &ttl in &a.lease_ttl {
        for &signal in &a.signal {
            let mut samples = Vec::new();
            let mut failed = 0;
            for run in 1..=a.runs {
                let what = format!(
                    "failover lease-ttl={}s {} run {run}/{}",
                    ttl.as_secs(),
                    signal.name(),
                    a.runs
                );
                match catch_unwind(AssertUnwindSafe(|| failover_run(ttl, signal))) {
                    Ok(f) => {
                        eprintln!(
                            "{what}: accepted after {} (elected {}, ALIVE {})",
                            ms(f.accepted),
                            opt_ms(f.elected),
                            opt_ms(f.alive)
                        );
                        samples.push(f);
                    }
                    Err(_) => {
                        eprintln!("{what}: FAILED (see above)");
                        failed += 1;
                    }
                }
            }
            rows.push(failover_row(ttl, signal, &samples, failed));
        }
    }
    let table = format!(
        "| lease TTL | signal | runs | min | median | p90 | max | median: elected | median: ALIVE |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{}",
        rows.concat()
    );
    report("failover", command_line, &table, a.write.as_deref())
}

fn failover_row(ttl: Duration, signal: Signal, samples: &[Failover], failed: usize) -> String {
    let runs = if failed > 0 {
        format!("{} ({failed} failed)", samples.len() + failed)
    } else {
        samples.len().to_string()
    };
    let mut accepted: Vec<Duration> = samples.iter().map(|s| s.accepted).collect();
    accepted.sort();
    let mut elected: Vec<Duration> = samples.iter().filter_map(|s| s.elected).collect();
    elected.sort();
    let mut alive: Vec<Duration> = samples.iter().filter_map(|s| s.alive).collect();
    alive.sort();
    let p = |v: &[Duration], q: f64| percentile(v, q).map(ms).unwrap_or_else(|| "—".into());
    format!(
        "| {}s | {} | {runs} | {} | {} | {} | {} | {} | {} |\n",
        ttl.as_secs(),
        signal.name(),
        p(&accepted, 0.0),
        p(&accepted, 0.5),
        p(&accepted, 0.9),
        p(&accepted, 1.0),
        p(&elected, 0.5),
        p(&alive, 0.5),
    )
}

// ---------------------------------------------------------------------------------------------
// submit

/// Submissions made before measuring, to open connections and warm the master up.
const WARMUP: usize = 10;

/// `n` submissions from `clients` threads.
struct Submissions {
    wall: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// Store transactions the master made meanwhile, and their mean latency.
    txns: f64,
    txn_mean: Option<Duration>,
}

/// A sample value from the Prometheus text format: the line `name value` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /metrics` as text (the harness's client parses JSON).
fn metrics(api: &Api) -> String {
    let url = format!("{}/metrics", api.base);
    reqwest::blocking::get(&url)
        .and_then(|r| r.error_for_status()?.text())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A master for `store`, ALIVE, warmed up.
fn submit_setup(store: Store) -> Setup {
    let mut s = Setup::new("aloha-bench-submit-");
    if store == Store::Etcd {
        s.start_etcd();
    }
    s.add_master("5s");
    s.wait_leader();
    let api = &s.masters[0].api;
    for i in 0..WARMUP {
        api.submit(app_body(&format!("warmup-{i}")));
    }
    s
}

/// Submits `n` apps from `clients` threads, one connection each, as fast as they are accepted.
fn submit_all(api: &Api, n: usize, clients: usize) -> Submissions {
    let txn_count = "aloha_store_txn_duration_seconds_count";
    let txn_sum = "aloha_store_txn_duration_seconds_sum";
    let before = metrics(api);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|t| {
                let base = api.base.clone();
                scope.spawn(move || {
                    let api = Api::new(&base);
                    let mut lat = Vec::new();
                    for k in (t..n).step_by(clients) {
                        let t0 = Instant::now();
                        let r = api.post("/api/v1/apps", &app_body(&format!("bench-{k}")));
                        lat.push(t0.elapsed());
                        assert_eq!(r.status, 201, "submission {k}: {:?}", r.body);
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let wall = start.elapsed();
    latencies.sort();
    let after = metrics(api);
    let delta =
        |name: &str| metric(&after, name).unwrap_or(0.0) - metric(&before, name).unwrap_or(0.0);
    let txns = delta(txn_count);
    Submissions {
        wall,
        latencies,
        txns,
        txn_mean: (txns > 0.0).then(|| Duration::from_secs_f64(delta(txn_sum) / txns)),
    }
}

/// Waits until `total` apps are FINISHED; fails when any ends otherwise or when none finishes
/// for a minute (a stuck scheduler).
fn wait_all_finished(api: &Api, total: usize) {
    let mut last = (0.0, Instant::now());
    wait_for("every app FINISHED", Duration::from_secs(3600), || {
        let m = metrics(api);
        for bad in ["FAILED", "ERROR", "KILLED"] {
            let n = metric(&m, &format!("aloha_apps{{state=\"{bad}\"}}")).unwrap_or(0.0);
            assert!(n == 0.0, "{n} apps ended {bad}");
        }
        let done = metric(&m, "aloha_apps{state=\"FINISHED\"}").unwrap_or(0.0);
        if done > last.0 {
            last = (done, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(60),
            "no app finished for 60 s ({done} of {total} FINISHED)"
        );
        (done >= total as f64).then_some(())
    })
}

/// Submission throughput and latency: no worker, so the apps only queue.
fn submit_run(store: Store, n: usize, clients: usize) -> Submissions {
    let s = submit_setup(store);
    submit_all(&s.masters[0].api, n, clients)
}

/// End to end: workers registered first, then `n` apps submitted and run to FINISHED. Returns
/// the time to submit them all and the time until all are FINISHED, both from the first.
fn drain_run(a: &SubmitArgs, store: Store, clients: usize) -> (Duration, Duration) {
    let mut s = submit_setup(store);
    for w in 0..a.workers {
        s.add_worker(&format!("w{w}"), a.worker_cores);
    }
    let api = s.masters[0].api.clone();
    api.wait_alive_workers(a.workers, T);
    // The warm-up apps run first.
    wait_all_finished(&api, WARMUP);
    let start = Instant::now();
    let sub = submit_all(&api, a.n, clients);
    wait_all_finished(&api, a.n + WARMUP);
    (sub.wall, start.elapsed())
}

/// Runs every job `repeat` times, round-robin (the machine may be shared: each job then sees
/// the same quiet and busy spells), skipping and reporting failed runs. Returns each job's
/// results sorted by `key`.
fn round_robin<J, T>(
    jobs: &[J],
    repeat: usize,
    what: impl Fn(&J) -> String,
    run: impl Fn(&J) -> T,
    key: impl Fn(&T) -> Duration,
) -> Vec<Vec<T>> {
    let mut results: Vec<Vec<T>> = jobs.iter().map(|_| Vec::new()).collect();
    for i in 1..=repeat {
        for (job, out) in jobs.iter().zip(results.iter_mut()) {
            let what = format!("{} ({i}/{repeat})", what(job));
            eprintln!("{what}: running");
            match catch_unwind(AssertUnwindSafe(|| run(job))) {
                Ok(r) => {
                    eprintln!("{what}: {}", ms(key(&r)));
                    out.push(r);
                }
                Err(_) => eprintln!("{what}: FAILED (see above)"),
            }
        }
    }
    for out in &mut results {
        out.sort_by_key(|r| key(r));
    }
    results
}

/// The rate of the median of `walls` (sorted), with the range when there are several.
fn rate_range(n: usize, walls: &[Duration]) -> String {
    let rate = |d: &Duration| n as f64 / d.as_secs_f64();
    let median = rate(&walls[(walls.len() - 1) / 2]);
    match (walls.first(), walls.last()) {
        (Some(fast), Some(slow)) if walls.len() > 1 => {
            format!("{median:.0}/s ({:.0}–{:.0})", rate(slow), rate(fast))
        }
        _ => format!("{median:.0}/s"),
    }
}

fn submit(a: &SubmitArgs, command_line: &str) -> Result<(), String> {
    if a.n == 0 || a.concurrency.contains(&0) || a.repeat == 0 {
        return Err("--n, --concurrency and --repeat must be at least 1".into());
    }
    let jobs: Vec<(Store, usize)> = a
        .store
        .iter()
        .flat_map(|&s| a.concurrency.iter().map(move |&c| (s, c)))
        .collect();
    let results = round_robin(
        &jobs,
        a.repeat,
        |(s, c)| format!("submit {} clients={c} n={}", s.label(), a.n),
        |&(s, c)| submit_run(s, a.n, c),
        |r| r.wall,
    );
    let mut rows = String::new();
    for (&(store, c), runs) in jobs.iter().zip(&results) {
        if runs.is_empty() {
            rows.push_str(&format!(
                "| {} | {c} | {} | failed | | | | | |\n",
                store.label(),
                a.n
            ));
        } else {
            rows.push_str(&submit_row(store, c, a.n, runs));
        }
    }
    let of = if a.repeat > 1 {
        format!(
            "; each row the median of {} runs, throughput with its range",
            a.repeat
        )
    } else {
        String::new()
    };
    let mut table = format!(
        "Submissions only (no worker: the apps queue{of}):\n\n\
         | master | clients | submissions | throughput | p50 | p99 | max | store txns per submission | mean store txn |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{rows}"
    );
    if a.workers > 0 {
        let clients = a.concurrency.iter().copied().max().unwrap_or(1);
        let results = round_robin(
            &a.store,
            a.repeat,
            |s| {
                format!(
                    "end to end {} clients={clients} n={} workers={}",
                    s.label(),
                    a.n,
                    a.workers
                )
            },
            |&s| drain_run(a, s, clients),
            |r| r.1,
        );
        let workers = format!("{} × {} cores", a.workers, a.worker_cores);
        let mut rows = String::new();
        for (store, runs) in a.store.iter().zip(&results) {
            let row = match runs.get(runs.len().saturating_sub(1) / 2) {
                Some((submitted, finished)) => {
                    let finishes: Vec<Duration> = runs.iter().map(|r| r.1).collect();
                    format!(
                        "| {} | {} | {clients} | {workers} | {:.1} s | {:.1} s | {} |\n",
                        store.label(),
                        a.n,
                        submitted.as_secs_f64(),
                        finished.as_secs_f64(),
                        rate_range(a.n, &finishes)
                    )
                }
                None => format!(
                    "| {} | {} | {clients} | {workers} | failed | | |\n",
                    store.label(),
                    a.n
                ),
            };
            rows.push_str(&row);
        }
        table.push_str(&format!(
            "\nEnd to end (workers registered first; apps `true`, 1 core each; times from the \
             first submission{of}):\n\n\
             | master | apps | clients | workers | all submitted | all FINISHED | apps/s |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n{rows}"
        ));
    }
    report("submit", command_line, &table, a.write.as_deref())
}

/// The row of the median run (by wall time) of `runs`, sorted by wall time.
fn submit_row(store: Store, clients: usize, n: usize, runs: &[Submissions]) -> String {
    let r = &runs[(runs.len() - 1) / 2];
    let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let p = |q: f64| percentile(&r.latencies, q).map(ms).unwrap_or_default();
    format!(
        "| {} | {clients} | {n} | {} | {} | {} | {} | {:.2} | {} |\n",
        store.label(),
        rate_range(n, &walls),
        p(0.5),
        p(0.99),
        p(1.0),
        r.txns / n as f64,
        opt_ms(r.txn_mean),
    )
}

// ---------------------------------------------------------------------------------------------
// Numbers and the report

/// Nearest-rank percentile of sorted values (`q` = 0 is the minimum, 1 the maximum).
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "—".into())
}

/// Prints the results and, with `write`, replaces the file's section `name` with them.
fn report(name: &str, command_line: &str, table: &str, write: Option<&Path>) -> Result<(), String> {
    let section = format!(
        "Measured {} with `{command_line}` ({}).\n\n{table}",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine()
    );
    println!("{section}");
    if let Some(path) = write {
        write_section(path, name, &section)?;
        eprintln!("updated the bench:{name} section of {}", path.display());
    }
    Ok(())
}

/// Replaces what lies between the lines `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in
/// `path`; appends a marked section when the file has none. Only a marker alone on its line
/// counts, so prose may mention the markers.
fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let body = body.trim_end();
    // Byte offsets of the lines that are exactly `marker` (ignoring surrounding blanks).
    let lines_at = |marker: &str| -> Vec<(usize, usize)> {
        let mut at = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.trim() == marker {
                at.push((offset, offset + line.len()));
            }
            offset += line.len();
        }
        at
    };
    let new = match (lines_at(&open).as_slice(), lines_at(&close).as_slice()) {
        ([(_, body_start)], [(body_end, _)]) if body_start <= body_end => {
            format!("{}{body}\n{}", &text[..*body_start], &text[*body_end..])
        }
        ([], []) => {
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{text}{sep}{open}\n{body}\n{close}\n")
        }
        _ => {
            return Err(format!(
                "{}: the lines {open} and {close} must each appear once, in that order",
                path.display()
            ))
        }
    };
    std::fs::write(path, new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The machine, briefly: cores, CPU, memory, etcd version, the filesystem under the temp dir.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    let etcd = std::process::Command::new(aloha_e2e::etcd::etcd_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace("etcd Version: ", "etcd "))
        })
        .unwrap_or_else(|| "etcd unknown".into());
    format!(
        "{cores} cores ({cpu}), {mem_gib} RAM, {etcd}, debug build, temp dir on {}",
        temp_fs()
    )
}

/// The filesystem type holding the temp dir, from /proc/mounts (the longest matching mount).
fn temp_fs() -> String {
    let tmp = std::env::temp_dir();
    let tmp = tmp.canonicalize().unwrap_or(tmp);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            tmp.starts_with(at).then(|| (at.len(), fs.to_string()))
        })
        .max()
        .map(|(_, fs)| format!("{fs} ({})", tmp.display()))
        .unwrap_or_else(|| format!("unknown ({})", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&v, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_section_is_replaced_between_its_marker_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.md");
        let page = "# B\n\nThe `<!-- bench:x -->` markers delimit it.\n\n<!-- bench:x -->\nold\n<!-- /bench:x -->\n\nafter\n";
        std::fs::write(&f, page).unwrap();
        write_section(&f, "x", "new\n").unwrap();
        let want = "# B\n\nThe `<!-- bench:x -->` markers delimit it.\n\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\n\nafter\n";
        assert_eq!(std::fs::read_to_string(&f).unwrap(), want);
        // Rerunning gives the same page; another section is appended.
        write_section(&f, "x", "new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), want);
        write_section(&f, "y", "y1").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.ends_with("after\n\n<!-- bench:y -->\ny1\n<!-- /bench:y -->\n"),
            "{text}"
        );
        // A marker line twice is refused, and the file is left alone.
        std::fs::write(
            &f,
            "<!-- bench:x -->\n<!-- bench:x -->\n<!-- /bench:x -->\n",
        )
        .unwrap();
        assert!(write_section(&f, "x", "z").is_err());
    }
}
