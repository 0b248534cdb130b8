//! `aloha-bench`: benchmarks on the real binaries, reusing the end-to-end harness. Not a test:
//! the numbers depend on the machine, so nothing here asserts a duration.
//!
//! # Layout
//! One file per subcommand, beside what they share:
//! - `chaos.rs`: a 3-member etcd, three HA masters and two workers under continuous submissions
//!   while the leader, a worker and etcd members are killed or stopped in cycles: apps lost,
//!   stuck or run twice, and failover times (the engine is the harness's `chaos` module).
//! - `failover.rs`: three HA masters on a one-member etcd; the time from SIGKILL (or SIGTERM)
//!   of the leader to the first submission another master answers `201`.
//! - `fairshare.rs`: namespaces of different weights with big backlogs on real workers: the
//!   cores each holds against its weight, and how soon apps of a late namespace start.
//! - `fuzz.rs`: random and malformed HTTP requests over raw TCP (broken JSON, huge numbers,
//!   hostile ids, wrong methods and content types, oversized headers, lying lengths), then
//!   slowloris connections: answers by status, 5xx, crashes, a normal GET's latency meanwhile.
//! - `submit.rs`: submission throughput and latency against a single-node master (embedded
//!   redb) and an HA master on a one-member etcd, with no worker (the apps only queue); then, end
//!   to end, how long it takes to submit the apps to a master with two workers and run them all.
//! - `http.rs`: submissions/s under `wrk` with many keep-alive connections, against both masters
//!   and a bare axum endpoint (`bare.rs`, the hidden `bare-server` subcommand) that only parses
//!   the request: the ceiling the HTTP layer leaves.
//! - `latency.rs`: submit → RUNNING on one real worker, read from the event stream.
//! - `queue.rs`: submission latency with 0, 100k, 1M apps queued, and the master's RSS.
//! - `scale.rs`: thousands of simulated workers over real gRPC (`simworkers.rs`): apps to
//!   FINISHED, placements/s, the master's CPU for heartbeats.
//! - `schedules.rs`: 100k schedules firing every minute, their runs on the simulated workers:
//!   fire lag from the event stream, and no firing lost or doubled.
//! - `setup.rs`: the processes of one run and the event stream; `load.rs`: many concurrent submissions;
//!   `report.rs`: percentiles, the printed tables and `--write`.
//!
//! Build first (`cargo build --workspace`, or `--release` with `aloha-bench --release`): the
//! harness runs the binaries from the target dir. `--write docs/benchmarks.md` replaces the
//! section between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, so a rerun updates the
//! page. Every process is started through the harness, whose `Drop` stops it: each run owns its
//! processes and drops them when it ends, also when it fails.

// The simulated workers of `scale` and `schedules` allocate per message as a worker does; with
// glibc's malloc the load generator took CPU the master under test should have.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bare;
mod chaos;
mod failover;
mod fairshare;
mod fuzz;
mod http;
mod latency;
mod load;
mod queue;
mod report;
mod scale;
mod schedules;
mod setup;
mod simworkers;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// How long any single setup step may take before the run is declared failed.
const T: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "aloha-bench",
    about = "Benchmarks on the real Aloha-rs binaries (build them first: cargo build --workspace)"
)]
struct Cli {
    /// Run the daemons from the release build (target/release; build it first with
    /// `cargo build --release --workspace`). ALOHA_BIN_DIR=DIR runs them from DIR instead.
    #[arg(long, global = true)]
    release: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Faults in cycles (leader SIGKILL/SIGSTOP, worker SIGKILL, etcd member and quorum loss)
    /// under continuous submissions: apps lost, stuck or run twice, failover times.
    Chaos(chaos::ChaosArgs),
    /// Time from killing the HA leader to the first submission another master accepts.
    Failover(failover::FailoverArgs),
    /// Weighted fair shares between namespaces with big backlogs, on real workers.
    Fairshare(fairshare::FairshareArgs),
    /// Random and malformed requests and slowloris connections against a live master:
    /// answers by status, 5xx, crashes.
    Fuzz(fuzz::FuzzArgs),
    /// Submission throughput and latency, single-node (redb) and HA (etcd).
    Submit(submit::SubmitArgs),
    /// Submissions/s with many keep-alive connections (wrk), against both masters and a bare
    /// axum endpoint.
    Http(http::HttpArgs),
    /// Submit → RUNNING latency on one real worker.
    Latency(latency::LatencyArgs),
    /// Submission latency with many apps queued, and the master's memory.
    Queue(queue::QueueArgs),
    /// Thousands of simulated workers over gRPC: apps to FINISHED, heartbeat CPU.
    Scale(scale::ScaleArgs),
    /// Many schedules firing every minute, runs on simulated workers: fire lag, lost, doubled.
    Schedules(schedules::SchedulesArgs),
    /// The bare axum endpoint `http` compares with (started by `http` itself).
    #[command(hide = true)]
    BareServer(bare::BareArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub(crate) enum Store {
    /// Single-node master, embedded redb (fsync per commit).
    Redb,
    /// One HA master on a one-member etcd.
    Etcd,
}

impl Store {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Store::Redb => "single-node, redb",
            Store::Etcd => "HA, 1-member etcd",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::BareServer(a) = &cli.cmd {
        return bare::serve(a);
    }
    // The harness asks for debug logs; the daemons' hot paths should log as in production.
    // RUST_LOG overrides ALOHA_LOG in both daemons. Set before any thread starts.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "info");
    }
    // Also before any thread starts: use_bin_dir sets CARGO_TARGET_DIR.
    let bin_dir = match std::env::var_os("ALOHA_BIN_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None if cli.release => Some(aloha_e2e::release_dir()),
        None => None,
    };
    let _bin_link = match &bin_dir {
        Some(d) => match aloha_e2e::use_bin_dir(d) {
            Ok(link) => {
                let build = if cli.release && std::env::var_os("ALOHA_BIN_DIR").is_none() {
                    "release build"
                } else {
                    "binaries from ALOHA_BIN_DIR"
                };
                report::set_build(build);
                eprintln!("aloha-bench: daemons from {}", d.display());
                Some(link)
            }
            Err(e) => {
                eprintln!(
                    "aloha-bench: cannot use the binaries in {}: {e} (build them first: cargo \
                     build --release --workspace)",
                    d.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let command_line = std::iter::once("aloha-bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let result = match cli.cmd {
        Cmd::Chaos(a) => chaos::chaos(&a, &command_line),
        Cmd::Failover(a) => failover::failover(&a, &command_line),
        Cmd::Fairshare(a) => fairshare::fairshare(&a, &command_line),
        Cmd::Fuzz(a) => fuzz::fuzz(&a, &command_line),
        Cmd::Submit(a) => submit::submit(&a, &command_line),
        Cmd::Http(a) => http::http(&a, &command_line),
        Cmd::Latency(a) => latency::latency(&a, &command_line),
        Cmd::Queue(a) => queue::queue(&a, &command_line),
        Cmd::Scale(a) => scale::scale(&a, &command_line),
        Cmd::Schedules(a) => schedules::schedules(&a, &command_line),
        Cmd::BareServer(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aloha-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
