//! `alohactl logs [-f] [--stderr] [--attempt N] <id>`: an app's output as the master proxies it
//! from the app's worker (`GET /api/v1/apps/{id}/logs`). Without `-f`, the last 64 KiB; with
//! it, the output from there on as it is written, until the attempt ends. Bytes are copied to
//! stdout as they come, untouched.

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;

use crate::cli::LogsArgs;
use crate::client::{api_error, segment, Client};
use crate::error::CtlError;
use crate::io::Io;

/// Runs the command.
pub fn run(client: &Client, args: &LogsArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        // A followed log ends when the attempt does, not after a fixed time.
        .timeout(if args.follow {
            None
        } else {
            Some(Duration::from_secs(30))
        })
        .build()
        .map_err(|e| CtlError::Internal(format!("cannot build the HTTP client: {e}")))?;
    let mut query: Vec<(&str, String)> = vec![(
        "stream",
        if args.stderr { "stderr" } else { "stdout" }.to_string(),
    )];
    if let Some(a) = args.attempt {
        query.push(("attempt", a.to_string()));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    let path = format!("/api/v1/apps/{}/logs", segment(&args.id));
    let mut failures = Vec::new();
    for master in client.masters() {
        let resp = match http.get(format!("{master}{path}")).query(&query).send() {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{master}: {e}"));
                continue;
            }
        };
        let status = resp.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A standby without a view, or the app's worker is gone: another master may know
            // better; the last answer is reported if none does.
            let body = resp.bytes().unwrap_or_default();
            failures.push(api_error(status, &body).to_string());
            continue;
        }
        if !status.is_success() {
            let body = resp.bytes().unwrap_or_default();
            return Err(api_error(status, &body));
        }
        let mut resp = resp;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = resp.read(&mut buf).map_err(|e| {
                CtlError::Internal(format!("the log stream from {master} broke: {e}"))
            })?;
            if n == 0 {
                break;
            }
            io.out.write_all(&buf[..n])?;
            io.out.flush()?;
        }
        return Ok(());
    }
    Err(CtlError::Internal(format!(
        "no master served the logs: {}",
        failures.join("; ")
    )))
}
