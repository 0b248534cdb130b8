//! The schedule rules, on plain data with a hand-moved clock.

use super::schedules::RunOutcome;
use super::*;
use crate::schedules::{ScheduleRequest, ScheduleState};
use chrono::TimeZone;

/// 2026-12-03T10:00:00Z + `ms`.
fn at(ms: u64) -> Now {
    Now {
        wall: Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap()
            + chrono::Duration::milliseconds(ms as i64),
        mono_ms: ms,
    }
}

fn secs(s: u64) -> Now {
    at(s * 1000)
}

struct S {
    c: Cluster,
    fx: Effects,
}

fn request(extra: serde_json::Value) -> ScheduleRequest {
    let mut b = serde_json::json!({
        "name": "roll",
        "app": {"kind": "process", "spec": {"command": ["true"]}},
        "every": "1s",
        "overlap": "allow"
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v.clone();
        }
    }
    serde_json::from_value(b).unwrap()
}

impl S {
    fn new() -> S {
        let mut s = S {
            c: Cluster::new(Rules::default()),
            fx: Effects::default(),
        };
        let reg = Registration {
            id: WorkerId("w1".into()),
            address: "w1:1".into(),
            cores: 64,
            memory_mb: 1 << 20,
            kinds: vec!["process".into()],
            plugin_errors: vec![],
            apps: vec![],
            instance: None,
        };
        s.c.register(reg, at(0), &mut s.fx).unwrap();
        s
    }

    fn create(&mut self, extra: serde_json::Value, now: Now) -> ScheduleId {
        let r = self.c.create_schedule(request(extra), now, &mut self.fx);
        self.c.check_invariants().unwrap();
        r.unwrap().id.clone()
    }

    /// What the engine does in a batch at `now`: timers, run ends, placement.
    fn step(&mut self, now: Now) {
        self.c.fire_schedules(now, &mut self.fx);
        self.c.settle_schedules(now, &mut self.fx);
        self.c.place(now, &mut self.fx);
        self.c.check_invariants().unwrap();
    }

    fn sched(&self, id: &ScheduleId) -> Arc<Schedule> {
        self.c.schedule(id).unwrap().record.clone()
    }

    /// (nominal time offset in s from 10:00:00, state) of every run, oldest first.
    fn runs(&self, id: &ScheduleId) -> Vec<(i64, AppState)> {
        let base = at(0).wall;
        let mut v: Vec<(i64, AppState)> = self
            .c
            .runs_page(id, None, 10_000)
            .apps
            .iter()
            .map(|a| ((a.scheduled_at.unwrap() - base).num_seconds(), a.state))
            .collect();
        v.reverse();
        v
    }

    fn run_ids(&self, id: &ScheduleId) -> Vec<AppId> {
        let mut v: Vec<AppId> = self
            .c
            .runs_page(id, None, 10_000)
            .apps
            .iter()
            .map(|a| a.id.clone())
            .collect();
        v.reverse();
        v
    }

    /// Reports every launched run RUNNING, then `end` for those in `ending`.
    fn end_run(&mut self, app: &AppId, state: AppState, now: Now) {
        let a = match self.c.lookup(app) {
            Lookup::Found(a) => a,
            l => panic!("{app}: {l:?}"),
        };
        let w = WorkerId("w1".into());
        for st in [AppState::Running, state] {
            let r = WorkerReport {
                app: app.clone(),
                attempt: a.attempt,
                state: st,
                exit_code: Some(if st == AppState::Failed { 1 } else { 0 }),
                message: None,
                worker_shutdown: false,
                details: Default::default(),
            };
            assert_eq!(
                self.c.report(&w, &r, now, &mut self.fx),
                ReportOutcome::Done
            );
        }
    }
}

#[test]
fn an_every_second_schedule_fires_once_per_second_from_its_creation() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({}), secs(0));
    assert_eq!(
        s.runs(&id),
        [(0, AppState::Submitted)],
        "start_at = creation fires at once"
    );
    assert_eq!(s.c.next_schedule_timer(), Some(secs(1).wall));
    s.step(at(999));
    assert_eq!(s.runs(&id).len(), 1);
    for t in 1..=5 {
        s.step(secs(t));
    }
    let times: Vec<i64> = s.runs(&id).iter().map(|r| r.0).collect();
    assert_eq!(times, [0, 1, 2, 3, 4, 5]);
    let sch = s.sched(&id);
    assert_eq!(sch.counters.runs, 6);
    assert_eq!(sch.last_scheduled_at, Some(secs(5).wall));
    assert_eq!(sch.recent_runs.len(), 6);
    let names: Vec<String> =
        s.c.runs_page(&id, None, 1)
            .apps
            .iter()
            .map(|a| a.name.clone())
            .collect();
    assert_eq!(names, ["roll@2026-12-03T10:00:05Z"]);
    let fired =
        s.fx.events
            .iter()
            .filter(|e| e.type_name() == "schedule.fired")
            .count();
    assert_eq!(fired, 6);
    // Stepping again at the same instant fires nothing twice.
    s.step(secs(5));
    assert_eq!(s.runs(&id).len(), 6);
}

#[test]
fn a_cron_with_seconds_fires_every_second() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"every": null, "cron": "*/1 * * * * *"}),
        at(500),
    );
    assert!(s.runs(&id).is_empty(), "10:00:00 is before start_at");
    s.step(secs(1));
    s.step(secs(2));
    assert_eq!(s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn skip_creates_no_run_while_one_runs() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({"overlap": "skip"}), secs(0));
    s.step(secs(1));
    s.step(secs(2));
    assert_eq!(s.runs(&id).len(), 1);
    assert_eq!(s.sched(&id).counters.skipped, 2);
    let first = s.run_ids(&id)[0].clone();
    s.end_run(&first, AppState::Finished, secs(2));
    s.step(secs(3));
    assert_eq!(s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(), [0, 3]);
}

#[test]
fn queue_runs_one_after_another_in_nominal_order_up_to_max_queued() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"overlap": "queue", "max_queued": 2}),
        secs(0),
    );
    for t in 1..=4 {
        s.step(secs(t));
    }
    let sch = s.sched(&id);
    assert_eq!(s.runs(&id).len(), 1);
    assert_eq!(sch.pending.len(), 2);
    assert_eq!(
        sch.counters.skipped, 2,
        "the 3rd and 4th waiting were skipped"
    );
    let first = s.run_ids(&id)[0].clone();
    s.end_run(&first, AppState::Failed, secs(4));
    s.step(secs(4));
    assert_eq!(
        s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1],
        "a failed run does not block the next"
    );
    let second = s.run_ids(&id)[1].clone();
    s.end_run(&second, AppState::Finished, at(4_500));
    s.step(at(4_500));
    assert_eq!(
        s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(s.sched(&id).pending.is_empty());
}

#[test]
fn cancel_previous_kills_the_running_run_and_starts_after_it() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({"overlap": "cancel_previous"}), secs(0));
    s.step(secs(0));
    s.fx = Effects::default();
    s.step(secs(1));
    let first = s.run_ids(&id)[0].clone();
    let app = match s.c.lookup(&first) {
        Lookup::Found(a) => a,
        _ => panic!(),
    };
    assert!(app.kill_requested);
    assert!(app
        .kill_reason
        .as_deref()
        .unwrap()
        .contains("cancel_previous"));
    assert_eq!(
        s.runs(&id).len(),
        1,
        "the next starts once the previous ended"
    );
    s.end_run(&first, AppState::Killed, secs(1));
    s.step(secs(1));
    assert_eq!(
        s.runs(&id),
        [(0, AppState::Killed), (1, AppState::Launching)]
    );
}

#[test]
fn misfires_follow_the_policy_and_never_freeze() {
    let all: Vec<i64> = (0..=20).collect();
    for (policy, runs, missed) in [
        ("run_all", all, 0),
        ("run_latest", vec![0, 18, 19, 20], 17),
        ("skip", vec![0, 18, 19, 20], 17),
    ] {
        let mut s = S::new();
        let id = s.create(
            serde_json::json!({"misfire": policy, "misfire_grace": "2s"}),
            secs(0),
        );
        // The master was away from 0s to 20s: 1..=17 are more than 2s late, 18..=20 are not.
        s.step(secs(20));
        let times: Vec<i64> = s.runs(&id).iter().map(|r| r.0).collect();
        assert_eq!(times, runs, "{policy}");
        assert_eq!(s.sched(&id).counters.missed, missed, "{policy}");
        // And it goes on afterwards: no freeze however many were missed.
        s.step(secs(21));
        assert_eq!(s.runs(&id).last().unwrap().0, 21, "{policy}");
    }
}

#[test]
fn run_latest_runs_the_latest_missed_time_when_none_is_on_time() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"every": "10s", "misfire": "run_latest", "misfire_grace": "1s"}),
        secs(0),
    );
    s.step(secs(35));
    assert_eq!(s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(), [0, 30]);
    assert_eq!(s.sched(&id).counters.missed, 2);
    assert!(s
        .fx
        .events
        .iter()
        .any(|e| matches!(e, EventBody::ScheduleMissed { count: 2, .. })));
}

#[test]
fn a_start_in_the_past_creates_compensating_runs_then_goes_on_time() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"every": "1m", "start_at": "2026-12-03T09:55:00Z", "misfire": "skip"}),
        at(30_000),
    );
    // 09:55 .. 10:00 are compensating: no misfire policy applies to them.
    assert_eq!(
        s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(),
        [-300, -240, -180, -120, -60, 0]
    );
    s.step(secs(60));
    assert_eq!(s.runs(&id).len(), 7);
}

#[test]
fn a_queued_catch_up_runs_one_after_another_oldest_first() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"every": "1m", "start_at": "2026-12-03T09:57:00Z", "overlap": "queue"}),
        at(30_000),
    );
    assert_eq!(s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(), [-180]);
    assert_eq!(s.c.next_schedule_timer(), None, "the run's end wakes it");
    s.step(at(30_000));
    for (i, t) in [31, 32, 33].into_iter().enumerate() {
        let run = s.run_ids(&id)[i].clone();
        s.end_run(&run, AppState::Finished, secs(t));
        s.step(secs(t));
    }
    assert_eq!(
        s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(),
        [-180, -120, -60, 0]
    );
    assert_eq!(
        s.c.next_schedule_timer(),
        Some(secs(60).wall),
        "caught up: on time again"
    );
}

#[test]
fn an_end_time_ends_the_schedule_when_its_last_run_ended() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"end_at": "2026-12-03T10:00:02Z"}),
        secs(0),
    );
    s.step(secs(1));
    s.step(secs(2));
    s.step(secs(3));
    assert_eq!(s.runs(&id).len(), 2, "no nominal time at or after end_at");
    assert_eq!(
        s.sched(&id).state(),
        ScheduleState::Active,
        "a run still runs"
    );
    for run in s.run_ids(&id) {
        s.end_run(&run, AppState::Finished, secs(3));
    }
    s.step(secs(3));
    assert_eq!(s.sched(&id).state(), ScheduleState::Ended);
    assert_eq!(s.c.next_schedule_timer(), None);
    assert!(s
        .fx
        .events
        .iter()
        .any(|e| e.type_name() == "schedule.ended"));
}

#[test]
fn an_update_applies_to_the_next_run_only() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({}), secs(0));
    let patch: crate::schedules::SchedulePatch = serde_json::from_value(serde_json::json!({
        "app": {"kind": "process", "spec": {"command": ["echo", "v2"]}, "cores": 2}
    }))
    .unwrap();
    s.c.update_schedule(&id, patch, at(500), &mut s.fx).unwrap();
    s.step(secs(1));
    let apps = s.c.runs_page(&id, None, 10).apps;
    assert_eq!(apps.len(), 2);
    assert_eq!(
        (apps[0].cores, apps[1].cores),
        (2, 1),
        "the first run kept its template"
    );
    // A new rule applies from now: nothing between the last run and now fires late.
    let patch: crate::schedules::SchedulePatch =
        serde_json::from_value(serde_json::json!({"every": "10s"})).unwrap();
    s.c.update_schedule(&id, patch, secs(5), &mut s.fx).unwrap();
    s.step(secs(5));
    assert_eq!(s.runs(&id).len(), 2);
    assert_eq!(s.c.schedule(&id).unwrap().next_runs(1), [secs(10).wall]);
    let bad: crate::schedules::SchedulePatch =
        serde_json::from_value(serde_json::json!({"time_zone": "Mars/Olympus"})).unwrap();
    let e =
        s.c.update_schedule(&id, bad, secs(6), &mut s.fx)
            .unwrap_err();
    assert!(e.to_string().contains("time_zone"), "{e}");
}

#[test]
fn a_pause_skips_the_times_it_covers() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({}), secs(0));
    s.c.pause_schedule(&id, at(500), &mut s.fx).unwrap();
    assert_eq!(s.sched(&id).state(), ScheduleState::Paused);
    assert_eq!(s.c.next_schedule_timer(), None);
    s.step(secs(5));
    assert_eq!(s.runs(&id).len(), 1);
    s.c.resume_schedule(&id, at(5_500), &mut s.fx).unwrap();
    let sch = s.sched(&id);
    assert_eq!((sch.counters.skipped, sch.counters.missed), (5, 0));
    s.step(secs(6));
    assert_eq!(s.runs(&id).iter().map(|r| r.0).collect::<Vec<_>>(), [0, 6]);
}

#[test]
fn a_backfill_lists_or_creates_runs_once() {
    let mut s = S::new();
    let id = s.create(serde_json::json!({"every": "1h"}), secs(0));
    let (start, end) = (
        Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 2, 3, 0, 0).unwrap(),
    );
    let dry =
        s.c.backfill_schedule(&id, start, end, true, secs(1), &mut s.fx)
            .unwrap();
    assert!(dry.times.is_empty(), "before start_at: nothing");
    let id = s.create(
        serde_json::json!({"every": "1h", "start_at": "2026-12-01T00:00:00Z", "misfire": "skip", "overlap": "allow"}),
        secs(0),
    );
    let before = s.runs(&id).len();
    let dry =
        s.c.backfill_schedule(&id, start, end, true, secs(1), &mut s.fx)
            .unwrap();
    assert_eq!(dry.times.len(), 3);
    assert_eq!(s.runs(&id).len(), before, "a dry run creates nothing");
    let b =
        s.c.backfill_schedule(&id, start, end, false, secs(1), &mut s.fx)
            .unwrap();
    assert!(
        b.outcomes
            .iter()
            .all(|o| matches!(o, RunOutcome::Skipped(m) if m.contains("already has run"))),
        "the compensating runs covered them: {:?}",
        b.outcomes
    );
    assert_eq!(s.runs(&id).len(), before);
    s.c.check_invariants().unwrap();
}

#[test]
fn a_trigger_runs_now_under_the_overlap_policy() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"every": "1h", "overlap": "skip"}),
        secs(0),
    );
    let r = s.c.trigger_schedule(&id, None, secs(1), &mut s.fx).unwrap();
    assert!(matches!(r, RunOutcome::Skipped(_)), "{r:?}");
    let r =
        s.c.trigger_schedule(
            &id,
            Some(crate::schedules::Overlap::Allow),
            secs(1),
            &mut s.fx,
        )
        .unwrap();
    assert!(
        matches!(r, RunOutcome::Created(ref a) if a.scheduled_at == Some(secs(1).wall)),
        "{r:?}"
    );
    assert_eq!(s.runs(&id).len(), 2);
}

#[test]
fn a_recovered_schedule_continues_from_its_stored_position_without_doubles() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"misfire": "run_all", "misfire_grace": "1m"}),
        secs(0),
    );
    s.step(secs(1));
    s.step(secs(2));
    // What the store holds: every app and schedule record written so far.
    let apps: Vec<App> = s.c.apps.values().map(|a| (**a).clone()).collect();
    let workers: Vec<WorkerRecord> = s.c.workers().map(|w| (*w.record).clone()).collect();
    let scheds: Vec<Schedule> = vec![(*s.sched(&id)).clone()];
    let mut fx = Effects::default();
    let c = Cluster::recover(
        Rules::default(),
        workers,
        apps,
        s.c.last_seq(),
        secs(5),
        &mut fx,
    );
    let (mut c, errors) = c.with_schedules(scheds, 1);
    assert!(errors.is_empty());
    c.check_invariants().unwrap();
    c.fire_schedules(secs(5), &mut fx);
    let times: Vec<i64> = c
        .runs_page(&id, None, 100)
        .apps
        .iter()
        .rev()
        .map(|a| (a.scheduled_at.unwrap() - at(0).wall).num_seconds())
        .collect();
    assert_eq!(times, [0, 1, 2, 3, 4, 5], "none twice, none lost (run_all)");
    // Even a position that did not move (a torn write) makes no second run for a time.
    let mut stale = (*c.schedule(&id).unwrap().record).clone();
    stale.last_scheduled_at = Some(secs(1).wall);
    let mut c2 = c.clone();
    c2.mirror_schedule(stale);
    c2.fire_schedules(secs(5), &mut fx);
    assert_eq!(c2.runs_page(&id, None, 100).apps.len(), 6);
}

#[test]
fn bad_schedules_are_refused_with_a_clear_message() {
    let mut s = S::new();
    for (extra, needle) in [
        (
            serde_json::json!({"cron": "* * * * *"}),
            "exactly one of cron and every",
        ),
        (
            serde_json::json!({"every": null}),
            "exactly one of cron and every",
        ),
        (
            serde_json::json!({"every": null, "cron": "61 * * * *"}),
            "61 * * * *",
        ),
        (
            serde_json::json!({"time_zone": "Nowhere/City"}),
            "unknown time_zone",
        ),
        (
            serde_json::json!({"start_at": "2026-12-03T11:00:00Z", "end_at": "2026-12-03T10:00:00Z"}),
            "end_at",
        ),
        (serde_json::json!({"app": {"kind": "nope"}}), "unknown kind"),
        (
            serde_json::json!({"app": {"kind": "process", "cores": 0}}),
            "cores",
        ),
        (serde_json::json!({"name": " "}), "name"),
    ] {
        let e =
            s.c.create_schedule(request(extra.clone()), secs(0), &mut s.fx)
                .unwrap_err();
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
    assert_eq!(s.c.schedule_count(), 0);
}

#[test]
fn a_schedule_record_round_trips_through_json() {
    let mut s = S::new();
    let id = s.create(
        serde_json::json!({"overlap": "queue", "time_zone": "Europe/Berlin"}),
        secs(0),
    );
    s.step(secs(2));
    let rec = (*s.sched(&id)).clone();
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(json["overlap"], "queue");
    assert_eq!(json["every"], "1s");
    assert_eq!(json["app"]["kind"], "process");
    let back: Schedule = serde_json::from_value(json).unwrap();
    assert_eq!(back, rec);
}
