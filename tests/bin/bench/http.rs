//! `http`: submissions per second with many keep-alive connections, driven by `wrk`, against a
//! single-node master (redb), one HA master on a one-member etcd, and a bare axum endpoint that
//! only parses the request (`bare.rs`), in one run. Only `201`s count as acknowledged; the
//! masters' own `aloha_apps_submitted_total` must agree with wrk's count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aloha_e2e::{free_port, wait_for, Api, Proc};
use clap::ValueEnum;

use crate::report::{ms, report};
use crate::setup::{app_body, metric, metrics, Setup};
use crate::{Store, T};

#[derive(clap::Args)]
pub(crate) struct HttpArgs {
    /// How long wrk drives each target (whole seconds).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections wrk keeps open.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Targets, comma-separated, run in this order.
    #[arg(long, value_delimiter = ',', default_value = "bare,redb,etcd")]
    targets: Vec<Target>,
    /// Markdown file whose `bench:http` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Target {
    /// The bare axum endpoint (parses the JSON, answers 201).
    Bare,
    /// Single-node master, embedded redb.
    Redb,
    /// One HA master on a one-member etcd.
    Etcd,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Bare => "bare axum endpoint",
            Target::Redb => Store::Redb.label(),
            Target::Etcd => Store::Etcd.label(),
        }
    }
}

/// What wrk printed, parsed.
#[derive(Debug, Default, PartialEq)]
struct WrkResult {
    requests: u64,
    runtime: Duration,
    non_2xx: u64,
    socket_errors: u64,
    p50: Option<Duration>,
    p99: Option<Duration>,
}

impl WrkResult {
    /// Requests answered 2xx (the masters answer a submission 201 or an error).
    fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }

    fn ok_rate(&self) -> f64 {
        self.ok() as f64 / self.runtime.as_secs_f64().max(1e-9)
    }
}

/// One target's row.
struct Row {
    target: Target,
    wrk: WrkResult,
    /// For masters: how many submissions the master counted during the run.
    counted: Option<f64>,
}

/// A wrk duration such as `812.00us`, `1.25ms`, `2.01s`, `1.00m`.
fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses wrk's report (run with `--latency`).
fn parse_wrk(out: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    let mut seen_requests = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50 = parse_wrk_duration(v),
            ["99%", v] => r.p99 = parse_wrk_duration(v),
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse().map_err(|_| format!("wrk: bad line {line:?}"))?;
                r.runtime = parse_wrk_duration(t.trim_end_matches(','))
                    .ok_or_else(|| format!("wrk: bad line {line:?}"))?;
                seen_requests = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !seen_requests {
        return Err(format!("wrk printed no totals:\n{out}"));
    }
    Ok(r)
}

/// The wrk binary, or a one-line error saying how to install it.
fn wrk_bin() -> Result<PathBuf, String> {
    let out = Command::new("sh")
        .args(["-c", "command -v wrk"])
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return Err("wrk is not installed: run `apt-get install -y wrk`".into());
    }
    Ok(PathBuf::from(path))
}

/// Runs wrk against `url` with a POST of the submission body.
fn run_wrk(a: &HttpArgs, wrk: &Path, dir: &Path, url: &str) -> Result<WrkResult, String> {
    let script = dir.join("submit.lua");
    let body = app_body("b").to_string().replace('\'', "\\'");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let secs = a.duration.as_secs().max(1);
    let out = Command::new(wrk)
        .arg(format!("-t{}", a.threads))
        .arg(format!("-c{}", a.connections))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text)
}

const SUBMITTED: &str = "aloha_apps_submitted_total";

fn run_target(a: &HttpArgs, wrk: &Path, target: Target) -> Result<Row, String> {
    match target {
        Target::Bare => {
            let dir = tempfile::Builder::new()
                .prefix("aloha-bench-http-")
                .tempdir()
                .map_err(|e| format!("temp dir: {e}"))?;
            let port = free_port();
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.args(["bare-server", "--port", &port.to_string()]);
            let server = Proc::spawn("bare-server", cmd, dir.path());
            let api = Api::new(&format!("http://127.0.0.1:{port}"));
            wait_for("the bare server", T, || {
                api.try_get("/healthz").ok().filter(|r| r.status == 200)
            });
            for i in 0..10 {
                api.submit(app_body(&format!("warmup-{i}")));
            }
            let url = format!("{}/api/v1/apps", api.base);
            let r = run_wrk(a, wrk, dir.path(), &url);
            drop(server);
            Ok(Row {
                target,
                wrk: r?,
                counted: None,
            })
        }
        Target::Redb | Target::Etcd => {
            let mut s = Setup::new("aloha-bench-http-");
            if target == Target::Etcd {
                s.start_etcd();
            }
            s.add_master("5s");
            s.wait_leader();
            let api = s.masters[0].api.clone();
            for i in 0..10 {
                api.submit(app_body(&format!("warmup-{i}")));
            }
            let before = metric(&metrics(&api), SUBMITTED);
            let url = format!("{}/api/v1/apps", api.base);
            let wrk = run_wrk(a, wrk, s.dir.path(), &url)?;
            let after = metric(&metrics(&api), SUBMITTED);
            let counted = before.zip(after).map(|(b, a)| a - b);
            Ok(Row {
                target,
                wrk,
                counted,
            })
        }
    }
}

/// Whether the master's count agrees with wrk's: wrk stops when its time is up and drops the
/// requests in flight, which the master may still have accepted — at most one per connection.
fn check(row: &Row, connections: usize) -> String {
    match row.counted {
        None if row.target == Target::Bare => "—".into(),
        None => format!("no {SUBMITTED} metric"),
        Some(c) => {
            let ok = row.wrk.ok() as f64;
            if c >= ok && c <= ok + connections as f64 {
                format!("{c:.0} (agrees)")
            } else {
                format!("{c:.0} (MISMATCH: wrk saw {ok:.0} 2xx)")
            }
        }
    }
}

pub(crate) fn http(a: &HttpArgs, command_line: &str) -> Result<(), String> {
    let wrk = wrk_bin()?;
    if a.connections == 0 || a.threads == 0 || a.threads > a.connections {
        return Err("--connections and --threads must be at least 1, threads ≤ connections".into());
    }
    let mut rows = Vec::new();
    for &t in &a.targets {
        eprintln!("http {}: running", t.label());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_target(a, &wrk, t))) {
            Ok(Ok(r)) => {
                eprintln!(
                    "http {}: {:.0} acknowledged/s, {} non-2xx, {} socket errors, master counted {}",
                    t.label(),
                    r.wrk.ok_rate(),
                    r.wrk.non_2xx,
                    r.wrk.socket_errors,
                    check(&r, a.connections)
                );
                rows.push(r)
            }
            Ok(Err(e)) => eprintln!("http {}: FAILED: {e}", t.label()),
            Err(_) => eprintln!("http {}: FAILED (see above)", t.label()),
        }
    }
    let bare = rows
        .iter()
        .find(|r| r.target == Target::Bare)
        .map(|r| r.wrk.ok_rate());
    let mut table = format!(
        "wrk, {} threads, {} keep-alive connections, {} s per target; `POST /api/v1/apps` \
         with `{}`, no worker (the apps queue):\n\n\
         | target | requests | 2xx/s | non-2xx | socket errors | p50 | p99 | master counted | of bare |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        a.threads,
        a.connections,
        a.duration.as_secs().max(1),
        app_body("b")
    );
    for r in &rows {
        let of_bare = match bare {
            Some(b) if b > 0.0 => format!("{:.1} %", 100.0 * r.wrk.ok_rate() / b),
            _ => "—".into(),
        };
        table.push_str(&format!(
            "| {} | {} | {:.0}/s | {} | {} | {} | {} | {} | {of_bare} |\n",
            r.target.label(),
            r.wrk.requests,
            r.wrk.ok_rate(),
            r.wrk.non_2xx,
            r.wrk.socket_errors,
            r.wrk.p50.map(ms).unwrap_or_else(|| "—".into()),
            r.wrk.p99.map(ms).unwrap_or_else(|| "—".into()),
            check(r, a.connections),
        ));
    }
    report("http", command_line, &table, a.write.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 3s test @ http://127.0.0.1:1/api/v1/apps
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.01ms    2.00ms  40.00ms   90.00%
    Req/Sec     6.00k   500.00     7.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.00ms
     90%    2.00ms
     99%    1.50s
  36000 requests in 3.00s, 5.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  12000.00
Transfer/sec:      1.67MB
";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 36000);
        assert_eq!(r.runtime, Duration::from_secs(3));
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.p50, Some(Duration::from_micros(812)));
        assert_eq!(r.p99, Some(Duration::from_millis(1500)));
        assert_eq!(r.ok(), 35993);
        assert!(parse_wrk("nothing").is_err());
    }
}
