//! Schedules on the real binaries: runs every second, `queue` and `skip` with a slow job,
//! the REST contract, and exactly-once firing across a master SIGKILL and an HA failover on a
//! real etcd.

use std::collections::BTreeSet;
use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{wait_for, Api, Cluster};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(40);

fn schedule(name: &str, command: &[&str], extra: Value) -> Value {
    let mut b = json!({
        "name": name,
        "app": {"kind": "process", "spec": {"command": command}},
        "cron": "*/1 * * * * *",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v.clone();
        }
    }
    b
}

fn create(api: &Api, body: &Value) -> String {
    let r = api.post("/api/v1/schedules", body);
    assert_eq!(r.status, 201, "{body}: {:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Every run of schedule `id`, oldest first.
fn runs(api: &Api, id: &str) -> Vec<Value> {
    let r = api.get(&format!("/api/v1/apps?schedule_id={id}&limit=1000"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut v = r.body["apps"].as_array().unwrap().clone();
    v.reverse();
    v
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// The nominal times of the runs: each once, one second apart, none missing.
fn assert_every_second_once(runs: &[Value]) -> Vec<DateTime<Utc>> {
    let times: Vec<DateTime<Utc>> = runs.iter().map(|a| time(&a["scheduled_at"])).collect();
    let unique: BTreeSet<&DateTime<Utc>> = times.iter().collect();
    assert_eq!(
        unique.len(),
        times.len(),
        "a nominal time fired twice: {times:?}"
    );
    for w in times.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_milliseconds(),
            1000,
            "a nominal time was lost: {times:?}"
        );
    }
    times
}

#[test]
fn an_every_second_schedule_creates_one_run_per_second() {
    let c = Cluster::start("3s", &[("w1", 4)]);
    let api = c.api();
    let id = create(
        api,
        &schedule(
            "tick",
            &["sh", "-c", "echo $ALOHA_SCHEDULE_ID $ALOHA_SCHEDULED_AT"],
            json!({"overlap": "allow"}),
        ),
    );
    let done = wait_for("four finished runs", T, || {
        let r = runs(api, &id);
        (r.iter().filter(|a| a["state"] == "FINISHED").count() >= 4).then_some(r)
    });
    let times = assert_every_second_once(&done);
    let first = &done[0];
    assert_eq!(first["schedule_id"], id.as_str());
    assert_eq!(
        first["name"],
        format!("tick@{}", first["scheduled_at"].as_str().unwrap())
    );
    let lag = time(&first["submitted_at"]) - times[0];
    assert!(
        (0..1000).contains(&lag.num_milliseconds()),
        "fired {lag:?} after its nominal time"
    );
    let app_id = first["id"].as_str().unwrap();
    let out = std::fs::read_to_string(c.app_dir("w1", app_id, 1).join("stdout")).unwrap();
    assert_eq!(
        out,
        format!("{id} {}\n", first["scheduled_at"].as_str().unwrap())
    );
    let s = api.get(&format!("/api/v1/schedules/{id}")).body;
    assert_eq!(s["state"], "ACTIVE");
    assert_eq!(s["next_runs"].as_array().unwrap().len(), 5);
    assert!(s["counters"]["runs"].as_u64().unwrap() >= 4);
    assert!(!s["recent_runs"].as_array().unwrap().is_empty());
}

#[test]
fn queue_runs_a_slow_jobs_instances_one_after_another() {
    let c = Cluster::start("3s", &[("w1", 4)]);
    let api = c.api();
    let id = create(
        api,
        &schedule(
            "slow",
            &["sleep", "1.5"],
            json!({"overlap": "queue", "max_queued": 100}),
        ),
    );
    let done = wait_for("three finished runs", T, || {
        let r = runs(api, &id);
        (r.iter().filter(|a| a["state"] == "FINISHED").count() >= 3).then_some(r)
    });
    let finished: Vec<&Value> = done.iter().filter(|a| a["state"] == "FINISHED").collect();
    for w in finished.windows(2) {
        assert!(
            time(&w[1]["started_at"]) >= time(&w[0]["finished_at"]),
            "runs overlapped: {:#}",
            json!([w[0], w[1]])
        );
        assert!(
            time(&w[1]["scheduled_at"]) > time(&w[0]["scheduled_at"]),
            "nominal order"
        );
    }
    let s = api.get(&format!("/api/v1/schedules/{id}")).body;
    assert!(
        !s["pending"].as_array().unwrap().is_empty(),
        "instances wait: {s:#}"
    );
    assert_eq!(s["counters"]["skipped"], 0);
}

#[test]
fn skip_skips_while_a_run_is_running() {
    let c = Cluster::start("3s", &[("w1", 4)]);
    let api = c.api();
    let id = create(
        api,
        &schedule("slow", &["sleep", "2.5"], json!({"overlap": "skip"})),
    );
    let s = wait_for("skipped runs", T, || {
        let s = api.get(&format!("/api/v1/schedules/{id}")).body;
        (s["counters"]["skipped"].as_u64().unwrap_or(0) >= 2).then_some(s)
    });
    let all = runs(api, &id);
    let active = all
        .iter()
        .filter(|a| {
            !["FINISHED", "FAILED", "KILLED", "ERROR"].contains(&a["state"].as_str().unwrap())
        })
        .count();
    assert!(active <= 1, "at most one run at a time: {all:#?}");
    assert!(s["counters"]["runs"].as_u64().unwrap() >= 1);
}

#[test]
fn the_schedule_api_validates_changes_pauses_triggers_and_backfills() {
    let c = Cluster::start("3s", &[]);
    let api = c.api();
    for (extra, needle) in [
        (json!({"every": "1m"}), "exactly one of cron and every"),
        (json!({"cron": null}), "exactly one of cron and every"),
        (json!({"cron": "61 * * * *"}), "61 * * * *"),
        (json!({"time_zone": "Mars/Olympus"}), "unknown time_zone"),
        (
            json!({"start_at": "2026-01-02T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"}),
            "end_at",
        ),
        (json!({"app": {"kind": "process", "cores": 0}}), "cores"),
    ] {
        let r = api.post(
            "/api/v1/schedules",
            &schedule("bad", &["true"], extra.clone()),
        );
        assert_eq!(r.status, 400, "{extra}: {:?}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains(needle),
            "{extra}: {:?}",
            r.body
        );
    }
    let r = api.post(
        "/api/v1/schedules",
        &schedule("bad", &["true"], json!({"colour": "red"})),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);

    let id = create(
        api,
        &schedule(
            "hourly-rollup",
            &["true"],
            json!({"cron": "0 * * * *", "time_zone": "Europe/Berlin",
                   "start_at": "2026-11-01T00:00:00Z", "misfire": "skip", "overlap": "allow",
                   "paused": true}),
        ),
    );
    let s = api.get(&format!("/api/v1/schedules/{id}")).body;
    assert_eq!(s["state"], "PAUSED");
    assert!(
        runs(api, &id).is_empty(),
        "a paused schedule makes no compensating runs yet"
    );
    let r = api.post(
        &format!("/api/v1/schedules/{id}/backfill"),
        &json!({"start": "2026-11-02T00:00:00Z", "end": "2026-11-02T03:00:00Z", "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["times"],
        json!([
            "2026-11-02T00:00:00Z",
            "2026-11-02T01:00:00Z",
            "2026-11-02T02:00:00Z"
        ])
    );
    let r = api.post(
        &format!("/api/v1/schedules/{id}/backfill"),
        &json!({"start": "2026-11-02T00:00:00Z", "end": "2026-11-02T02:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["runs"].as_array().unwrap().len(), 2);
    assert!(r.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["outcome"] == "created"));
    let again = api.post(
        &format!("/api/v1/schedules/{id}/backfill"),
        &json!({"start": "2026-11-02T00:00:00Z", "end": "2026-11-02T02:00:00Z"}),
    );
    assert!(
        again.body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["outcome"] == "skipped"),
        "no second run for a nominal time: {:?}",
        again.body
    );
    assert_eq!(runs(api, &id).len(), 2);

    let r = api.post(
        &format!("/api/v1/schedules/{id}/trigger"),
        &json!({"overlap": "allow"}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["schedule_id"], id.as_str());

    let r = api.patch(&format!("/api/v1/schedules/{id}"), &json!({"name": "renamed", "app": {"kind": "process", "spec": {"command": ["echo", "v2"]}}}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "renamed");
    let r = api.patch(
        &format!("/api/v1/schedules/{id}"),
        &json!({"time_zone": "Nowhere/X"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);

    let r = api.post(&format!("/api/v1/schedules/{id}/resume"), &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["state"], "ACTIVE");
    assert!(
        r.body["counters"]["skipped"].as_u64().unwrap() > 500,
        "a month of hours skipped: {:?}",
        r.body["counters"]
    );
    let r = api.get("/api/v1/schedules");
    assert_eq!(r.body["schedules"].as_array().unwrap().len(), 1);
    let r = api.delete(&format!("/api/v1/schedules/{id}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(api.get(&format!("/api/v1/schedules/{id}")).status, 404);
    assert_eq!(runs(api, &id).len(), 3, "its runs are left alone");
    assert_eq!(
        api.post(&format!("/api/v1/schedules/{id}/trigger"), &json!({}))
            .status,
        404
    );
}

#[test]
fn no_nominal_time_fires_twice_or_is_lost_across_a_master_sigkill() {
    let mut c = Cluster::start("3s", &[]);
    let api = c.api().clone();
    let id = create(
        &api,
        &schedule(
            "tick",
            &["true"],
            json!({"overlap": "allow", "misfire": "run_all", "misfire_grace": "1m"}),
        ),
    );
    wait_for("three runs", T, || {
        (runs(&api, &id).len() >= 3).then_some(())
    });
    let dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&dir);
    let before = runs(&api, &id).len();
    wait_for("runs after the restart", T, || {
        (runs(&api, &id).len() >= before + 3).then_some(())
    });
    assert_every_second_once(&runs(&api, &id));
}

#[test]
fn no_nominal_time_fires_twice_or_is_lost_across_an_ha_failover() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-sched-ha-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let mut masters = aloha_e2e::ha_masters(&etcd, dir.path());
    let leader = aloha_e2e::leader_of(&masters, T);
    let api = masters[leader].api.clone();
    let id = create(
        &api,
        &schedule(
            "tick",
            &["true"],
            json!({"overlap": "allow", "misfire": "run_all", "misfire_grace": "1m"}),
        ),
    );
    wait_for("three runs", T, || {
        (runs(&api, &id).len() >= 3).then_some(())
    });
    masters[leader].proc.kill9();
    let other = &masters[1 - leader];
    wait_for("the standby to lead", T, || {
        (aloha_e2e::role_of(other).as_deref() == Some("ALIVE")).then_some(())
    });
    let api = other.api.clone();
    let before = runs(&api, &id).len();
    wait_for("runs on the new leader", T, || {
        (runs(&api, &id).len() >= before + 3).then_some(())
    });
    let all = runs(&api, &id);
    assert_every_second_once(&all);
    let s = api.get(&format!("/api/v1/schedules/{id}")).body;
    assert_eq!(s["counters"]["missed"], 0, "{s:#}");
    drop(masters);
    drop(etcd);
}
