//! `failover`: three HA masters on a one-member etcd; the time from SIGKILL (or SIGTERM) of the
//! leader to the first submission another master answers `201`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use aloha_e2e::{wait_for, Api};
use clap::ValueEnum;
use serde_json::json;

use crate::report::{ms, opt_ms, percentile, report};
use crate::setup::{app_body, Setup};
use crate::T;

#[derive(clap::Args)]
pub(crate) struct FailoverArgs {
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

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub(crate) enum Signal {
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

// ---------------------------------------------------------------------------------------------
// failover

/// One failover: when the first submission was accepted, and when the new leader logged its
/// election and became ALIVE, all counted from the signal.
pub(crate) struct Failover {
    accepted: Duration,
    elected: Option<Duration>,
    alive: Option<Duration>,
}

/// Threads that submit to some masters every ~10 ms until one answers 201 (or they are
/// dropped: they stop and are joined, so a failed run leaves nothing behind).
pub(crate) struct Pollers {
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
pub(crate) fn random_below(max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let nanos = max.as_nanos().max(1) as u64;
    Duration::from_nanos(r % nanos)
}

/// The first line of `log` containing `needle` logged at or after `after`, as time since then.
/// The daemons log an RFC 3339 UTC timestamp first on every line.
pub(crate) fn logged_after(log: &str, needle: &str, after: SystemTime) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?;
            let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
            SystemTime::from(t).duration_since(after).ok()
        })
        .next()
}

pub(crate) fn failover_run(ttl: Duration, signal: Signal) -> Failover {
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

pub(crate) fn failover(a: &FailoverArgs, command_line: &str) -> Result<(), String> {
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

pub(crate) fn failover_row(
    ttl: Duration,
    signal: Signal,
    samples: &[Failover],
    failed: usize,
) -> String {
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
