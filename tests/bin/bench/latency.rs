//! `latency`: how long a `true` app takes from its submission to RUNNING on one real worker,
//! one app at a time. The time starts just before the POST and stops when the master's event
//! stream (`GET /api/v1/events?type=app_state_changed`, opened before the first submission and
//! read on its own thread) delivers the app's change to RUNNING: no polling interval in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::report::{fs_of, ms, percentile, report, temp_fs};
use crate::setup::{app_body, EventStream, Setup};
use crate::T;

#[derive(clap::Args)]
pub(crate) struct LatencyArgs {
    /// Apps submitted, one after the other (each once the previous one is RUNNING).
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Cores the worker offers (every app takes one; `true` exits at once).
    #[arg(long, default_value_t = 4)]
    worker_cores: u32,
    /// Where the worker keeps its app directories (repeat for one run each, reported side by
    /// side, e.g. the temp dir's disk against a tmpfs such as /dev/shm); default: the run's
    /// temp dir, next to the master's database.
    #[arg(long = "worker-dir")]
    worker_dirs: Vec<PathBuf>,
    /// Markdown file whose `bench:latency` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// The app of an event that is a change to RUNNING.
fn running(data: &str) -> Option<String> {
    let e = serde_json::from_str::<Value>(data).ok()?;
    (e["new_state"] == "RUNNING")
        .then(|| e["app_id"].as_str().map(str::to_string))
        .flatten()
}

/// Sends `(app_id, when)` for every change to RUNNING; false once the receiver is gone.
fn send_running(data: &str, tx: &mpsc::Sender<(String, Instant)>) -> bool {
    let at = Instant::now();
    running(data).is_none_or(|id| tx.send((id, at)).is_ok())
}

/// Per app: (submit → 201, submit → RUNNING), in submission order.
fn latency_run(a: &LatencyArgs, worker_dir: Option<&Path>) -> Vec<(Duration, Duration)> {
    // Removed with the run, like the temp dir (and after the worker, which `s` stops first).
    let parent = worker_dir.map(|d| {
        tempfile::Builder::new()
            .prefix("aloha-bench-latency-")
            .tempdir_in(d)
            .unwrap_or_else(|e| panic!("a directory in {}: {e}", d.display()))
    });
    let mut s = Setup::new("aloha-bench-latency-");
    s.add_master("5s");
    s.wait_leader();
    match &parent {
        Some(parent) => s.add_worker_in("w1", a.worker_cores, &parent.path().join("w1")),
        None => s.add_worker("w1", a.worker_cores),
    }
    let api = s.masters[0].api.clone();
    api.wait_alive_workers(1, T);

    let (tx, rx) = mpsc::channel();
    // Closed (and its reader ended) however the run ends.
    let _stream = EventStream::open(&api, "type=app_state_changed", move |data| {
        send_running(data, &tx)
    });

    let mut early: HashMap<String, Instant> = HashMap::new();
    let mut wait_running = |id: &str| -> Instant {
        if let Some(at) = early.remove(id) {
            return at;
        }
        loop {
            match rx.recv_timeout(T) {
                Ok((got, at)) if got == id => return at,
                Ok((got, at)) => {
                    early.insert(got, at);
                }
                Err(e) => panic!("no RUNNING event for {id}: {e}"),
            }
        }
    };
    let warmup = 10.min(a.n);
    let mut out = Vec::with_capacity(a.n);
    for i in 0..warmup + a.n {
        let t0 = Instant::now();
        let r = api.post("/api/v1/apps", &app_body(&format!("latency-{i}")));
        let acked = t0.elapsed();
        assert_eq!(r.status, 201, "submission {i}: {:?}", r.body);
        let id = r.body["id"].as_str().expect("app id").to_string();
        let running = wait_running(&id).duration_since(t0);
        if i >= warmup {
            out.push((acked, running));
        }
    }
    out
}

pub(crate) fn latency(a: &LatencyArgs, command_line: &str) -> Result<(), String> {
    if a.n == 0 {
        return Err("--n must be at least 1".into());
    }
    let dirs: Vec<Option<&Path>> = if a.worker_dirs.is_empty() {
        vec![None]
    } else {
        a.worker_dirs.iter().map(|d| Some(d.as_path())).collect()
    };
    let p = |v: &[Duration], q: f64| percentile(v, q).map(ms).unwrap_or_default();
    let mut rows = String::new();
    let mut peers = String::new();
    for dir in dirs {
        let place = match dir {
            Some(d) => fs_of(d),
            None => temp_fs(),
        };
        let creates = create_times(dir.map_or_else(std::env::temp_dir, Path::to_path_buf));
        let us = |q: f64| percentile(&creates, q).map_or(0, |d| d.as_micros());
        peers += &format!(
            "| {place} | {} | {} µs | {} µs |\n",
            creates.len(),
            us(0.5),
            us(0.9)
        );
        eprintln!("latency n={}: running, worker dir on {place}", a.n);
        let runs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| latency_run(a, dir)))
            .map_err(|_| "the run failed (see above)".to_string())?;
        let mut acked: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let mut running: Vec<Duration> = runs.iter().map(|r| r.1).collect();
        acked.sort();
        running.sort();
        for (to, v) in [("`201`", &acked), ("RUNNING (event received)", &running)] {
            rows += &format!(
                "| {place} | {to} | {} | {} | {} | {} | {} |\n",
                a.n,
                p(v, 0.5),
                p(v, 0.9),
                p(v, 0.99),
                p(v, 1.0)
            );
        }
    }
    let table = format!(
        "Single-node master (redb, in the temp dir), one worker ({} cores), `true` apps (1 core) \
         submitted one at a time, after 10 warm-up apps:\n\n\
         | worker's app directories on | from the POST to | apps | p50 | p90 | p99 | max |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n{rows}\n\
         The peer, in the same run: creating one directory or one empty file there. Each app \
         start needs six: the attempt's two directories, `description.json`, `stdout` and \
         `stderr`, which the worker makes ahead of time (`<work-dir>/.spare`), and the pid file, \
         written while the supervisor starts the program:\n\n\
         | filesystem | creations | p50 | p90 |\n\
         | --- | --- | --- | --- |\n{peers}",
        a.worker_cores,
    );
    report("latency", command_line, &table, a.write.as_deref())
}

/// How long each of 100 `mkdir`s and 100 file creations (one file in each new directory) takes
/// in a fresh directory under `parent`, sorted.
fn create_times(parent: PathBuf) -> Vec<Duration> {
    let dir = tempfile::Builder::new()
        .prefix("aloha-bench-creates-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("a directory in {}: {e}", parent.display()));
    let mut times = Vec::with_capacity(200);
    for i in 0..100 {
        let sub = dir.path().join(i.to_string());
        let t = Instant::now();
        std::fs::create_dir(&sub).expect("mkdir");
        times.push(t.elapsed());
        let t = Instant::now();
        std::fs::File::create(sub.join("stdout")).expect("create a file");
        times.push(t.elapsed());
    }
    times.sort();
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::read_sse;

    #[test]
    fn running_changes_are_read_from_the_stream() {
        let stream = "id: 1\nevent: app_state_changed\n\
            data: {\"seq\":1,\"type\":\"app_state_changed\",\"app_id\":\"a1\",\"new_state\":\"SUBMITTED\"}\n\n\
            : keep-alive\n\n\
            id: 2\nevent: app_state_changed\n\
            data: {\"seq\":2,\"type\":\"app_state_changed\",\"app_id\":\"a1\",\"new_state\":\"RUNNING\"}\n\n\
            id: 3\nevent: app_state_changed\n\
            data: {\"seq\":3,\"type\":\"app_state_changed\",\"app_id\":\"a2\",\"new_state\":\"RUNNING\"}\n";
        let (tx, rx) = mpsc::channel();
        // The last event has no closing blank line: the stream ended mid-event.
        read_sse(stream.as_bytes(), |d| send_running(d, &tx));
        drop(tx);
        let got: Vec<String> = rx.iter().map(|(id, _)| id).collect();
        assert_eq!(got, vec!["a1".to_string()]);
    }
}
