//! `queue`: submission latency as the queue grows. One single-node master (redb), no worker, so
//! every app stays queued; at each level (0, 100k, 1M apps queued by default) a sample of
//! sequential submissions is timed on one connection. Between levels the queue is filled by
//! many concurrent submissions (`load.rs`). The master's resident memory is read from
//! `/proc/<pid>/status` after each level.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::load::submit_many;
use crate::report::{ms, percentile, report};
use crate::setup::{app_body, Setup};

#[derive(clap::Args)]
pub(crate) struct QueueArgs {
    /// Apps queued before each sample, comma-separated, ascending.
    #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
    levels: Vec<usize>,
    /// Sequential submissions timed at each level (they join the queue too).
    #[arg(long, default_value_t = 2000)]
    sample: usize,
    /// Concurrent connections filling the queue between levels.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Markdown file whose `bench:queue` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub(crate) fn rss(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let v = status.lines().find_map(|l| l.strip_prefix(name))?;
        let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

struct Level {
    queued: usize,
    /// Sorted.
    latencies: Vec<Duration>,
    /// How long filling up to this level took, and how many apps that was.
    fill: Option<(usize, Duration)>,
    rss: Option<(u64, u64)>,
}

fn queue_run(a: &QueueArgs) -> Vec<Level> {
    let mut s = Setup::new("aloha-bench-queue-");
    s.add_master("5s");
    s.wait_leader();
    let master = &s.masters[0];
    let api = master.api.clone();
    let mut queued = 0;
    let mut out = Vec::new();
    for &level in &a.levels {
        let fill = if level > queued {
            let n = level - queued;
            eprintln!("queue: filling {n} apps to reach {level}");
            let wall = submit_many(&api.base, n, a.connections, "queue fill")
                .unwrap_or_else(|e| panic!("filling the queue: {e}"));
            eprintln!(
                "queue: filled {n} in {:.1} s ({:.0}/s)",
                wall.as_secs_f64(),
                n as f64 / wall.as_secs_f64()
            );
            queued = level;
            Some((n, wall))
        } else {
            None
        };
        let mut latencies = Vec::with_capacity(a.sample);
        for i in 0..a.sample {
            let t0 = Instant::now();
            let r = api.post("/api/v1/apps", &app_body(&format!("queue-{level}-{i}")));
            latencies.push(t0.elapsed());
            assert_eq!(r.status, 201, "submission {i}: {:?}", r.body);
        }
        latencies.sort();
        let rss = rss(master.proc.pid());
        eprintln!(
            "queue: {level} queued: p50 {}, p99 {}, RSS {}",
            percentile(&latencies, 0.5).map(ms).unwrap_or_default(),
            percentile(&latencies, 0.99).map(ms).unwrap_or_default(),
            rss.map(|r| mib(r.0)).unwrap_or_default()
        );
        out.push(Level {
            queued: level,
            latencies,
            fill,
            rss,
        });
        queued += a.sample;
    }
    out
}

pub(crate) fn queue(a: &QueueArgs, command_line: &str) -> Result<(), String> {
    if a.sample == 0 || a.levels.is_empty() || a.connections == 0 {
        return Err("--sample, --levels and --connections must not be empty or 0".into());
    }
    if a.levels.windows(2).any(|w| w[0] >= w[1]) {
        return Err("--levels must be ascending".into());
    }
    let levels = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| queue_run(a)))
        .map_err(|_| "the run failed (see above)".to_string())?;
    let base_p50 = levels.first().and_then(|l| percentile(&l.latencies, 0.5));
    let mut rows = String::new();
    for l in &levels {
        let p = |q: f64| percentile(&l.latencies, q).map(ms).unwrap_or_default();
        let ratio = match (percentile(&l.latencies, 0.5), base_p50) {
            (Some(p), Some(b)) if !b.is_zero() => {
                format!("{:.2}×", p.as_secs_f64() / b.as_secs_f64())
            }
            _ => "—".into(),
        };
        let fill = l
            .fill
            .map(|(n, d)| format!("{:.0}/s", n as f64 / d.as_secs_f64()))
            .unwrap_or_else(|| "—".into());
        let rss = l
            .rss
            .map(|(now, peak)| format!("{} (peak {})", mib(now), mib(peak)))
            .unwrap_or_else(|| "—".into());
        rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {ratio} | {fill} | {rss} |\n",
            l.queued,
            l.latencies.len(),
            p(0.5),
            p(0.99),
            p(1.0),
        ));
    }
    let table = format!(
        "Single-node master (redb), no worker: every app stays queued. Each level: \
         {} sequential submissions on one connection; the queue filled in between by {} \
         concurrent connections. RSS read after each level's sample.\n\n\
         | apps queued | sample | p50 | p99 | max | p50 vs first level | fill rate | master RSS |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n{rows}",
        a.sample, a.connections
    );
    report("queue", command_line, &table, a.write.as_deref())
}
