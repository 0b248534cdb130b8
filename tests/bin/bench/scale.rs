//! `scale`: one single-node master (redb) and thousands of simulated workers over real gRPC
//! (`simworkers.rs`). First, with no apps, the master's CPU for the workers' heartbeats over a
//! window; then `--apps` apps submitted by many concurrent connections (`load.rs`), each
//! launched on a simulated worker that reports it RUNNING, then FINISHED at once: the time until
//! the master acknowledged every FINISHED report, placements per second, the master's CPU over
//! that phase and its resident memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{submit_batches_async, submit_many_async};
use crate::queue::{mib, rss};
use crate::report::report;
use crate::setup::{metric, metrics, Setup};
use crate::simworkers::{Calls, SimWorkers};

#[derive(clap::Args)]
pub(crate) struct ScaleArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 5000)]
    workers: usize,
    /// Cores each simulated worker offers (every app takes one).
    #[arg(long, default_value_t = 4)]
    worker_cores: u32,
    /// Apps submitted and run to FINISHED (0: only the heartbeat phase).
    #[arg(long, default_value_t = 1_000_000)]
    apps: usize,
    /// Heartbeat interval of every simulated worker.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// How long the master's CPU is measured with only heartbeats (0s: skip).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Concurrent connections submitting the apps.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Apps per submission: 1 posts each app to `POST /api/v1/apps`; more posts them in
    /// `POST /api/v1/apps/batch` requests of that many.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How launches and reports travel: `streams` (as aloha-worker) or `unary` calls.
    #[arg(long, value_enum, default_value = "streams")]
    calls: Calls,
    /// The master's `--placement`: `spread` (its default) or `binpack`.
    #[arg(long, default_value = "spread")]
    placement: aloha_core::schedule::PlacementPolicy,
    /// Markdown file whose `bench:scale` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// The master's count of apps that entered FINISHED.
const FINISHED_TOTAL: &str = "aloha_app_transitions_total{state=\"FINISHED\"}";

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ...": comm may hold spaces, so count fields after the last ')'.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Lifts the open-file limit to its hard maximum: every simulated worker holds a listener and
/// two connections here, and the master (which inherits the limit) one connection each way.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

struct Results {
    registration: Duration,
    idle: Option<IdleCpu>,
    apps: Option<AppsPhase>,
    rss: Option<(u64, u64)>,
    heartbeat_errors: u64,
    reregistrations: u64,
    report_errors: u64,
}

struct IdleCpu {
    window: Duration,
    cpu: Duration,
    /// The bench's own CPU meanwhile (the simulated workers, the submitting clients).
    bench_cpu: Duration,
    heartbeats: u64,
}

struct AppsPhase {
    submitted: Duration,
    finished: Duration,
    /// From the first launch to the latest.
    launches: u64,
    launch_span: Option<Duration>,
    cpu: Duration,
    bench_cpu: Duration,
    master_finished: Option<f64>,
}

fn scale_run(a: &ScaleArgs) -> Results {
    let mut s = Setup::new("aloha-bench-scale-");
    s.add_master_with("5s", vec!["--placement".into(), a.placement.to_string()]);
    s.wait_leader();
    let master = &s.masters[0];
    let (pid, api, rpc) = (master.proc.pid(), master.api.clone(), master.rpc_url());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    eprintln!("scale: registering {} simulated workers", a.workers);
    let own = std::process::id() as i32;
    let t0 = Instant::now();
    let sim = rt
        .block_on(SimWorkers::start(
            &rpc,
            a.workers,
            a.worker_cores,
            a.heartbeat,
            a.calls,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let registration = t0.elapsed();
    eprintln!(
        "scale: {} registered in {:.1} s",
        a.workers,
        registration.as_secs_f64()
    );
    // Runs with the simulation's tasks still going on the runtime's threads; stops them and
    // the runtime however it ends.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        api.wait_alive_workers(a.workers, crate::T);
        let idle = (!a.idle.is_zero()).then(|| {
            // One interval for the heartbeats to settle after the registrations.
            std::thread::sleep(a.heartbeat);
            let hb0 = sim.counters.heartbeats.load(Ordering::Relaxed);
            let cpu0 = cpu_time(pid).expect("master CPU time");
            let own0 = cpu_time(own).expect("own CPU time");
            let start = Instant::now();
            std::thread::sleep(a.idle);
            let cpu = cpu_time(pid).expect("master CPU time") - cpu0;
            let bench_cpu = cpu_time(own).expect("own CPU time") - own0;
            let window = start.elapsed();
            let heartbeats = sim.counters.heartbeats.load(Ordering::Relaxed) - hb0;
            eprintln!(
                "scale: heartbeats only: master CPU {:.1} % of one core ({heartbeats} heartbeats \
                 in {:.1} s)",
                100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
                window.as_secs_f64()
            );
            IdleCpu {
                window,
                cpu,
                bench_cpu,
                heartbeats,
            }
        });
        let apps = (a.apps > 0).then(|| {
            let cpu0 = cpu_time(pid).expect("master CPU time");
            let own0 = cpu_time(own).expect("own CPU time");
            // No line until the first app finishes.
            let finished0 = metric(&metrics(&api), FINISHED_TOTAL).unwrap_or(0.0);
            let start = Instant::now();
            let done = Arc::new(AtomicUsize::new(0));
            let mut submitter = {
                let (base, n, c, done) = (api.base.clone(), a.apps, a.connections, done.clone());
                let batch = a.batch;
                rt.spawn(async move {
                    if batch > 1 {
                        submit_batches_async(&base, n, batch, c, done).await
                    } else {
                        submit_many_async(&base, n, c, done).await
                    }
                })
            };
            let mut submitted = None;
            let mut last = (0, Instant::now());
            let mut report_at = Instant::now() + Duration::from_secs(10);
            loop {
                let finished = sim.counters.finished.load(Ordering::Relaxed);
                if submitted.is_none() && submitter.is_finished() {
                    match rt.block_on(&mut submitter) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => panic!("submitting: {e}"),
                        Err(e) => panic!("submitting: {e}"),
                    }
                    submitted = Some(start.elapsed());
                }
                if finished as usize >= a.apps {
                    break;
                }
                if finished > last.0 {
                    last = (finished, Instant::now());
                }
                assert!(
                    last.1.elapsed() < Duration::from_secs(60),
                    "no app finished for 60 s ({finished} of {} FINISHED, {} submitted)",
                    a.apps,
                    done.load(Ordering::Relaxed)
                );
                if Instant::now() > report_at {
                    report_at += Duration::from_secs(10);
                    eprintln!(
                        "scale: {:.0} s: {} submitted, {} launched, {finished} FINISHED",
                        start.elapsed().as_secs_f64(),
                        done.load(Ordering::Relaxed),
                        sim.counters.launches.load(Ordering::Relaxed)
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let finished = start.elapsed();
            let cpu = cpu_time(pid).expect("master CPU time") - cpu0;
            let bench_cpu = cpu_time(own).expect("own CPU time") - own0;
            let submitted = submitted.unwrap_or(finished);
            // A counter: the apps gauge only holds the finished apps the master retains.
            let master_finished = metric(&metrics(&api), FINISHED_TOTAL).map(|f| f - finished0);
            eprintln!(
                "scale: {} apps FINISHED in {:.1} s (all submitted after {:.1} s)",
                a.apps,
                finished.as_secs_f64(),
                submitted.as_secs_f64()
            );
            AppsPhase {
                submitted,
                finished,
                launches: sim.counters.launches.load(Ordering::Relaxed),
                launch_span: sim.launch_span().map(|(f, l)| l - f),
                cpu,
                bench_cpu,
                master_finished,
            }
        });
        (idle, apps)
    }));
    let c = &sim.counters;
    let (heartbeat_errors, reregistrations, report_errors) = (
        c.heartbeat_errors.load(Ordering::Relaxed),
        c.reregistrations.load(Ordering::Relaxed),
        c.report_errors.load(Ordering::Relaxed),
    );
    let rss = rss(pid);
    rt.block_on(sim.stop());
    rt.shutdown_timeout(Duration::from_secs(5));
    let (idle, apps) = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    Results {
        registration,
        idle,
        apps,
        rss,
        heartbeat_errors,
        reregistrations,
        report_errors,
    }
}

pub(crate) fn scale(a: &ScaleArgs, command_line: &str) -> Result<(), String> {
    if a.workers == 0 || a.connections == 0 || a.heartbeat.is_zero() {
        return Err("--workers, --connections and --heartbeat must not be 0".into());
    }
    if a.batch == 0 || a.batch > 1000 {
        return Err("--batch must be 1 to 1000".into());
    }
    let limit = raise_fd_limit();
    let need = 3 * a.workers as u64 + 1000;
    if limit < need {
        return Err(format!(
            "{} workers need about {need} open files; the limit is {limit} (ulimit -Hn)",
            a.workers
        ));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scale_run(a)))
        .map_err(|_| "the run failed (see above)".to_string())?;
    let pct = |cpu: Duration, over: Duration| {
        format!(
            "{:.1} %",
            100.0 * cpu.as_secs_f64() / over.as_secs_f64().max(1e-9)
        )
    };
    let mut table = format!(
        "Single-node master (redb), {} simulated workers ({} cores each, heartbeat every {}) in \
         the bench process, each on its own port and gRPC connection; a launch is answered at \
         once and reported RUNNING, then FINISHED. Placement: `{}`. {}\n\n",
        a.workers,
        a.worker_cores,
        humantime::format_duration(a.heartbeat),
        a.placement,
        if a.batch > 1 {
            format!(
                "Apps submitted in `POST /api/v1/apps/batch` requests of {} by {} connections.",
                a.batch, a.connections
            )
        } else {
            format!(
                "Apps submitted one per `POST /api/v1/apps` by {} connections.",
                a.connections
            )
        }
    );
    if let Some(i) = &r.idle {
        table.push_str(&format!(
            "| phase | window | heartbeats | master CPU (of one core) | bench CPU |\n\
             | --- | --- | --- | --- | --- |\n\
             | heartbeats only, no apps | {:.1} s | {} ({:.0}/s) | {} | {} |\n\n",
            i.window.as_secs_f64(),
            i.heartbeats,
            i.heartbeats as f64 / i.window.as_secs_f64(),
            pct(i.cpu, i.window),
            pct(i.bench_cpu, i.window),
        ));
    }
    if let Some(p) = &r.apps {
        let placements = p
            .launch_span
            .filter(|s| !s.is_zero())
            .map(|s| format!("{:.0}/s", p.launches as f64 / s.as_secs_f64()))
            .unwrap_or_else(|| "—".into());
        table.push_str(&format!(
            "| apps | all submitted | all FINISHED | apps/s | placements/s | master CPU (of one core) | bench CPU | FINISHED by the master's count |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {:.1} s | {:.1} s | {:.0}/s | {placements} | {} | {} | {} |\n\n",
            a.apps,
            p.submitted.as_secs_f64(),
            p.finished.as_secs_f64(),
            a.apps as f64 / p.finished.as_secs_f64(),
            pct(p.cpu, p.finished),
            pct(p.bench_cpu, p.finished),
            p.master_finished
                .map(|f| format!("{f:.0}"))
                .unwrap_or_else(|| "—".into()),
        ));
    }
    table.push_str(&format!(
        "Registration of all workers: {:.1} s. Master RSS at the end: {}. Heartbeat errors: {}, re-registrations: {}, failed reports: {}.\n",
        r.registration.as_secs_f64(),
        r.rss
            .map(|(now, peak)| format!("{} (peak {})", mib(now), mib(peak)))
            .unwrap_or_else(|| "—".into()),
        r.heartbeat_errors,
        r.reregistrations,
        r.report_errors,
    ));
    report("scale", command_line, &table, a.write.as_deref())
}
