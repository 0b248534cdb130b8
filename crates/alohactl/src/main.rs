//! # alohactl
//!
//! The Aloha-rs command-line client: submits, lists, inspects, kills and retries apps, manages
//! schedules and shows workers and the cluster, over the masters' REST API.
//!
//! ## Layout
//! - `cli`: the command line (clap) and the parsers of its values. Parsing only.
//! - `client`: the blocking HTTP client; failover across masters and following the leader.
//! - `commands`: one function per subcommand, and building a submission from flags.
//! - `batch`: `alohactl submit-batch`, reading a file of submissions and sending it in chunks.
//! - `schedules`: `alohactl schedule ...`, and building schedule bodies from flags.
//! - `events`: `alohactl events`, reading the Server-Sent Events stream across masters.
//! - `io`: where commands write (`Io`) and `print`; shared by `commands` and `events`.
//! - `wait`: `submit --wait`, polling an app until it ends (time injected for tests).
//! - `output`: every table and line printed, as pure functions of API data.
//! - `error`: the one error type and its exit codes.
//!
//! Exit codes: 0 success; 1 API, connection or output error, or a waited-for app that did not
//! finish; 2 usage error. Every failure is one line on stderr: `alohactl: <message>`.

mod batch;
mod cli;
mod client;
mod commands;
mod error;
mod events;
mod io;
mod logs;
mod output;
mod schedules;
mod wait;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let result = commands::run(
        cli,
        &mut io::Io {
            out: &mut out,
            err: &mut err,
        },
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`alohactl list | head`): nothing left to tell anyone.
        Err(e) if e.is_broken_pipe() => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(err, "alohactl: {}", output::clean(&e.to_string()));
            e.exit_code()
        }
    }
}

/// Help and version go out as clap prints them; real usage errors become one line and exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            eprintln!("alohactl: {}", cli::usage_line(&e));
            ExitCode::from(2)
        }
    }
}
