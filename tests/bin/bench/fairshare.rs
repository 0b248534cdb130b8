//! `fairshare`: weighted fair sharing between namespaces, on real workers running real
//! processes. One single-node master; namespaces `a`, `b`, `c`, ... with the weights of
//! `--weights` (default 1, 2, 3), each given a backlog of `sleep` apps (one core each) before
//! any worker joins — `a` the largest (`--backlog`, default 100,000). Then the workers join and
//! the bench samples `GET /api/v1/namespaces` every 250 ms: the cores each namespace holds.
//! Its share is its cores over all the cores the weighted namespaces hold; the target is its
//! weight over the sum of the weights. Halfway, `--late` apps (default 10) arrive in a
//! namespace `late` of weight 1 behind the whole backlog: under one FIFO queue they would wait
//! for every queued app before them; under fair sharing they start as soon as cores free up.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::load::post_many_async;
use crate::report::{ms, percentile, report};
use crate::setup::Setup;
use crate::T;

#[derive(clap::Args)]
pub(crate) struct FairshareArgs {
    /// Real workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Cores each worker offers (every app takes one).
    #[arg(long, default_value_t = 8)]
    worker_cores: u32,
    /// The weights of the namespaces a, b, c, ... (comma-separated).
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    weights: Vec<u32>,
    /// Apps queued in namespace `a` before the workers join.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Apps queued in each other weighted namespace (enough to outlast the run).
    #[arg(long, default_value_t = 3_000)]
    others: usize,
    /// How long every app runs (`sleep`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    run_for: Duration,
    /// How long the shares are sampled once the workers are in.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The first seconds not counted in the shares (the cluster filling up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Apps submitted halfway in the namespace `late`, behind the whole backlog.
    #[arg(long, default_value_t = 10)]
    late: usize,
    /// Concurrent connections submitting the backlog.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Markdown file whose `bench:fairshare` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// The namespace of the i-th weight: a, b, c, ...
fn ns_name(i: usize) -> String {
    char::from(b'a' + i as u8).to_string()
}

fn sleeper(ns: &str, run_for: Duration) -> String {
    json!({
        "name": format!("{ns}-sleep"),
        "kind": "process",
        "namespace": ns,
        "spec": {"command": ["sleep", format!("{}", run_for.as_secs_f64())]},
        "cores": 1,
        "memory_mb": 0,
    })
    .to_string()
}

/// One sample: seconds since the workers joined, and the cores of each namespace.
struct Sample {
    t: f64,
    cores: Vec<u64>,
}

pub(crate) fn fairshare(a: &FairshareArgs, command_line: &str) -> Result<(), String> {
    if a.weights.is_empty() || a.weights.len() > 20 || a.weights.contains(&0) {
        return Err("--weights: 1 to 20 weights, each at least 1".into());
    }
    let mut s = Setup::new("aloha-bench-fairshare-");
    s.add_master("5s");
    s.wait_leader();
    let api = s.masters[0].api.clone();
    let names: Vec<String> = (0..a.weights.len()).map(ns_name).collect();
    for (name, w) in names.iter().zip(&a.weights) {
        let r = api.put(&format!("/api/v1/namespaces/{name}"), &json!({"weight": w}));
        if r.status != 200 {
            return Err(format!("PUT namespace {name}: {:?}", r.body));
        }
    }
    let r = api.put("/api/v1/namespaces/late", &json!({"weight": 1}));
    if r.status != 200 {
        return Err(format!("PUT namespace late: {:?}", r.body));
    }

    // The backlogs, before any worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/api/v1/apps", api.base);
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let n = if i == 0 { a.backlog } else { a.others };
        let body = sleeper(name, a.run_for);
        rt.block_on(post_many_async(
            &url,
            n,
            a.connections,
            Arc::new(AtomicUsize::new(0)),
            move |_| body.clone(),
        ))?;
    }
    let queued = a.backlog + a.others * (names.len() - 1);
    eprintln!("{queued} apps queued in {:.1?}", started.elapsed());

    for i in 0..a.workers {
        s.add_worker(&format!("w{i}"), a.worker_cores);
    }
    api.wait_alive_workers(a.workers, T);
    let t0 = Instant::now();
    let cores_of = |ns: &Value| ns["usage"]["cores"].as_u64().unwrap_or(0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut late: Vec<(String, Instant)> = Vec::new();
    let mut late_running: Vec<Duration> = Vec::new();
    let mut a_queued_at_late = 0;
    let mut late_sent = false;
    let body = sleeper("late", a.run_for);
    while t0.elapsed() < a.duration {
        let r = api.get("/api/v1/namespaces");
        let list = r.body["namespaces"].as_array().cloned().unwrap_or_default();
        let find = |n: &str| {
            list.iter()
                .find(|x| x["name"] == n)
                .cloned()
                .unwrap_or_default()
        };
        samples.push(Sample {
            t: t0.elapsed().as_secs_f64(),
            cores: names.iter().map(|n| cores_of(&find(n))).collect(),
        });
        if !late_sent && t0.elapsed() >= a.duration / 2 {
            late_sent = true;
            a_queued_at_late = find("a")["usage"]["queued_apps"].as_u64().unwrap_or(0);
            for _ in 0..a.late {
                let r = api.post("/api/v1/apps", &serde_json::from_str(&body).unwrap());
                if r.status != 201 {
                    return Err(format!("late submission: {:?}", r.body));
                }
                late.push((
                    r.body["id"].as_str().unwrap_or_default().to_string(),
                    Instant::now(),
                ));
            }
        }
        // The late apps: when each is first seen on a worker.
        late.retain(|(id, at)| {
            let app = api.get(&format!("/api/v1/apps/{id}")).body;
            let placed = app["state"] != "SUBMITTED";
            if placed {
                late_running.push(at.elapsed());
            }
            !placed
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    if !late.is_empty() {
        let last = samples.last().map(|x| x.cores.clone()).unwrap_or_default();
        let app = api.get(&format!("/api/v1/apps/{}", late[0].0)).body;
        return Err(format!(
            "{} late apps never started (cores held at the end: {last:?}; one of them: {app})",
            late.len()
        ));
    }

    // Shares over the window after the warm-up, and per 10 s slice.
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.t >= a.warmup.as_secs_f64())
        .collect();
    let share = |set: &[&Sample], i: usize| -> f64 {
        let held: u64 = set.iter().map(|x| x.cores[i]).sum();
        let all: u64 = set.iter().map(|x| x.cores.iter().sum::<u64>()).sum();
        if all == 0 {
            0.0
        } else {
            held as f64 / all as f64
        }
    };
    let total_w: u32 = a.weights.iter().sum();
    let mean_cores = |i: usize| -> f64 {
        window.iter().map(|x| x.cores[i] as f64).sum::<f64>() / window.len().max(1) as f64
    };
    let mut rows = String::new();
    let mut worst: f64 = 0.0;
    for (i, name) in names.iter().enumerate() {
        let target = f64::from(a.weights[i]) / f64::from(total_w);
        let got = share(&window, i);
        worst = worst.max((got - target).abs());
        rows.push_str(&format!(
            "| `{name}` | {} | {} | {:.1} | {:.1} % | {:.1} % | {:.2} |\n",
            a.weights[i],
            if i == 0 { a.backlog } else { a.others },
            mean_cores(i),
            target * 100.0,
            got * 100.0,
            got / target,
        ));
    }
    let mut slices = String::new();
    let slice = 10.0;
    let mut from = a.warmup.as_secs_f64();
    while from < a.duration.as_secs_f64() - 1.0 {
        let part: Vec<&Sample> = window
            .iter()
            .copied()
            .filter(|x| x.t >= from && x.t < from + slice)
            .collect();
        if !part.is_empty() {
            let cells: Vec<String> = (0..names.len())
                .map(|i| format!("{:.1} %", share(&part, i) * 100.0))
                .collect();
            slices.push_str(&format!(
                "| {:.0}–{:.0} s | {} |\n",
                from,
                (from + slice).min(a.duration.as_secs_f64()),
                cells.join(" | ")
            ));
        }
        from += slice;
    }
    late_running.sort();
    let slots = a.workers as u64 * u64::from(a.worker_cores);
    let fifo_wait = a.run_for.as_secs_f64() * (a_queued_at_late as f64) / slots as f64;
    let p = |q| percentile(&late_running, q).map(ms).unwrap_or_default();
    let heads: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    let table = format!(
        "Single-node master (redb), {workers} real workers × {cores} cores, every app `sleep {run}` \
         on 1 core; {queued} apps queued before the workers joined; cores per namespace sampled \
         every 250 ms for {dur:?}, the first {warm:?} not counted.\n\n\
         | namespace | weight | queued at start | mean cores held | target share | measured share | measured / target |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         Largest gap between a measured and a target share: **{gap:.1} percentage points**.\n\n\
         Shares per 10 s slice (convergence):\n\n\
         | slice | {heads} |\n| --- |{dashes}\n{slices}\n\
         {late_n} apps submitted at {half:?} into a namespace `late` (weight 1), while `a` still \
         had {a_queued_at_late} apps queued: submit → placed p50 {p50}, max {pmax}. Behind one \
         FIFO queue they would have waited about {fifo:.0} s ({a_queued_at_late} apps × {run} / \
         {slots} cores).\n",
        workers = a.workers,
        cores = a.worker_cores,
        run = humantime::format_duration(a.run_for),
        dur = a.duration,
        warm = a.warmup,
        gap = worst * 100.0,
        heads = heads.join(" | "),
        dashes = " --- |".repeat(names.len()),
        late_n = a.late,
        half = a.duration / 2,
        p50 = p(0.5),
        pmax = p(1.0),
        fifo = fifo_wait,
    );
    drop(s);
    report("fairshare", command_line, &table, a.write.as_deref())
}
