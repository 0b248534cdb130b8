//! `schedules`: many schedules firing every minute on one single-node master (redb), their runs
//! launched on the simulated workers of `scale` (`simworkers.rs`). The schedules' `start_at`
//! are spread evenly over one minute in the near future (jitter 0), so the firings come at an
//! even rate; they are created by many concurrent connections (`load.rs`). The bench then reads
//! `GET /api/v1/events?type=schedule.fired` (opened before the first nominal time) for
//! `--minutes` full minutes and checks every firing against the nominal times it expects: none
//! may be missing (lost) or come twice (doubled). The fire lag is the event's `at` (the commit
//! of the run's submission, its `submitted_at`) − `scheduled_at`, both from the master's clock.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use aloha_core::{Event, EventBody};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::load::post_many_async;
use crate::queue::{mib, rss};
use crate::report::{ms, percentile, report};
use crate::scale::{cpu_time, raise_fd_limit};
use crate::setup::{EventStream, Setup};
use crate::simworkers::{Calls, SimWorkers};
use crate::T;

#[derive(clap::Args)]
pub(crate) struct SchedulesArgs {
    /// Schedules, each firing every minute.
    #[arg(long, default_value_t = 100_000)]
    schedules: usize,
    /// Full minutes of firings observed.
    #[arg(long, default_value_t = 3)]
    minutes: u32,
    /// Simulated workers the runs go to.
    #[arg(long, default_value_t = 500)]
    workers: usize,
    /// Cores each simulated worker offers (every run takes one).
    #[arg(long, default_value_t = 8)]
    worker_cores: u32,
    /// Heartbeat interval of every simulated worker.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Concurrent connections creating the schedules.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// From the start of the creation to the first nominal time; the creation must end before
    /// it (default: 10 s + 0.4 ms per schedule).
    #[arg(long, value_parser = humantime::parse_duration)]
    lead: Option<Duration>,
    /// Markdown file whose `bench:schedules` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
    /// CSV file to write every firing of the window to (schedule, scheduled_at, at, received),
    /// for a closer look at when the lag rises.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// Every schedule's period, and the span its first nominal times are spread over.
const PERIOD_US: i64 = 60_000_000;
/// The issue's target for the fire lag's p99.
const TARGET_P99: Duration = Duration::from_millis(100);

/// One `schedule.fired` event.
struct Fired {
    /// The schedule's index, from its name (`s<index>`); None for a name not ours.
    index: Option<usize>,
    schedule_id: String,
    scheduled_at: DateTime<Utc>,
    /// The commit of the run's submission.
    at: DateTime<Utc>,
    /// When the bench read it from the stream.
    received: DateTime<Utc>,
}

fn parse_fired(data: &str, received: DateTime<Utc>) -> Option<Fired> {
    let e: Event = serde_json::from_str(data).ok()?;
    let EventBody::ScheduleFired {
        schedule_id,
        name,
        scheduled_at,
        ..
    } = e.body
    else {
        return None;
    };
    Some(Fired {
        index: name.strip_prefix('s').and_then(|n| n.parse().ok()),
        schedule_id: schedule_id.0,
        scheduled_at,
        at: e.at,
        received,
    })
}

/// Where a firing falls among the nominal times the bench expects.
#[derive(Debug, PartialEq)]
enum Slot {
    /// The schedule's nominal time in minute `k` of the window.
    Minute(usize),
    /// One of its nominal times, after the window.
    After,
    /// Not a nominal time of one of the bench's schedules.
    Unexpected,
}

/// The nominal times of the run and every firing seen, checked against them.
struct Tally {
    n: usize,
    minutes: usize,
    /// The first nominal time of schedule 0: the window is `[start, start + minutes)`.
    start: DateTime<Utc>,
    /// Per schedule and minute of the window: fired (first firing only).
    seen: Vec<bool>,
    /// The schedule id of each index, from its first firing.
    ids: Vec<Option<String>>,
    /// Every (schedule id, nominal time) fired, in the window or not.
    keys: HashSet<(String, DateTime<Utc>)>,
    events: u64,
    /// Per minute of the window; the last entry counts those after it or unexpected.
    duplicates: Vec<u64>,
    after: u64,
    unexpected: u64,
    /// Firings committed before their nominal time.
    early: u64,
    /// Per minute: event `at` − `scheduled_at`, and received − `scheduled_at`.
    lag: Vec<Vec<Duration>>,
    received: Vec<Vec<Duration>>,
    max_lag: Duration,
    /// With `--dump`: every firing of the window, as a CSV line.
    dump: Option<Vec<String>>,
}

impl Tally {
    fn new(n: usize, minutes: usize, start: DateTime<Utc>) -> Tally {
        Tally {
            n,
            minutes,
            start,
            seen: vec![false; n * minutes],
            ids: vec![None; n],
            keys: HashSet::new(),
            events: 0,
            duplicates: vec![0; minutes + 1],
            after: 0,
            unexpected: 0,
            early: 0,
            lag: vec![Vec::new(); minutes],
            received: vec![Vec::new(); minutes],
            max_lag: Duration::ZERO,
            dump: None,
        }
    }

    /// Schedule `i`'s offset from `start`, in µs: the offsets spread evenly over one period.
    fn offset_us(i: usize, n: usize) -> i64 {
        (i as i128 * PERIOD_US as i128 / n as i128) as i64
    }

    /// Schedule `i`'s `start_at`.
    fn start_at(&self, i: usize) -> DateTime<Utc> {
        self.start + chrono::Duration::microseconds(Self::offset_us(i, self.n))
    }

    /// How many nominal times of the window are at or before `now`.
    fn due(&self, now: DateTime<Utc>) -> usize {
        let Some(e) = (now - self.start).num_microseconds().filter(|e| *e >= 0) else {
            return 0;
        };
        let full = (e / PERIOD_US) as usize;
        if full >= self.minutes {
            return self.n * self.minutes;
        }
        let rem = e % PERIOD_US;
        let in_minute = (rem as i128 * self.n as i128 / PERIOD_US as i128) as usize + 1;
        self.n * full + in_minute.min(self.n)
    }

    fn slot(&mut self, f: &Fired) -> Slot {
        let Some(i) = f.index.filter(|&i| i < self.n) else {
            return Slot::Unexpected;
        };
        // One id per name: a second schedule under the same name was not created by us.
        match &self.ids[i] {
            Some(id) if *id != f.schedule_id => return Slot::Unexpected,
            Some(_) => {}
            None => self.ids[i] = Some(f.schedule_id.clone()),
        }
        let Some(d) = (f.scheduled_at - self.start_at(i)).num_microseconds() else {
            return Slot::Unexpected;
        };
        // Exactly a whole number of periods after its start_at (no sub-µs part either).
        let exact = f.scheduled_at.timestamp_subsec_nanos().is_multiple_of(1000);
        if d < 0 || d % PERIOD_US != 0 || !exact {
            return Slot::Unexpected;
        }
        match (d / PERIOD_US) as usize {
            k if k < self.minutes => Slot::Minute(k),
            _ => Slot::After,
        }
    }

    fn add(&mut self, f: Fired) {
        self.events += 1;
        let slot = self.slot(&f);
        if !self.keys.insert((f.schedule_id.clone(), f.scheduled_at)) {
            match slot {
                Slot::Minute(k) => self.duplicates[k] += 1,
                _ => self.duplicates[self.minutes] += 1,
            }
            return;
        }
        match slot {
            Slot::Minute(k) => {
                let i = f.index.expect("a slot in the window has an index");
                self.seen[i * self.minutes + k] = true;
                let lag = f.at - f.scheduled_at;
                if lag < chrono::TimeDelta::zero() {
                    self.early += 1;
                }
                let lag = lag.to_std().unwrap_or_default();
                self.max_lag = self.max_lag.max(lag);
                self.lag[k].push(lag);
                self.received[k].push((f.received - f.scheduled_at).to_std().unwrap_or_default());
                if let Some(d) = &mut self.dump {
                    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
                    d.push(format!(
                        "{i},{},{},{}",
                        t(f.scheduled_at),
                        t(f.at),
                        t(f.received)
                    ));
                }
            }
            Slot::After => self.after += 1,
            Slot::Unexpected => self.unexpected += 1,
        }
    }

    fn fired_in_window(&self) -> usize {
        self.lag.iter().map(Vec::len).sum()
    }

    fn lost(&self, k: usize) -> usize {
        (0..self.n)
            .filter(|i| !self.seen[i * self.minutes + k])
            .count()
    }

    fn duplicates_total(&self) -> u64 {
        self.duplicates.iter().sum()
    }
}

struct Results {
    lead: Duration,
    creation: Duration,
    tally: Tally,
    /// Over the window: the master's and the bench's CPU.
    cpu: Duration,
    bench_cpu: Duration,
    window: Duration,
    rss: Option<(u64, u64)>,
    finished: u64,
    heartbeat_errors: u64,
    reregistrations: u64,
    report_errors: u64,
}

fn schedule_body(name: &str, start_at: DateTime<Utc>) -> String {
    json!({
        "name": name,
        "app": {"kind": "process", "spec": {"command": ["true"]}, "cores": 1, "memory_mb": 0},
        "every": "1m",
        "start_at": start_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "overlap": "allow",
        "misfire": "run_all",
        "misfire_grace": "1m",
    })
    .to_string()
}

fn schedules_run(a: &SchedulesArgs) -> Results {
    let mut s = Setup::new("aloha-bench-schedules-");
    s.add_master("5s");
    s.wait_leader();
    let master = &s.masters[0];
    let (pid, api, rpc) = (master.proc.pid(), master.api.clone(), master.rpc_url());
    let own = std::process::id() as i32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    eprintln!("schedules: registering {} simulated workers", a.workers);
    let sim = rt
        .block_on(SimWorkers::start(
            &rpc,
            a.workers,
            a.worker_cores,
            a.heartbeat,
            Calls::Streams,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    // Runs with the simulation's tasks still going on the runtime's threads; stops them and
    // the runtime however it ends.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        api.wait_alive_workers(a.workers, T);
        let n = a.schedules;
        let lead = a
            .lead
            .unwrap_or(Duration::from_secs(10) + Duration::from_micros(400) * n as u32);
        // Whole seconds, so the nominal times read easily in the master's log.
        let (t0, began) = (Instant::now(), Utc::now());
        let start = DateTime::from_timestamp((began + lead).timestamp(), 0)
            .expect("a time within chrono's range");
        let lead = (start - began).to_std().unwrap_or_default();
        let mut tally = Tally::new(n, a.minutes as usize, start);
        tally.dump = a.dump.is_some().then(Vec::new);
        let end = start + chrono::Duration::microseconds(PERIOD_US * a.minutes as i64);

        eprintln!(
            "schedules: creating {n} schedules (first nominal time {start}, in {:.0} s)",
            lead.as_secs_f64()
        );
        let done = Arc::new(AtomicUsize::new(0));
        let mut creator = {
            let url = format!("{}/api/v1/schedules", api.base);
            let (c, done) = (a.connections, done.clone());
            rt.spawn(async move {
                post_many_async(&url, n, c, done, move |i| {
                    let at = start + chrono::Duration::microseconds(Tally::offset_us(i, n));
                    schedule_body(&format!("s{i}"), at)
                })
                .await
            })
        };
        let mut report_at = Instant::now() + Duration::from_secs(10);
        while !creator.is_finished() {
            if Instant::now() > report_at {
                report_at += Duration::from_secs(10);
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "schedules: {d} of {n} created ({:.0}/s)",
                    d as f64 / t0.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match rt.block_on(&mut creator) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("creating the schedules: {e}"),
            Err(e) => panic!("creating the schedules: {e}"),
        }
        let creation = t0.elapsed();
        eprintln!(
            "schedules: {n} created in {:.1} s ({:.0}/s)",
            creation.as_secs_f64(),
            n as f64 / creation.as_secs_f64()
        );

        let (tx, rx) = mpsc::channel();
        // Closed (and its reader ended) however the run ends.
        let _stream =
            EventStream::open(&api, "type=schedule.fired", move |data| {
                match parse_fired(data, Utc::now()) {
                    Some(f) => tx.send(f).is_ok(),
                    None => true,
                }
            });
        // A firing at its start_at goes into a batch at once; the stream must be open before.
        let margin = (start - Utc::now()).to_std().unwrap_or_default();
        assert!(
            margin >= Duration::from_millis(500),
            "creating the schedules took {:.1} s, too close to the first nominal time: give \
             a longer --lead than {}",
            creation.as_secs_f64(),
            humantime::format_duration(lead)
        );
        eprintln!(
            "schedules: event stream open, {:.1} s before the first nominal time",
            margin.as_secs_f64()
        );

        let mut window_start = None;
        let mut window_end = None;
        let mut report_at = start + chrono::Duration::seconds(10);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(f) => {
                    tally.add(f);
                    // Take what has come before looking at the clock.
                    while let Ok(f) = rx.try_recv() {
                        tally.add(f);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the event stream ended")
                }
            }
            let now = Utc::now();
            if window_start.is_none() && now >= start {
                window_start = Some((
                    Instant::now(),
                    cpu_time(pid).expect("master CPU time"),
                    cpu_time(own).expect("own CPU time"),
                ));
            }
            if window_end.is_none() && now >= end {
                window_end = Some((
                    Instant::now(),
                    cpu_time(pid).expect("master CPU time"),
                    cpu_time(own).expect("own CPU time"),
                ));
            }
            if now >= report_at {
                report_at += chrono::Duration::seconds(10);
                eprintln!(
                    "schedules: {:.0} s into the window: {} fired of {} due, {} duplicates, \
                     {} runs FINISHED, max fire lag {}",
                    (now - start).num_milliseconds() as f64 / 1000.0,
                    tally.fired_in_window(),
                    tally.due(now),
                    tally.duplicates_total(),
                    sim.counters.finished.load(Ordering::Relaxed),
                    ms(tally.max_lag)
                );
            }
            // After the window, a little longer for late or doubled firings; at most a minute
            // for missing ones.
            let past = (now - end).to_std().unwrap_or_default();
            let complete = tally.fired_in_window() == n * a.minutes as usize;
            if window_end.is_some()
                && ((complete && past >= Duration::from_secs(2)) || past >= Duration::from_secs(60))
            {
                break;
            }
        }
        let (t1, cpu1, own1) = window_start.expect("the window started");
        let (t2, cpu2, own2) = window_end.expect("the window ended");
        eprintln!(
            "schedules: {} fired of {} in the window",
            tally.fired_in_window(),
            n * a.minutes as usize
        );
        (lead, creation, tally, cpu2 - cpu1, own2 - own1, t2 - t1)
    }));
    let c = &sim.counters;
    let (finished, heartbeat_errors, reregistrations, report_errors) = (
        c.finished.load(Ordering::Relaxed),
        c.heartbeat_errors.load(Ordering::Relaxed),
        c.reregistrations.load(Ordering::Relaxed),
        c.report_errors.load(Ordering::Relaxed),
    );
    let rss = rss(pid);
    rt.block_on(sim.stop());
    rt.shutdown_timeout(Duration::from_secs(5));
    let (lead, creation, tally, cpu, bench_cpu, window) =
        result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    Results {
        lead,
        creation,
        tally,
        cpu,
        bench_cpu,
        window,
        rss,
        finished,
        heartbeat_errors,
        reregistrations,
        report_errors,
    }
}

pub(crate) fn schedules(a: &SchedulesArgs, command_line: &str) -> Result<(), String> {
    if a.schedules == 0 || a.minutes == 0 || a.workers == 0 || a.connections == 0 {
        return Err("--schedules, --minutes, --workers and --connections must not be 0".into());
    }
    let limit = raise_fd_limit();
    let need = 3 * a.workers as u64 + 1000;
    if limit < need {
        return Err(format!(
            "{} workers need about {need} open files; the limit is {limit} (ulimit -Hn)",
            a.workers
        ));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schedules_run(a)))
        .map_err(|_| "the run failed (see above)".to_string())?;
    let t = &r.tally;
    if let (Some(path), Some(lines)) = (&a.dump, &t.dump) {
        let text = format!("schedule,scheduled_at,at,received\n{}\n", lines.join("\n"));
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {} firings to {}", lines.len(), path.display());
    }
    let p = |v: &[Duration], q: f64| percentile(v, q).map(ms).unwrap_or_else(|| "—".into());
    let mut rows = String::new();
    let row =
        |label: &str, fired: usize, dups: u64, lost: usize, lag: &[Duration], recv: &[Duration]| {
            format!(
                "| {label} | {} | {fired} | {dups} | {lost} | {} | {} | {} | {} | {} |\n",
                fired + lost,
                p(lag, 0.5),
                p(lag, 0.9),
                p(lag, 0.99),
                p(lag, 1.0),
                p(recv, 0.99),
            )
        };
    for k in 0..t.minutes {
        let mut lag = t.lag[k].clone();
        let mut recv = t.received[k].clone();
        lag.sort();
        recv.sort();
        rows.push_str(&row(
            &format!("{}", k + 1),
            lag.len(),
            t.duplicates[k],
            t.lost(k),
            &lag,
            &recv,
        ));
    }
    let mut lag: Vec<Duration> = t.lag.concat();
    let mut recv: Vec<Duration> = t.received.concat();
    lag.sort();
    recv.sort();
    let lost: usize = (0..t.minutes).map(|k| t.lost(k)).sum();
    let dups = t.duplicates_total();
    if t.minutes > 1 {
        rows.push_str(&row("all", lag.len(), dups, lost, &lag, &recv));
    }
    let pct = |cpu: Duration| {
        format!(
            "{:.1} %",
            100.0 * cpu.as_secs_f64() / r.window.as_secs_f64().max(1e-9)
        )
    };
    let p99 = percentile(&lag, 0.99);
    let lag_ok = p99.is_some_and(|p| p <= TARGET_P99);
    let exact_ok = lost == 0 && dups == 0 && t.unexpected == 0;
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    let table = format!(
        "Single-node master (redb), {workers} simulated workers ({cores} cores each, heartbeat \
         every {hb}) in the bench process. {n} schedules `every: 1m` (`overlap: allow`, \
         `misfire: run_all`, jitter 0), their `start_at` spread evenly over one minute, so \
         {rate:.0} firings/s; each run is `true` (1 core), launched on a simulated worker and \
         reported RUNNING, then FINISHED at once. Fire lag: the `schedule.fired` event's `at` \
         (the commit of the run's submission) − `scheduled_at`; \"received\": when the bench \
         read the event from `GET /api/v1/events?type=schedule.fired`.\n\n\
         | minute | nominal times | fired | doubled | lost | fire lag p50 | p90 | p99 | max | received p99 |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         Created {n} schedules in {created:.1} s ({create_rate:.0}/s, {conns} connections); \
         the first nominal time came {lead:.1} s after the creation began. Over the {minutes} \
         minutes: master CPU {cpu} of one core, bench CPU {bench_cpu}. Master RSS at the end: \
         {rss}. Runs FINISHED (acknowledged by the master): {finished}. Firings after the \
         window: {after}; at times not expected: {unexpected}; committed before their nominal \
         time: {early}. Heartbeat errors: {hb_err}, re-registrations: {rereg}, failed reports: \
         {rep_err}.\n\n\
         Target: fire lag p99 ≤ {target} — {p99} {lag_mark}; no firing lost or doubled — \
         {lost} lost, {dups} doubled {exact_mark}.\n",
        workers = a.workers,
        cores = a.worker_cores,
        hb = humantime::format_duration(a.heartbeat),
        n = a.schedules,
        rate = a.schedules as f64 / 60.0,
        created = r.creation.as_secs_f64(),
        create_rate = a.schedules as f64 / r.creation.as_secs_f64(),
        conns = a.connections,
        lead = r.lead.as_secs_f64(),
        minutes = a.minutes,
        cpu = pct(r.cpu),
        bench_cpu = pct(r.bench_cpu),
        rss = r
            .rss
            .map(|(now, peak)| format!("{} (peak {})", mib(now), mib(peak)))
            .unwrap_or_else(|| "—".into()),
        finished = r.finished,
        after = t.after,
        unexpected = t.unexpected,
        early = t.early,
        hb_err = r.heartbeat_errors,
        rereg = r.reregistrations,
        rep_err = r.report_errors,
        target = ms(TARGET_P99),
        p99 = p99.map(ms).unwrap_or_else(|| "—".into()),
        lag_mark = mark(lag_ok),
        exact_mark = mark(exact_ok),
    );
    report("schedules", command_line, &table, a.write.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fired(t: &Tally, i: usize, k: i64, lag_ms: i64) -> Fired {
        let at = t.start_at(i) + chrono::Duration::microseconds(PERIOD_US * k);
        Fired {
            index: Some(i),
            schedule_id: format!("sch-{i}"),
            scheduled_at: at,
            at: at + chrono::Duration::milliseconds(lag_ms),
            received: at + chrono::Duration::milliseconds(lag_ms + 1),
        }
    }

    #[test]
    fn firings_are_checked_against_the_nominal_times() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut t = Tally::new(3, 2, start);
        // Schedule 1 starts a third of a minute in.
        assert_eq!(t.start_at(1), start + chrono::Duration::seconds(20));
        for i in 0..3 {
            t.add(fired(&t, i, 0, 5));
        }
        t.add(fired(&t, 0, 1, 7));
        t.add(fired(&t, 1, 1, 7));
        // Doubled, after the window, off the grid.
        t.add(fired(&t, 1, 1, 9));
        t.add(fired(&t, 2, 2, 1));
        let mut off = fired(&t, 2, 1, 1);
        off.scheduled_at += chrono::Duration::milliseconds(1);
        t.add(off);
        assert_eq!(t.fired_in_window(), 5);
        assert_eq!((t.lost(0), t.lost(1)), (0, 1));
        assert_eq!(t.duplicates, vec![0, 1, 0]);
        assert_eq!((t.after, t.unexpected, t.events), (1, 1, 8));
        assert_eq!(t.lag[1], vec![Duration::from_millis(7); 2]);
        // Another schedule under a name already seen is not ours.
        let mut other = fired(&t, 0, 1, 1);
        other.schedule_id = "sch-x".into();
        t.add(other);
        assert_eq!(t.unexpected, 2);
    }

    #[test]
    fn due_counts_the_nominal_times_so_far() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t = Tally::new(60, 2, start);
        let s = |secs: i64| start + chrono::Duration::milliseconds(secs * 1000 + 500);
        assert_eq!(t.due(start - chrono::Duration::seconds(1)), 0);
        assert_eq!(t.due(start), 1);
        assert_eq!(t.due(s(0)), 1);
        assert_eq!(t.due(s(59)), 60);
        assert_eq!(t.due(s(60)), 61);
        assert_eq!(t.due(s(500)), 120);
    }

    #[test]
    fn fired_events_are_parsed() {
        let data = r#"{"seq":7,"at":"2026-01-01T00:00:20.004Z","type":"schedule.fired","schedule_id":"sch-1","name":"s12","scheduled_at":"2026-01-01T00:00:20Z","app_id":"app-1"}"#;
        let f = parse_fired(data, Utc::now()).expect("a firing");
        assert_eq!(f.index, Some(12));
        assert_eq!(f.schedule_id, "sch-1");
        assert_eq!(
            (f.at - f.scheduled_at).num_milliseconds(),
            4,
            "lag from the event's own times"
        );
    }
}
