//! `alohactl events`: reads the Server-Sent Events stream of `GET /api/v1/events`, prints one
//! line per event, and with `--follow` reconnects (to any master) with `Last-Event-ID` so no
//! event is missed across a disconnect or a failover.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use aloha_core::{Event, EventBody};

use crate::cli::{EventsArgs, Output};
use crate::client::{api_error, Client};
use crate::error::CtlError;
use crate::io::{print, Io};

/// One SSE message.
#[derive(Debug, Default, PartialEq)]
pub struct Message {
    /// `id:`
    pub id: Option<String>,
    /// `event:`
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Feeds SSE lines; returns a message at each blank line that ends one.
#[derive(Default)]
pub struct Parser {
    current: Message,
    has_data: bool,
}

impl Parser {
    /// Takes one line (without its newline).
    pub fn line(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            let done = std::mem::take(&mut self.current);
            let had = std::mem::take(&mut self.has_data);
            return had.then_some(done);
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// One line for a person.
pub fn describe(e: &Event) -> String {
    let at = e.at.format("%Y-%m-%dT%H:%M:%SZ");
    let rest = match &e.body {
        EventBody::AppStateChanged {
            app_id,
            name,
            old_state,
            new_state,
            attempt,
            worker_id,
            message,
            ..
        } => format!(
            "{app_id} {name:?} {} -> {new_state} attempt {attempt}{}{}",
            old_state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            worker_id
                .as_ref()
                .map(|w| format!(" on {w}"))
                .unwrap_or_default(),
            message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        EventBody::AppRelaunched {
            app_id,
            attempt,
            retries,
            message,
            ..
        } => format!(
            "{app_id} attempt {attempt} lost, relaunch {retries}{}",
            message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        EventBody::WorkerJoined {
            worker_id,
            address,
            cores,
            memory_mb,
        } => format!("{worker_id} at {address} ({cores} cores, {memory_mb} MiB)"),
        EventBody::WorkerLost { worker_id, message } => format!("{worker_id}: {message}"),
        EventBody::AppExpired {
            app_id,
            name,
            state,
            ..
        } => format!("{app_id} {name:?} ended {state}, removed by the retention"),
        EventBody::LeaderChanged {
            role,
            leader,
            epoch,
        } => format!(
            "{} is {role:?} at epoch {epoch}",
            leader.as_deref().unwrap_or("?")
        ),
        EventBody::ScheduleFired {
            schedule_id,
            name,
            scheduled_at,
            app_id,
        } => format!("{schedule_id} {name:?} run {app_id} for {scheduled_at}"),
        EventBody::ScheduleSkipped {
            schedule_id,
            name,
            scheduled_at,
            count,
            message,
        } => format!("{schedule_id} {name:?} skipped {count} from {scheduled_at}: {message}"),
        EventBody::ScheduleMissed {
            schedule_id,
            name,
            scheduled_at,
            count,
        } => format!("{schedule_id} {name:?} missed {count} from {scheduled_at}"),
        EventBody::ScheduleCreated { schedule_id, name }
        | EventBody::ScheduleUpdated { schedule_id, name }
        | EventBody::SchedulePaused { schedule_id, name }
        | EventBody::ScheduleResumed { schedule_id, name }
        | EventBody::ScheduleEnded { schedule_id, name }
        | EventBody::ScheduleDeleted { schedule_id, name } => format!("{schedule_id} {name:?}"),
        EventBody::NamespaceUpdated {
            namespace,
            quota,
            weight,
        } => format!(
            "{namespace} weight {weight} quota {}",
            serde_json::to_string(quota).unwrap_or_default()
        ),
        EventBody::NamespaceDeleted { namespace } => namespace.clone(),
    };
    format!("{:>6} {at} {:<17} {rest}\n", e.seq, e.body.type_name())
}

/// Runs the command.
pub fn run(
    client: &Client,
    format: Output,
    args: &EventsArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        // A stream has no end to wait for; keep-alive comments arrive every 15 s.
        .timeout(None::<Duration>)
        .build()
        .map_err(|e| CtlError::Internal(format!("cannot build the HTTP client: {e}")))?;
    // Without --follow, print the retained history; with it, start with new events.
    let mut last: Option<u64> = args.after.or(if args.follow { None } else { Some(0) });
    let mut warned = false;
    loop {
        let mut failures = Vec::new();
        let mut streamed = false;
        for master in client.masters() {
            let mut query: Vec<(&str, String)> = vec![("follow", args.follow.to_string())];
            if let Some(a) = &args.app_id {
                query.push(("app_id", a.clone()));
            }
            if let Some(k) = &args.kind {
                query.push(("kind", k.clone()));
            }
            if !args.types.is_empty() {
                query.push(("type", args.types.join(",")));
            }
            let mut req = http.get(format!("{master}/api/v1/events")).query(&query);
            if let Some(l) = last {
                req = req.header("Last-Event-ID", l.to_string());
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    failures.push((master.clone(), e.to_string()));
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                failures.push((master.clone(), "unavailable".into()));
                continue;
            }
            if !status.is_success() {
                let body = resp.bytes().unwrap_or_default();
                return Err(api_error(status, &body));
            }
            streamed = true;
            warned = false;
            let mut parser = Parser::default();
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { break };
                let Some(msg) = parser.line(line.trim_end_matches('\r')) else {
                    continue;
                };
                match msg.event.as_deref() {
                    Some("gap") => {
                        writeln!(
                            io.err,
                            "alohactl: some events are past the retention: {}",
                            msg.data
                        )?;
                    }
                    Some("error") => {
                        writeln!(io.err, "alohactl: the stream failed: {}", msg.data)?;
                    }
                    _ => {
                        let event: Event = serde_json::from_str(&msg.data).map_err(|e| {
                            CtlError::Internal(format!("malformed event from {master}: {e}"))
                        })?;
                        last = Some(event.seq);
                        match format {
                            Output::Json => print(io, &format!("{}\n", msg.data))?,
                            Output::Table => print(io, &describe(&event))?,
                        }
                    }
                }
            }
            break;
        }
        if !args.follow {
            if streamed {
                return Ok(());
            }
            return Err(CtlError::Unreachable { failures });
        }
        if !streamed && !warned {
            writeln!(
                io.err,
                "alohactl: no master is streaming events right now; retrying"
            )?;
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_are_parsed_with_comments_and_multiline_data() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for l in [
            ": keep-alive",
            "id: 7",
            "event: app_state_changed",
            "data: {\"a\":",
            "data: 1}",
            "",
            "",
            "id: 8",
            "data:x",
            "",
        ] {
            out.extend(p.line(l));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id.as_deref(), Some("7"));
        assert_eq!(out[0].event.as_deref(), Some("app_state_changed"));
        assert_eq!(out[0].data, "{\"a\":\n1}");
        assert_eq!(out[1].data, "x");
    }

    #[test]
    fn events_read_as_one_line() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "seq": 12, "at": "2026-01-02T03:04:05Z", "type": "app_state_changed",
            "app_id": "app-1", "name": "n", "kind": "process", "old_state": "RUNNING",
            "new_state": "FINISHED", "attempt": 1, "worker_id": "w1", "message": "exited with code 0"
        }))
        .unwrap();
        assert_eq!(
            describe(&e),
            "    12 2026-01-02T03:04:05Z app_state_changed app-1 \"n\" RUNNING -> FINISHED attempt 1 on w1: exited with code 0\n"
        );
        let e: Event = serde_json::from_value(serde_json::json!({
            "seq": 13, "at": "2026-01-02T03:04:06Z", "type": "app.expired",
            "app_id": "app-1", "name": "n", "kind": "process", "state": "FINISHED"
        }))
        .unwrap();
        assert_eq!(
            describe(&e),
            "    13 2026-01-02T03:04:06Z app.expired       app-1 \"n\" ended FINISHED, removed by the retention\n"
        );
    }
}
