//! `submit`: submission throughput and latency against a single-node master (embedded redb)
//! and an HA master on a one-member etcd, with no worker (the apps only queue); then, end to
//! end, how long it takes to submit the apps to a master with two workers and run them all.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aloha_e2e::{wait_for, Api};

use crate::report::{ms, opt_ms, percentile, report};
use crate::setup::{app_body, metric, metrics, Setup};
use crate::{Store, T};

#[derive(clap::Args)]
pub(crate) struct SubmitArgs {
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

// ---------------------------------------------------------------------------------------------
// submit

/// Submissions made before measuring, to open connections and warm the master up.
pub(crate) const WARMUP: usize = 10;

/// `n` submissions from `clients` threads.
pub(crate) struct Submissions {
    wall: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// Store transactions the master made meanwhile, and their mean latency.
    txns: f64,
    txn_mean: Option<Duration>,
}
/// A master for `store`, ALIVE, warmed up.
pub(crate) fn submit_setup(store: Store) -> Setup {
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
pub(crate) fn submit_all(api: &Api, n: usize, clients: usize) -> Submissions {
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
pub(crate) fn wait_all_finished(api: &Api, total: usize) {
    let mut last = (0.0, Instant::now());
    wait_for("every app FINISHED", Duration::from_secs(3600), || {
        let m = metrics(api);
        for bad in ["FAILED", "ERROR", "KILLED"] {
            let n = metric(&m, &format!("aloha_apps{{state=\"{bad}\"}}")).unwrap_or(0.0);
            assert!(n == 0.0, "{n} apps ended {bad}");
        }
        // The counter, where the master has it: the gauge holds only the finished apps the
        // master retains (10,000 by default), so it stops short of a larger run.
        let done = metric(&m, "aloha_app_transitions_total{state=\"FINISHED\"}")
            .or_else(|| metric(&m, "aloha_apps{state=\"FINISHED\"}"))
            .unwrap_or(0.0);
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
pub(crate) fn submit_run(store: Store, n: usize, clients: usize) -> Submissions {
    let s = submit_setup(store);
    submit_all(&s.masters[0].api, n, clients)
}

/// End to end: workers registered first, then `n` apps submitted and run to FINISHED. Returns
/// the time to submit them all and the time until all are FINISHED, both from the first.
pub(crate) fn drain_run(a: &SubmitArgs, store: Store, clients: usize) -> (Duration, Duration) {
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
pub(crate) fn round_robin<J, T>(
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
pub(crate) fn rate_range(n: usize, walls: &[Duration]) -> String {
    let rate = |d: &Duration| n as f64 / d.as_secs_f64();
    let median = rate(&walls[(walls.len() - 1) / 2]);
    match (walls.first(), walls.last()) {
        (Some(fast), Some(slow)) if walls.len() > 1 => {
            format!("{median:.0}/s ({:.0}–{:.0})", rate(slow), rate(fast))
        }
        _ => format!("{median:.0}/s"),
    }
}

pub(crate) fn submit(a: &SubmitArgs, command_line: &str) -> Result<(), String> {
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
pub(crate) fn submit_row(store: Store, clients: usize, n: usize, runs: &[Submissions]) -> String {
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
