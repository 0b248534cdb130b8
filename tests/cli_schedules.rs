//! `alohactl schedule ...` against a real master and worker.

use std::time::Duration;

use aloha_e2e::{wait_for, Cluster};
use chrono::{DateTime, Utc};
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Runs `alohactl` and insists on success; returns stdout.
fn ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = c.ctl(args);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

/// Runs `alohactl` and insists on a one-line failure with exit code 1; returns stderr.
fn fails(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = c.ctl(args);
    assert_eq!(code, 1, "{args:?}\nstdout: {out}\nstderr: {err}");
    assert!(err.starts_with("alohactl: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn schedules_from_the_command_line() {
    let c = Cluster::start("3s", &[("w1", 2)]);

    // An every-second schedule fires; list shows it with its rule and counters.
    let tick = json(&ok(
        &c,
        &[
            "-o",
            "json",
            "schedule",
            "create",
            "--name",
            "tick",
            "--every",
            "1s",
            "--overlap",
            "allow",
            "--",
            "true",
        ],
    ));
    let tick_id = tick["id"].as_str().unwrap().to_string();
    assert_eq!(tick["every"], "1s", "{tick:#}");
    assert_eq!(tick["app"]["spec"]["command"], serde_json::json!(["true"]));
    wait_for("a run of tick", Duration::from_secs(30), || {
        let r = c.api().get(&format!("/api/v1/apps?schedule_id={tick_id}"));
        (!r.body["apps"].as_array()?.is_empty()).then_some(())
    });
    let out = ok(&c, &["schedule", "list"]);
    let row = out
        .lines()
        .find(|l| l.starts_with(&tick_id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("tick") && row.contains("ACTIVE") && row.contains("every 1s"),
        "{out}"
    );
    assert!(
        out.lines().next().unwrap().contains("RUNS/SKIPPED/MISSED"),
        "{out}"
    );
    let list = json(&ok(&c, &["-o", "json", "schedule", "list", "--all"]));
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1, "{list:#}");

    // A cron schedule on Berlin's wall clock: next runs in CET and in UTC, an hour apart.
    let out = ok(
        &c,
        &[
            "schedule",
            "create",
            "--name",
            "hourly",
            "--time-zone",
            "Europe/Berlin",
            "--cron",
            "0 * * * *",
            "--label",
            "team=data",
            "--",
            "echo",
            "v1",
        ],
    );
    let hourly_id = out
        .lines()
        .find_map(|l| l.strip_prefix("Id:"))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_string();
    let out = ok(&c, &["schedule", "show", &hourly_id]);
    assert!(
        out.contains("Rule:            cron 0 * * * *")
            && out.contains("Time zone:       Europe/Berlin"),
        "{out}"
    );
    let next: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "Next runs:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(next.len(), 5, "{out}");
    for line in next {
        // 2026-12-03 12:00:00 CET  (2026-12-03T11:00:00Z)
        let (local, utc) = line
            .split_once(" CET  (")
            .unwrap_or_else(|| panic!("{line}"));
        let utc: DateTime<Utc> = utc.trim_end_matches(')').parse().unwrap();
        let expected = (utc + chrono::Duration::hours(1)).format("%Y-%m-%d %H:%M:%S");
        assert_eq!(local, expected.to_string(), "{line}");
        assert_eq!(utc.format("%M:%S").to_string(), "00:00", "{line}");
    }

    // Pause and resume print the state.
    let out = ok(&c, &["schedule", "pause", &tick_id]);
    assert!(out.contains("State:     PAUSED"), "{out}");
    let out = ok(&c, &["schedule", "resume", &tick_id]);
    assert!(out.contains("State:     ACTIVE"), "{out}");

    // A trigger prints the run it created.
    let out = ok(&c, &["schedule", "trigger", &tick_id, "--allow-overlap"]);
    assert!(
        out.contains("Id:") && out.contains("app-") && out.contains(&tick_id),
        "{out}"
    );

    // A dry-run backfill lists the nominal times: every second from start_at.
    let start: DateTime<Utc> = tick["start_at"].as_str().unwrap().parse().unwrap();
    let end = start + chrono::Duration::seconds(3);
    let (start, end) = (start.to_rfc3339(), end.to_rfc3339());
    let out = ok(
        &c,
        &[
            "schedule",
            "backfill",
            &tick_id,
            "--start",
            &start,
            "--end",
            &end,
            "--dry-run",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[3], "3 nominal times; dry run: nothing was created");

    // An update changes the name and merges a new command into the template.
    let out = ok(
        &c,
        &[
            "schedule", "update", &hourly_id, "--name", "renamed", "--", "echo", "v2",
        ],
    );
    assert!(out.contains("Name:            renamed"), "{out}");
    let s = c.api().get(&format!("/api/v1/schedules/{hourly_id}")).body;
    assert_eq!(s["name"], "renamed");
    assert_eq!(
        s["app"]["spec"]["command"],
        serde_json::json!(["echo", "v2"])
    );
    assert_eq!(
        s["app"]["labels"]["team"], "data",
        "the rest of the template stays"
    );
    assert_eq!(s["time_zone"], "Europe/Berlin");
    assert_eq!(s["cron"], "0 * * * *");

    // Delete; afterwards the id is unknown (the master's 404, on one line).
    let out = ok(&c, &["schedule", "delete", &tick_id]);
    assert!(
        out.starts_with(&format!("deleted schedule {tick_id}")),
        "{out}"
    );
    let err = fails(&c, &["schedule", "show", &tick_id]);
    assert!(err.contains("404"), "{err}");
    let err = fails(&c, &["schedule", "pause", "sched-missing"]);
    assert!(err.contains("404"), "{err}");

    // A bad cron expression: one line naming it.
    let err = fails(
        &c,
        &[
            "schedule",
            "create",
            "--name",
            "bad",
            "--cron",
            "61 * * * *",
            "--",
            "true",
        ],
    );
    assert!(err.contains("61 * * * *"), "{err}");
    // Neither --cron nor --every: a usage error before any request.
    let (code, _, err) = c.ctl(&["schedule", "create", "--name", "bad", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cron EXPR or --every"), "{err}");
}
