//! Every rule of the cluster, on plain data with a hand-moved clock.

use super::*;
use crate::schedule::{self, Capacity, Decision, PlacementPolicy};
use chrono::TimeZone;

fn at(ms: u64) -> Now {
    Now {
        wall: Utc.timestamp_opt(1_700_000_000, 0).unwrap()
            + chrono::Duration::milliseconds(ms as i64),
        mono_ms: ms,
    }
}

fn rules() -> Rules {
    Rules {
        worker_timeout_ms: 10_000,
        ..Rules::default()
    }
}

fn req(cores: i64, memory_mb: i64) -> SubmitRequest {
    serde_json::from_value(serde_json::json!({
        "name": "t", "kind": "process", "spec": {"command": ["true"]},
        "cores": cores, "memory_mb": memory_mb, "max_retries": 1
    }))
    .unwrap()
}

fn reg(id: &str, cores: u32, apps: Vec<WorkerReport>) -> Registration {
    Registration {
        id: WorkerId(id.into()),
        address: format!("{id}:1"),
        cores,
        memory_mb: 4096,
        kinds: vec!["process".into()],
        plugin_errors: vec![],
        apps,
        instance: None,
    }
}

fn rep(app: &AppId, attempt: u32, state: AppState) -> WorkerReport {
    WorkerReport {
        app: app.clone(),
        attempt,
        state,
        exit_code: None,
        message: None,
        worker_shutdown: false,
        details: BTreeMap::new(),
    }
}

fn w(s: &str) -> WorkerId {
    WorkerId(s.into())
}

struct T {
    c: Cluster,
    fx: Effects,
}

impl T {
    fn new() -> T {
        T {
            c: Cluster::new(rules()),
            fx: Effects::default(),
        }
    }

    fn take(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    fn submit(&mut self, cores: i64, mem: i64, t: u64) -> AppId {
        let s = self
            .c
            .submit(req(cores, mem), None, at(t), &mut self.fx)
            .unwrap();
        assert!(s.created);
        s.app.id.clone()
    }

    fn register(&mut self, id: &str, cores: u32, t: u64) -> Vec<(AppId, u32)> {
        self.c
            .register(reg(id, cores, vec![]), at(t), &mut self.fx)
            .unwrap()
    }

    fn app(&self, id: &AppId) -> Arc<App> {
        match self.c.lookup(id) {
            Lookup::Found(a) => a,
            other => panic!("{id}: {other:?}"),
        }
    }

    fn place(&mut self, t: u64) -> usize {
        let n = self.c.place(at(t), &mut self.fx);
        self.c.check_invariants().unwrap();
        n
    }

    fn report(
        &mut self,
        worker: &str,
        id: &AppId,
        attempt: u32,
        state: AppState,
        t: u64,
    ) -> ReportOutcome {
        self.c
            .report(&w(worker), &rep(id, attempt, state), at(t), &mut self.fx)
    }

    fn running(&mut self, worker: &str, t: u64) -> AppId {
        let id = self.submit(1, 0, t);
        assert_eq!(self.place(t), 1);
        assert_eq!(self.app(&id).worker_id, Some(w(worker)));
        assert_eq!(
            self.report(worker, &id, 1, AppState::Running, t),
            ReportOutcome::Done
        );
        id
    }
}

fn launches(fx: &Effects) -> Vec<(String, String, u32)> {
    fx.commands
        .iter()
        .filter_map(|c| match c {
            Command::Launch { worker, app, .. } => {
                Some((app.id.0.clone(), worker.0.clone(), app.attempt))
            }
            Command::Kill { .. } => None,
        })
        .collect()
}

fn kills(fx: &Effects) -> Vec<(String, u32)> {
    fx.commands
        .iter()
        .filter_map(|c| match c {
            Command::Kill { app, attempt, .. } => Some((app.0.clone(), *attempt)),
            Command::Launch { .. } => None,
        })
        .collect()
}

#[test]
fn submit_writes_the_app_the_sequence_and_an_event() {
    let mut t = T::new();
    let id = t.submit(1, 0, 0);
    let fx = t.take();
    assert_eq!(fx.last_seq, Some(1));
    assert!(matches!(fx.apps.get(&1), Some(AppWrite::Put(a)) if a.id == id));
    assert!(matches!(
        &fx.events[..],
        [EventBody::AppStateChanged {
            new_state: AppState::Submitted,
            old_state: None,
            ..
        }]
    ));
    assert!(fx.commands.is_empty(), "no worker: nothing placed");
    assert_eq!(t.c.queued(), 1);
    let err = t.c.submit(
        serde_json::from_value(serde_json::json!({"name": "x", "kind": "flonk"})).unwrap(),
        None,
        at(0),
        &mut t.fx,
    );
    assert!(matches!(
        err,
        Err(OpError::Submit(SubmitError::UnknownKind { .. }))
    ));
    assert!(t.fx.writes_nothing(), "a refused submission writes nothing");
    assert_eq!(t.c.last_seq(), 1);
}

#[test]
fn idempotent_repeats_return_the_first_app_and_other_bodies_conflict() {
    let mut t = T::new();
    let key = Some("k-1".to_string());
    let first =
        t.c.submit(req(1, 0), key.clone(), at(0), &mut t.fx)
            .unwrap();
    t.take();
    let again =
        t.c.submit(req(1, 0), key.clone(), at(5), &mut t.fx)
            .unwrap();
    assert!(!again.created);
    assert_eq!(again.app.id, first.app.id);
    assert!(t.fx.writes_nothing(), "a repeat writes nothing");
    let other = t.c.submit(req(2, 0), key.clone(), at(5), &mut t.fx);
    assert!(matches!(other, Err(OpError::Conflict(m)) if m.contains("k-1")));
    for bad in ["", "has space", &"x".repeat(256)] {
        assert!(matches!(
            t.c.submit(req(1, 0), Some(bad.to_string()), at(5), &mut t.fx),
            Err(OpError::BadRequest(_))
        ));
    }
    assert_eq!(t.c.last_seq(), 1);
}

#[test]
fn placement_launches_on_the_worker_and_reports_run_it_to_the_end() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    t.take();
    let id = t.submit(1, 0, 1);
    assert_eq!(t.place(1), 1);
    let fx = t.take();
    assert_eq!(launches(&fx), [(id.0.clone(), "w1".into(), 1)]);
    assert_eq!(t.app(&id).state, AppState::Launching);
    assert_eq!(t.c.worker(&w("w1")).unwrap().used_cores, 1);
    assert_eq!(
        t.report("w1", &id, 1, AppState::Running, 2),
        ReportOutcome::Done
    );
    assert_eq!(
        t.report("w1", &id, 1, AppState::Running, 2),
        ReportOutcome::Done,
        "repeat"
    );
    let mut fin = rep(&id, 1, AppState::Finished);
    fin.exit_code = Some(0);
    fin.details.insert("pid".into(), "7".into());
    assert_eq!(
        t.c.report(&w("w1"), &fin, at(3), &mut t.fx),
        ReportOutcome::Done
    );
    let app = t.app(&id);
    assert_eq!((app.state, app.exit_code), (AppState::Finished, Some(0)));
    assert_eq!(app.details["pid"], "7");
    assert_eq!(
        t.c.worker(&w("w1")).unwrap().used_cores,
        0,
        "resources freed"
    );
    t.c.check_invariants().unwrap();
}

#[test]
fn stale_illegal_and_unregistered_reports_change_nothing() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let id = t.running("w1", 1);
    let before = t.app(&id);
    assert!(matches!(
        t.report("w1", &id, 9, AppState::Running, 2),
        ReportOutcome::Kill(_)
    ));
    assert!(matches!(
        t.report("w2", &id, 1, AppState::Finished, 2),
        ReportOutcome::NotRegistered(_)
    ));
    assert!(
        matches!(t.report("w1", &id, 1, AppState::Submitted, 2), ReportOutcome::Refused(m) if m.contains("illegal"))
    );
    let stranger = AppId("app-20231114221320-0099".into());
    assert!(matches!(
        t.report("w1", &stranger, 1, AppState::Running, 2),
        ReportOutcome::Kill(_)
    ));
    assert_eq!(
        t.report("w1", &stranger, 1, AppState::Finished, 2),
        ReportOutcome::Done
    );
    assert_eq!(t.app(&id), before);
}

#[test]
fn fifo_without_head_of_line_blocking_and_reasons_computed_on_read() {
    let mut t = T::new();
    let big = t.submit(3, 0, 0);
    let small = t.submit(1, 0, 1);
    assert_eq!(
        t.c.wait_reason(&t.app(&big)),
        "waiting for an ALIVE worker (needs 3 cores and 0 MiB)"
    );
    t.register("w", 2, 2);
    assert_eq!(t.place(2), 1);
    assert_eq!(t.app(&small).state, AppState::Launching);
    assert_eq!(t.app(&big).state, AppState::Submitted);
    assert_eq!(
        t.c.wait_reason(&t.app(&big)),
        "cannot be placed: needs 3 cores and 0 MiB but the largest ALIVE worker has 2 cores and 4096 MiB"
    );
    let mid = t.submit(2, 0, 3);
    assert_eq!(t.place(3), 0);
    assert_eq!(
        t.c.wait_reason(&t.app(&mid)),
        "waiting for resources: needs 2 cores and 0 MiB free on one worker"
    );
    // The stored record carries no wait message: nothing is written per round.
    assert_eq!(t.app(&mid).message, None);
}

#[test]
fn spreads_to_the_most_free_cores_like_the_reference_policy() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    t.register("w2", 3, 0);
    let ids: Vec<AppId> = (0..3).map(|i| t.submit(1, 0, i)).collect();
    t.take();
    assert_eq!(t.place(5), 3);
    let placed: Vec<String> = launches(&t.take()).into_iter().map(|l| l.1).collect();
    assert_eq!(placed, ["w2", "w1", "w2"]);
    assert_eq!(t.app(&ids[1]).worker_id, Some(w("w1")));
}

#[test]
fn a_silent_worker_dies_its_apps_move_and_it_is_forgotten_later() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let id = t.running("w1", 1);
    t.register("w2", 2, 2);
    t.take();
    t.c.expire_workers(&[(w("w1"), 10_050)], at(11_000), &mut t.fx);
    let fx = t.take();
    assert!(fx.liveness.contains(&LiveChange::Forget(w("w1"))));
    assert!(fx
        .events
        .iter()
        .any(|e| matches!(e, EventBody::WorkerLost { .. })));
    let app = t.app(&id);
    assert_eq!(app.state, AppState::Relaunching);
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .starts_with("worker w1 lost: no heartbeat for 10s"));
    assert_eq!(
        t.c.worker(&w("w1")).unwrap().record.state,
        WorkerState::Dead
    );
    assert_eq!(t.place(11_000), 1);
    let app = t.app(&id);
    assert_eq!((app.attempt, app.worker_id.clone()), (2, Some(w("w2"))));
    // Forgotten an hour later (the default), not before.
    t.c.expire(at(11_000 + 3_500_000), &mut t.fx);
    assert!(t.c.worker(&w("w1")).is_some());
    t.take();
    t.c.expire(at(11_000 + 3_700_000), &mut t.fx);
    assert!(t.c.worker(&w("w1")).is_none());
    let fx = t.take();
    assert_eq!(
        fx.workers.get(&w("w1")),
        Some(&None),
        "the record is deleted"
    );
    assert!(
        t.c.known_kinds().contains(&"process".to_string()),
        "w2 still provides it"
    );
}

#[test]
fn recovery_marks_apps_unknown_and_loses_those_nobody_reports() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let kept = t.running("w1", 1);
    let lost = t.running("w1", 2);
    let waiting = t.submit(9, 0, 3);
    let apps: Vec<App> = [&kept, &lost, &waiting]
        .iter()
        .map(|i| (*t.app(i)).clone())
        .collect();
    let workers: Vec<WorkerRecord> = t.c.workers().map(|w| (*w.record).clone()).collect();
    let mut fx = Effects::default();
    let mut c = Cluster::recover(rules(), workers, apps, 3, at(100_000), &mut fx);
    c.check_invariants().unwrap();
    assert!(fx.liveness.contains(&LiveChange::Watch(w("w1"))));
    let state = |c: &Cluster, id: &AppId| match c.lookup(id) {
        Lookup::Found(a) => a.state,
        o => panic!("{o:?}"),
    };
    assert_eq!(state(&c, &kept), AppState::Unknown);
    assert_eq!(state(&c, &waiting), AppState::Submitted);
    assert_eq!(
        c.worker(&w("w1")).unwrap().record.state,
        WorkerState::Unknown
    );
    // w1 comes back with only `kept`, still running.
    let kill = c
        .register(
            reg("w1", 4, vec![rep(&kept, 1, AppState::Running)]),
            at(101_000),
            &mut fx,
        )
        .unwrap();
    assert!(kill.is_empty());
    assert_eq!(state(&c, &kept), AppState::Running);
    assert_eq!(
        state(&c, &lost),
        AppState::Relaunching,
        "w1 no longer has it"
    );
    // The deadline passes: nothing else is UNKNOWN.
    c.check_recovery(at(110_001), &mut fx);
    assert_eq!(c.recovery_deadline_ms(), None);
    c.check_invariants().unwrap();
    assert_eq!(c.last_seq(), 3, "the sequence continues");
}

#[test]
fn the_recovery_deadline_loses_apps_whose_worker_never_came_back() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let id = t.running("w1", 1);
    let apps = vec![(*t.app(&id)).clone()];
    let workers: Vec<WorkerRecord> = t.c.workers().map(|w| (*w.record).clone()).collect();
    let mut fx = Effects::default();
    let mut c = Cluster::recover(rules(), workers, apps, 1, at(0), &mut fx);
    c.check_recovery(at(10_000), &mut fx);
    assert!(
        matches!(c.lookup(&id), Lookup::Found(a) if a.state == AppState::Unknown),
        "not yet"
    );
    // Worker expiry and the deadline in the same tick: lost once, one retry spent.
    c.expire_workers(&[(w("w1"), 10_001)], at(10_001), &mut fx);
    c.check_recovery(at(10_001), &mut fx);
    let Lookup::Found(app) = c.lookup(&id) else {
        panic!()
    };
    assert_eq!((app.state, app.retries), (AppState::Relaunching, 1));
}

#[test]
fn reconciliation_kills_strangers_and_requeues_launches_that_never_arrived() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let running = t.running("w1", 1);
    let launching = t.submit(1, 0, 2);
    assert_eq!(t.place(2), 1);
    let stranger = AppId("app-20231114221320-0042".into());
    let kill =
        t.c.register(
            reg("w1", 2, vec![rep(&stranger, 1, AppState::Running)]),
            at(3),
            &mut t.fx,
        )
        .unwrap();
    assert_eq!(kill, [(stranger, 1)]);
    let r = t.app(&running);
    assert_eq!(r.state, AppState::Relaunching);
    assert!(r
        .message
        .as_deref()
        .unwrap()
        .contains("re-registered without attempt 1"));
    let l = t.app(&launching);
    assert_eq!(
        (l.state, l.retries),
        (AppState::Relaunching, 0),
        "no retry for a launch never received"
    );
    t.c.check_invariants().unwrap();
}

#[test]
fn kills_end_waiting_apps_at_once_and_others_through_the_worker() {
    let mut t = T::new();
    let waiting = t.submit(1, 0, 0);
    let killed = t.c.kill(&waiting, None, at(1), &mut t.fx).unwrap();
    assert_eq!(killed.state, AppState::Killed);
    assert!(
        matches!(t.c.kill(&waiting, None, at(1), &mut t.fx), Err(OpError::Conflict(m)) if m.contains("already ended KILLED"))
    );
    assert!(matches!(
        t.c.kill(&AppId("app-x".into()), None, at(1), &mut t.fx),
        Err(OpError::NotFound(_))
    ));
    t.register("w1", 2, 2);
    let id = t.running("w1", 3);
    t.take();
    let app =
        t.c.kill(&id, Some("enough".into()), at(4), &mut t.fx)
            .unwrap();
    assert_eq!((app.state, app.kill_requested), (AppState::Running, true));
    assert_eq!(kills(&t.take()), [(id.0.clone(), 1)]);
    // Not confirmed: sent again after the resend interval, not before.
    t.c.resend_kills(at(3_000), &mut t.fx);
    assert!(kills(&t.take()).is_empty());
    t.c.resend_kills(at(5_004), &mut t.fx);
    assert_eq!(kills(&t.take()), [(id.0.clone(), 1)]);
    // The worker dies first: KILLED, not relaunched.
    t.c.expire_workers(&[(w("w1"), 10_001)], at(20_000), &mut t.fx);
    assert_eq!(t.app(&id).state, AppState::Killed);
    t.c.resend_kills(at(40_000), &mut t.fx);
    assert!(kills(&t.take()).is_empty(), "nothing pending any more");
}

#[test]
fn a_failed_launch_requeues_without_a_retry_and_avoids_the_worker_until_heard() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let id = t.submit(1, 0, 1);
    assert_eq!(t.place(1), 1);
    t.take();
    t.c.launch_failed(&w("w1"), &id, 1, "connection refused", at(2), &mut t.fx);
    let fx = t.take();
    assert!(fx.liveness.contains(&LiveChange::Suspect(w("w1"))));
    let app = t.app(&id);
    assert_eq!((app.state, app.retries), (AppState::Relaunching, 0));
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("connection refused"));
    assert_eq!(t.place(3), 0, "w1 is suspect");
    t.c.worker_heard(&w("w1"));
    assert_eq!(t.place(4), 1);
    assert_eq!(t.app(&id).attempt, 2);
}

#[test]
fn a_missed_kill_loses_the_attempt_and_a_shutdown_drains_the_worker() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let id = t.running("w1", 1);
    t.c.kill_missed(&w("w1"), &id, 1, "no such attempt", at(2), &mut t.fx);
    assert_eq!(t.app(&id).state, AppState::Relaunching);
    assert_eq!(t.place(3), 1);
    let mut down = rep(&id, 2, AppState::Killed);
    down.worker_shutdown = true;
    t.report("w1", &id, 2, AppState::Running, 4);
    assert_eq!(
        t.c.report(&w("w1"), &down, at(5), &mut t.fx),
        ReportOutcome::Done
    );
    let app = t.app(&id);
    assert_eq!(app.state, AppState::Failed, "retries used up");
    let again = t.submit(1, 0, 6);
    assert_eq!(t.place(6), 0, "a draining worker gets nothing");
    t.register("w1", 2, 7);
    assert_eq!(t.place(7), 1, "until it registers again");
    assert_eq!(t.app(&again).state, AppState::Launching);
}

#[test]
fn retention_removes_the_oldest_terminal_apps_by_count_and_age() {
    let mut t = T::new();
    t.c = Cluster::new(Rules {
        retain_finished: 2,
        retain_finished_for: chrono::Duration::seconds(100),
        ..rules()
    });
    let ids: Vec<AppId> = (0..4).map(|i| t.submit(1, 0, i)).collect();
    for (i, id) in ids.iter().enumerate() {
        t.c.kill(id, None, at(1_000 * (i as u64 + 1)), &mut t.fx)
            .unwrap();
    }
    let live = t.submit(1, 0, 5_000);
    t.take();
    assert!(t.c.expiry_due(at(5_000)));
    assert_eq!(t.c.expire(at(5_000), &mut t.fx), 2);
    let fx = t.take();
    assert!(matches!(fx.apps.get(&1), Some(AppWrite::Delete(a)) if *a == ids[0]));
    assert!(fx.events.iter().any(|e| e.type_name() == "app.expired"));
    assert_eq!(t.c.lookup(&ids[0]), Lookup::Expired);
    assert!(matches!(t.c.lookup(&ids[2]), Lookup::Found(_)));
    assert!(matches!(
        t.c.kill(&ids[1], None, at(5_000), &mut t.fx),
        Err(OpError::Expired(_))
    ));
    assert_eq!(
        t.c.lookup(&AppId("app-20231114221320-0999".into())),
        Lookup::NotFound
    );
    assert!(!t.c.expiry_due(at(5_000)));
    // By age: 100 s after they ended.
    assert_eq!(t.c.expire(at(103_500), &mut t.fx), 1);
    assert_eq!(t.c.expire(at(104_500), &mut t.fx), 1);
    assert!(
        matches!(t.c.lookup(&live), Lookup::Found(_)),
        "waiting apps are never expired"
    );
    t.c.check_invariants().unwrap();
}

#[test]
fn the_retention_keeps_up_when_one_batch_ends_many_apps() {
    let mut t = T::new();
    t.c = Cluster::new(Rules {
        retain_finished: 10,
        expire_batch: 4,
        ..rules()
    });
    // 50 apps end at once (one batch), 40 over the count: one call removes them all, not 4.
    let ids: Vec<AppId> = (0..50).map(|i| t.submit(1, 0, i)).collect();
    for id in &ids {
        t.c.kill(id, None, at(1_000), &mut t.fx).unwrap();
    }
    t.take();
    assert_eq!(t.c.expire(at(2_000), &mut t.fx), 40);
    assert!(!t.c.expiry_due(at(2_000)));
    // A pile-up beyond EXPIRE_CATCH_UP shares goes down by that much per call.
    let more: Vec<AppId> = (0..100).map(|i| t.submit(1, 0, 3_000 + i)).collect();
    for id in &more {
        t.c.kill(id, None, at(4_000), &mut t.fx).unwrap();
    }
    t.take();
    let cap = crate::cluster::EXPIRE_CATCH_UP * 4;
    assert_eq!(t.c.expire(at(5_000), &mut t.fx), cap);
    assert_eq!(t.c.expire(at(5_000), &mut t.fx), 100 - cap);
    assert!(!t.c.expiry_due(at(5_000)));
    t.c.check_invariants().unwrap();
}

#[test]
fn expired_apps_free_their_idempotency_key() {
    let mut t = T::new();
    t.c = Cluster::new(Rules {
        retain_finished: 0,
        ..rules()
    });
    let first =
        t.c.submit(req(1, 0), Some("k".into()), at(0), &mut t.fx)
            .unwrap();
    t.c.kill(&first.app.id, None, at(1), &mut t.fx).unwrap();
    t.c.expire(at(2), &mut t.fx);
    let second =
        t.c.submit(req(1, 0), Some("k".into()), at(3), &mut t.fx)
            .unwrap();
    assert!(second.created);
    assert_ne!(second.app.id, first.app.id);
}

#[test]
fn pages_go_newest_first_with_a_cursor() {
    let mut t = T::new();
    let ids: Vec<AppId> = (0..5).map(|i| t.submit(1, 0, i)).collect();
    t.c.kill(&ids[1], None, at(9), &mut t.fx).unwrap();
    let page = t.c.page(None, None, 2);
    assert_eq!(page.apps.iter().map(|a| a.seq).collect::<Vec<_>>(), [5, 4]);
    assert_eq!(page.next.as_ref(), Some(&ids[3]));
    let page = t.c.page(None, page.next.and_then(|n| n.seq()), 2);
    assert_eq!(page.apps.iter().map(|a| a.seq).collect::<Vec<_>>(), [3, 2]);
    let page = t.c.page(None, page.next.and_then(|n| n.seq()), 2);
    assert_eq!(page.apps.iter().map(|a| a.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(page.next, None);
    let submitted = t.c.page(Some(AppState::Submitted), None, 10);
    assert_eq!(
        submitted.apps.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [5, 4, 3, 1]
    );
    let exact = t.c.page(Some(AppState::Killed), None, 1);
    assert_eq!(
        (exact.apps.len(), exact.next),
        (1, None),
        "no next page when nothing is left"
    );
}

#[test]
fn a_filtered_page_looks_at_a_bounded_number_of_apps_and_goes_on_from_there() {
    use crate::cluster::PAGE_SCAN_LIMIT;
    let mut t = T::new();
    let n = PAGE_SCAN_LIMIT as u64 + 5;
    let ids: Vec<AppId> = (0..n).map(|i| t.submit(1, 0, i)).collect();
    let oldest = ids[0].clone();
    let only_the_oldest = |a: &App| a.id == oldest;
    // The first page looks at PAGE_SCAN_LIMIT apps, finds none, and says where it stopped.
    let page = t.c.page_where(None, None, 10, only_the_oldest);
    assert!(page.apps.is_empty());
    assert_eq!(page.next.as_ref(), Some(&ids[5]));
    // The next page goes on below it and finds the app; nothing is left after it.
    let page =
        t.c.page_where(None, page.next.and_then(|n| n.seq()), 10, only_the_oldest);
    assert_eq!(
        page.apps.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        [oldest]
    );
    assert_eq!(page.next, None);
    // A filter that matches often fills the page long before the bound.
    let page = t.c.page_where(None, None, 3, |a| a.seq % 2 == 0);
    assert_eq!(page.apps.len(), 3);
    assert_eq!(page.next, Some(page.apps[2].id.clone()));
}

/// A small deterministic generator (xorshift), so the randomized checks need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn incremental_placement_decides_exactly_as_the_reference_policy() {
    for policy in [PlacementPolicy::Spread, PlacementPolicy::Binpack] {
        placement_matches_the_reference(policy);
    }
}

fn placement_matches_the_reference(policy: PlacementPolicy) {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut t = T::new();
        t.c = Cluster::new(Rules {
            placement: policy,
            ..rules()
        });
        let nworkers = 1 + rng.below(6);
        for i in 0..nworkers {
            let mut r = reg(&format!("w{i}"), 1 + rng.below(8) as u32, vec![]);
            r.memory_mb = 512 * (1 + rng.below(4));
            if rng.below(4) == 0 {
                r.kinds.push("spark".into());
            }
            t.c.register(r, at(0), &mut t.fx).unwrap();
        }
        for round in 0..6u64 {
            for _ in 0..rng.below(15) {
                let mut r = req(1 + rng.below(4) as i64, 256 * rng.below(5) as i64);
                if rng.below(5) == 0 {
                    r.kind = "spark".into();
                }
                let _ = t.c.submit(r, None, at(round), &mut t.fx);
            }
            // The reference decides on the same state.
            let waiting: Vec<App> =
                t.c.apps
                    .values()
                    .filter(|a| a.state.is_waiting())
                    .map(|a| (**a).clone())
                    .collect();
            let refs: Vec<&App> = waiting.iter().collect();
            let caps: Vec<Capacity> =
                t.c.workers()
                    .filter(|w| w.placeable())
                    .map(|w| Capacity {
                        id: w.record.id.clone(),
                        cores: w.record.cores,
                        memory_mb: w.record.memory_mb,
                        free_cores: w.free().0,
                        free_memory_mb: w.free().1,
                        kinds: w.record.kinds.clone(),
                    })
                    .collect();
            let expected: Vec<(String, String)> = schedule::place(&refs, &caps, policy)
                .into_iter()
                .filter_map(|d| match d {
                    Decision::Place { app, worker } => Some((app.0, worker.0)),
                    Decision::Wait { .. } => None,
                })
                .collect();
            t.take();
            t.place(round);
            let got: Vec<(String, String)> = launches(&t.take())
                .into_iter()
                .map(|(a, w, _)| (a, w))
                .collect();
            assert_eq!(got, expected, "{policy}: seed {seed} round {round}");
            // Some apps end, freeing capacity for the next round.
            let running: Vec<Arc<App>> =
                t.c.apps
                    .values()
                    .filter(|a| a.state == AppState::Launching)
                    .cloned()
                    .collect();
            for a in running {
                if rng.below(2) == 0 {
                    let wid = a.worker_id.clone().unwrap();
                    t.c.report(
                        &wid,
                        &rep(&a.id, a.attempt, AppState::Finished),
                        at(round),
                        &mut t.fx,
                    );
                }
            }
            t.c.check_invariants().unwrap();
        }
    }
}

#[test]
fn ten_thousand_waiting_apps_of_mixed_shapes_keep_fifo_per_shape_and_never_starve() {
    for policy in [PlacementPolicy::Spread, PlacementPolicy::Binpack] {
        mixed_shapes_keep_fifo_and_never_starve(policy);
    }
}

fn mixed_shapes_keep_fifo_and_never_starve(policy: PlacementPolicy) {
    let mut t = T::new();
    t.c = Cluster::new(Rules {
        placement: policy,
        ..rules()
    });
    let mut rng = Rng(7);
    let shapes = [(1, 0), (2, 512), (4, 1024), (1, 2048), (3, 0), (8, 0)];
    let mut by_shape: BTreeMap<(i64, i64), Vec<u64>> = BTreeMap::new();
    for i in 0..10_000u64 {
        let (c, m) = shapes[rng.below(shapes.len() as u64) as usize];
        let id = t.submit(c, m, i);
        by_shape.entry((c, m)).or_default().push(id.seq().unwrap());
    }
    t.register("w1", 8, 0);
    t.register("w2", 4, 0);
    let mut order: BTreeMap<(i64, i64), Vec<u64>> = BTreeMap::new();
    let mut now = 10_000;
    let mut rounds = 0;
    while t.c.queued() > 0 {
        rounds += 1;
        assert!(
            rounds < 20_000,
            "{policy}: starvation: {} still queued",
            t.c.queued()
        );
        t.take();
        t.c.place(at(now), &mut t.fx);
        let placed = launches(&t.take());
        assert!(
            !placed.is_empty(),
            "{policy}: a placeable app was left waiting"
        );
        for (id, wid, attempt) in placed {
            let app = t.app(&AppId(id.clone()));
            order
                .entry((app.cores as i64, app.memory_mb as i64))
                .or_default()
                .push(app.seq);
            // Every app runs to the end at once, freeing its worker.
            t.c.report(
                &w(&wid),
                &rep(&app.id, attempt, AppState::Finished),
                at(now),
                &mut t.fx,
            );
        }
        now += 1;
    }
    assert_eq!(
        order, by_shape,
        "{policy}: each shape is placed in submission order"
    );
    t.c.check_invariants().unwrap();
}

#[test]
fn a_clone_is_an_independent_snapshot() {
    let mut t = T::new();
    let id = t.submit(1, 0, 0);
    let snapshot = t.c.clone();
    t.c.kill(&id, None, at(1), &mut t.fx).unwrap();
    assert!(matches!(snapshot.lookup(&id), Lookup::Found(a) if a.state == AppState::Submitted));
    assert_eq!(snapshot.queued(), 1);
    assert_eq!(t.c.queued(), 0);
}

#[test]
fn a_mirror_follows_the_leaders_records_and_matches_it() {
    let mut t = T::new();
    t.register("w1", 2, 0);
    let running = t.running("w1", 1);
    let waiting = t.submit(4, 0, 2);
    let fx = t.take();
    // A replica built from the records written so far...
    let mut m = Cluster::mirror(rules(), Vec::new(), Vec::new(), 0);
    let apply = |m: &mut Cluster, fx: &Effects| {
        for (id, w) in &fx.workers {
            match w {
                Some(r) => m.mirror_worker((**r).clone()),
                None => m.mirror_worker_deleted(id),
            }
        }
        for w in fx.apps.values() {
            match w {
                AppWrite::Put(a) => m.mirror_app((**a).clone()),
                AppWrite::Delete(id) => m.mirror_app_deleted(id),
            }
        }
        if let Some(s) = fx.last_seq {
            m.mirror_last_seq(s);
        }
    };
    apply(&mut m, &fx);
    m.check_invariants().unwrap();
    assert_eq!(m.lookup(&running), t.c.lookup(&running));
    assert_eq!(m.queued(), 1);
    assert_eq!(
        m.wait_reason(&t.app(&waiting)),
        t.c.wait_reason(&t.app(&waiting))
    );
    assert_eq!(m.worker(&w("w1")).unwrap().used_cores, 1);
    // ...keeps following: an app ends, another expires, a worker dies.
    t.c.kill(&waiting, None, at(3), &mut t.fx).unwrap();
    t.report("w1", &running, 1, AppState::Finished, 4);
    t.c.expire_workers(&[(w("w1"), 10_001)], at(20_000), &mut t.fx);
    let fx = t.take();
    apply(&mut m, &fx);
    m.check_invariants().unwrap();
    assert_eq!(m.count(AppState::Finished), 1);
    assert_eq!(m.count(AppState::Killed), 1);
    assert_eq!(m.worker(&w("w1")).unwrap().record.state, WorkerState::Dead);
    assert_eq!(m.last_seq(), t.c.last_seq());
    assert_eq!(m.page(None, None, 10), t.c.page(None, None, 10));
}

// ----------------------------------------------------------------------------------------
// Max runtime, restart policies, retry, dry run, on-demand apps

impl T {
    fn submit_json(&mut self, body: serde_json::Value, t: u64) -> AppId {
        let r: SubmitRequest = serde_json::from_value(body).unwrap();
        let s = self.c.submit(r, None, at(t), &mut self.fx).unwrap();
        s.app.id.clone()
    }

    fn tick(&mut self, t: u64) -> usize {
        let n = self.c.fire_timers(at(t), &mut self.fx);
        self.c.check_invariants().unwrap();
        n
    }

    fn end(&mut self, worker: &str, id: &AppId, attempt: u32, state: AppState, code: i32, t: u64) {
        let mut r = rep(id, attempt, state);
        r.exit_code = Some(code);
        r.message = Some(format!("exited with code {code}"));
        assert_eq!(
            self.c.report(&w(worker), &r, at(t), &mut self.fx),
            ReportOutcome::Done
        );
        self.c.check_invariants().unwrap();
    }
}

fn body(extra: serde_json::Value) -> serde_json::Value {
    let mut b = serde_json::json!({"name": "t", "kind": "process", "spec": {"command": ["x"]}});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn ms_after(t: u64, app: &App) -> Option<u64> {
    app.relaunch_at
        .map(|r| (r - at(t).wall).num_milliseconds() as u64)
}

#[test]
fn an_attempt_past_its_max_runtime_is_killed_and_fails() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let id = t.submit_json(body(serde_json::json!({"max_runtime": "30s"})), 0);
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 1_000);
    assert_eq!(t.c.next_timer(), Some(at(31_000).wall));
    t.take();
    assert_eq!(t.tick(30_999), 0, "not before its time");
    assert_eq!(t.tick(31_000), 1);
    let fx = t.take();
    assert_eq!(kills(&fx), vec![(id.0.clone(), 1)]);
    match &fx.commands[0] {
        Command::Kill { reason, .. } => assert_eq!(reason, "max runtime 30s exceeded"),
        c => panic!("{c:?}"),
    }
    assert_eq!(t.c.next_timer(), None, "fires once");
    // Not confirmed: sent again like any kill.
    t.c.resend_kills(at(40_000), &mut t.fx);
    assert_eq!(kills(&t.take()).len(), 1);
    // The plugin reports the kill; the app failed.
    t.report("w1", &id, 1, AppState::Killed, 41_000);
    let app = t.app(&id);
    assert_eq!(app.state, AppState::Failed);
    assert!(
        app.message.as_deref().unwrap().contains("max runtime"),
        "{app:?}"
    );
    t.c.check_invariants().unwrap();
}

#[test]
fn on_failure_relaunches_with_doubling_backoff_until_retries_run_out() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let id = t.submit_json(
        body(
            serde_json::json!({"restart": "on_failure", "max_retries": 2,
                                "retry_backoff": "1s", "max_backoff": "1m"}),
        ),
        0,
    );
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 0);
    t.end("w1", &id, 1, AppState::Failed, 1, 100);
    let app = t.app(&id);
    assert_eq!(app.state, AppState::Relaunching);
    assert_eq!((app.retries, ms_after(100, &app)), (1, Some(1_000)));
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("relaunching in 1s (retry 1 of 2)"));
    assert_eq!(t.place(500), 0, "not during the pause");
    assert_eq!(t.tick(1_100), 1);
    assert_eq!(t.place(1_100), 1);
    assert_eq!(t.app(&id).attempt, 2);
    t.report("w1", &id, 2, AppState::Running, 1_200);
    t.end("w1", &id, 2, AppState::Failed, 3, 1_300);
    let app = t.app(&id);
    assert_eq!(
        (app.retries, ms_after(1_300, &app)),
        (2, Some(2_000)),
        "doubled"
    );
    t.tick(3_300);
    t.place(3_300);
    t.report("w1", &id, 3, AppState::Running, 3_400);
    t.end("w1", &id, 3, AppState::Failed, 1, 3_500);
    let app = t.app(&id);
    assert_eq!(app.state, AppState::Failed);
    assert_eq!(app.attempt, 3);
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("all 2 retries used"));
}

#[test]
fn on_failure_keeps_a_finished_app_finished_and_always_relaunches_it() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let once = t.submit_json(
        body(serde_json::json!({"restart": "on_failure", "max_retries": 3})),
        0,
    );
    let always = t.submit_json(
        body(serde_json::json!({"restart": "always", "max_retries": 3, "retry_backoff": "0s"})),
        0,
    );
    assert_eq!(t.place(0), 2);
    for id in [&once, &always] {
        t.report("w1", id, 1, AppState::Running, 0);
        t.end("w1", id, 1, AppState::Finished, 0, 10);
    }
    assert_eq!(t.app(&once).state, AppState::Finished);
    let a = t.app(&always);
    assert_eq!(
        (a.state, a.relaunch_at),
        (AppState::Relaunching, None),
        "no pause: queued"
    );
    assert_eq!(t.place(10), 1);
}

#[test]
fn backoff_is_capped() {
    let mut t = T::new();
    let id = t.submit_json(
        body(serde_json::json!({"restart": "always", "max_retries": 100,
                                "retry_backoff": "1s", "max_backoff": "5s"})),
        0,
    );
    let mut app = (*t.app(&id)).clone();
    let secs: Vec<u64> = (0..6)
        .map(|r| {
            app.retries = r;
            app.backoff().as_secs()
        })
        .collect();
    assert_eq!(secs, [1, 2, 4, 5, 5, 5]);
    app.retries = 90;
    assert_eq!(app.backoff().as_secs(), 5, "no overflow");
}

#[test]
fn a_kill_is_final_even_during_a_relaunch_pause() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let id = t.submit_json(
        body(serde_json::json!({"restart": "always", "max_retries": 5})),
        0,
    );
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 0);
    t.end("w1", &id, 1, AppState::Failed, 1, 10);
    assert_eq!(t.app(&id).state, AppState::Relaunching);
    t.c.kill(&id, None, at(20), &mut t.fx).unwrap();
    assert_eq!(t.app(&id).state, AppState::Killed);
    assert_eq!(t.c.next_timer(), None);
    t.c.check_invariants().unwrap();
    // A kill of a running persistent task ends it too.
    let id = t.submit_json(
        body(serde_json::json!({"restart": "always", "max_retries": 5})),
        30,
    );
    t.place(30);
    t.report("w1", &id, 1, AppState::Running, 30);
    t.c.kill(&id, None, at(40), &mut t.fx).unwrap();
    t.report("w1", &id, 1, AppState::Killed, 50);
    assert_eq!(t.app(&id).state, AppState::Killed);
}

#[test]
fn a_retry_copies_the_template_of_an_ended_app() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let id = t.submit_json(
        body(serde_json::json!({"max_runtime": "1m", "labels": {"team": "a"}, "max_retries": 2})),
        0,
    );
    assert!(
        matches!(t.c.retry(&id, at(1), &mut t.fx), Err(OpError::Conflict(m)) if m.contains("only an ended app"))
    );
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 0);
    t.end("w1", &id, 1, AppState::Failed, 2, 10);
    let old = t.app(&id);
    let new = t.c.retry(&id, at(20), &mut t.fx).unwrap();
    assert_ne!(new.id, id);
    assert_eq!(new.retry_of.as_deref(), Some(&id));
    assert_eq!(new.state, AppState::Submitted);
    assert_eq!((new.attempt, new.retries), (0, 0));
    assert!(old.same_request(&new.template()));
    assert!(matches!(
        t.c.retry(&AppId("app-20200101000000-9999".into()), at(30), &mut t.fx),
        Err(OpError::NotFound(_))
    ));
}

#[test]
fn a_dry_run_changes_nothing_and_says_where_the_app_would_go() {
    let mut t = T::new();
    let r: SubmitRequest = serde_json::from_value(body(serde_json::json!({"cores": 2}))).unwrap();
    let (app, p) = t.c.dry_run(r.clone(), at(0)).unwrap();
    assert_eq!(app.state, AppState::Submitted);
    assert!(
        matches!(&p, Placement::Waiting(m) if m.contains("ALIVE worker")),
        "{p:?}"
    );
    t.register("w1", 4, 0);
    let before = t.c.last_seq();
    let (_, p) = t.c.dry_run(r.clone(), at(0)).unwrap();
    assert_eq!(p, Placement::Worker(w("w1")));
    assert_eq!(t.c.last_seq(), before);
    let mut big = r.clone();
    big.cores = 64;
    let (_, p) = t.c.dry_run(big, at(0)).unwrap();
    assert!(
        matches!(&p, Placement::Waiting(m) if m.contains("cannot be placed")),
        "{p:?}"
    );
    let mut bad = r;
    bad.kind = "nope".into();
    assert!(t.c.dry_run(bad, at(0)).is_err());
}

#[test]
fn on_demand_apps_are_never_written_and_are_forgotten_a_minute_after_they_end() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    t.take();
    let id = t.submit_json(body(serde_json::json!({"on_demand": true})), 0);
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 0);
    t.end("w1", &id, 1, AppState::Finished, 0, 1_000);
    let fx = t.take();
    assert!(
        fx.apps.is_empty(),
        "no app record is written: {:?}",
        fx.apps.keys()
    );
    assert_eq!(fx.last_seq, Some(1), "its id is still unique");
    assert!(
        !fx.events.is_empty(),
        "its changes are events like any other"
    );
    assert_eq!(t.c.next_timer(), Some(at(61_000).wall));
    assert_eq!(t.tick(60_999), 0);
    assert_eq!(t.tick(61_000), 1);
    assert_eq!(t.c.lookup(&id), Lookup::Expired);
    let fx = t.take();
    assert!(fx.apps.is_empty());
    assert!(matches!(fx.events[..], [EventBody::AppExpired { .. }]));
}

#[test]
fn timers_survive_a_recovery() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let id = t.submit_json(
        body(serde_json::json!({"restart": "on_failure", "max_retries": 1, "retry_backoff": "10s", "max_backoff": "10s"})),
        0,
    );
    t.place(0);
    t.report("w1", &id, 1, AppState::Running, 0);
    t.end("w1", &id, 1, AppState::Failed, 1, 0);
    let apps: Vec<App> = t.c.apps.values().map(|a| (**a).clone()).collect();
    let workers: Vec<WorkerRecord> = t.c.workers().map(|w| (*w.record).clone()).collect();
    let mut fx = Effects::default();
    let mut c = Cluster::recover(rules(), workers, apps, 1, at(5_000), &mut fx);
    c.check_invariants().unwrap();
    assert_eq!(c.next_timer(), Some(at(10_000).wall));
    assert_eq!(c.fire_timers(at(10_000), &mut fx), 1);
    assert_eq!(c.queued(), 1);
}

#[test]
fn submissions_check_the_new_fields() {
    let kinds = ["process"];
    for (extra, needle) in [
        (serde_json::json!({"max_runtime": "0s"}), "max_runtime"),
        (
            serde_json::json!({"retry_backoff": "10m", "max_backoff": "1m"}),
            "retry_backoff",
        ),
        (serde_json::json!({"max_backoff": "400days"}), "max_backoff"),
    ] {
        let r: SubmitRequest = serde_json::from_value(body(extra)).unwrap();
        let e = r.validate(kinds).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    assert!(serde_json::from_value::<SubmitRequest>(body(
        serde_json::json!({"restart": "sometimes"})
    ))
    .is_err());
    assert!(serde_json::from_value::<SubmitRequest>(body(
        serde_json::json!({"max_runtime": "soon"})
    ))
    .is_err());
}

// ----------------------------------------------------------------------------------------
// Drain

#[test]
fn a_drained_worker_gets_nothing_new_and_its_apps_move_at_the_deadline() {
    let mut t = T::new();
    t.register("w1", 4, 0);
    let a = t.running("w1", 0);
    let b = t.submit_json(body(serde_json::json!({"max_retries": 0})), 0);
    t.place(0);
    t.report("w1", &b, 1, AppState::Running, 0);
    let rec =
        t.c.drain_worker(
            &w("w1"),
            std::time::Duration::from_secs(60),
            at(1_000),
            &mut t.fx,
        )
        .unwrap();
    assert_eq!(rec.drain.unwrap().deadline, at(61_000).wall);
    assert_eq!(
        crate::worker::WorkerStatus::of(&rec, 2),
        crate::worker::WorkerStatus::Draining
    );
    t.c.check_invariants().unwrap();
    // Nothing new goes there, even with room.
    let c = t.submit(1, 0, 2_000);
    assert_eq!(t.place(2_000), 0);
    assert!(t.app(&c).state.is_waiting());
    // Re-registering keeps the drain.
    t.c.register(
        reg(
            "w1",
            4,
            vec![rep(&a, 1, AppState::Running), rep(&b, 1, AppState::Running)],
        ),
        at(3_000),
        &mut t.fx,
    )
    .unwrap();
    assert!(t.c.worker(&w("w1")).unwrap().record.drain.is_some());
    assert_eq!(t.c.next_timer(), Some(at(61_000).wall));
    t.take();
    assert_eq!(t.tick(61_000), 1);
    let fx = t.take();
    let mut killed = kills(&fx);
    killed.sort();
    let mut want = vec![(a.0.clone(), 1), (b.0.clone(), 1)];
    want.sort();
    assert_eq!(killed, want);
    assert_eq!(t.c.next_timer(), None, "the deadline fires once");
    // The worker stops them; `a` has a retry left and is relaunched, `b` has none.
    t.register("w2", 4, 62_000);
    t.report("w1", &a, 1, AppState::Killed, 62_000);
    t.report("w1", &b, 1, AppState::Killed, 62_000);
    let a_now = t.app(&a);
    assert_eq!(a_now.state, AppState::Relaunching, "{a_now:?}");
    assert!(a_now.message.as_deref().unwrap().contains("drained"));
    assert_eq!(t.app(&b).state, AppState::Failed);
    t.place(62_000);
    assert_eq!(t.app(&a).worker_id, Some(w("w2")));
    let rec = t.c.worker(&w("w1")).unwrap().record.clone();
    assert_eq!(
        crate::worker::WorkerStatus::of(&rec, t.c.worker(&w("w1")).unwrap().apps.len()),
        crate::worker::WorkerStatus::Drained
    );
    // Undrained, it takes apps again.
    t.c.undrain_worker(&w("w1"), &mut t.fx).unwrap();
    let d = t.submit(4, 0, 63_000);
    t.place(63_000);
    assert_eq!(t.app(&d).worker_id, Some(w("w1")));
    assert!(matches!(
        t.c.drain_worker(&w("nope"), std::time::Duration::ZERO, at(0), &mut t.fx),
        Err(OpError::WorkerNotFound(_))
    ));
}

fn reg_as(id: &str, instance: Option<&str>, apps: Vec<WorkerReport>) -> Registration {
    Registration {
        instance: instance.map(String::from),
        ..reg(id, 2, apps)
    }
}

#[test]
fn another_process_cannot_take_over_a_live_workers_id() {
    let mut t = T::new();
    t.c.register(reg_as("dup", Some("aaaa"), vec![]), at(0), &mut t.fx)
        .unwrap();
    let id = t.running("dup", 1);
    t.take();
    // A second process with the same id, listing nothing: refused, nothing changes.
    let before = t.c.clone();
    let err =
        t.c.register(reg_as("dup", Some("bbbb"), vec![]), at(2), &mut t.fx)
            .unwrap_err();
    let OpError::Conflict(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.starts_with("worker id dup is in use by another live worker process (registered at "),
        "{m}"
    );
    assert!(t.take().writes_nothing());
    assert_eq!(t.app(&id).state, AppState::Running);
    assert_eq!(t.app(&id).attempt, 1);
    assert_eq!(
        t.c.worker(&w("dup")).unwrap().instance,
        before.worker(&w("dup")).unwrap().instance
    );
    // The same process re-registering (a reconnect) keeps its app.
    let kill =
        t.c.register(
            reg_as("dup", Some("aaaa"), vec![rep(&id, 1, AppState::Running)]),
            at(3),
            &mut t.fx,
        )
        .unwrap();
    assert!(kill.is_empty());
    assert_eq!(t.app(&id).state, AppState::Running);
    // An older worker without a token is not checked.
    t.c.register(
        reg_as("dup", None, vec![rep(&id, 1, AppState::Running)]),
        at(4),
        &mut t.fx,
    )
    .unwrap();
    t.c.check_invariants().unwrap();
}

#[test]
fn a_new_process_takes_the_id_once_the_old_one_is_dead_or_unknown() {
    let mut t = T::new();
    t.c.register(reg_as("dup", Some("aaaa"), vec![]), at(0), &mut t.fx)
        .unwrap();
    let id = t.running("dup", 1);
    t.c.expire_workers(&[(w("dup"), 10_050)], at(11_000), &mut t.fx);
    assert_eq!(t.app(&id).state, AppState::Relaunching);
    t.take();
    t.c.register(reg_as("dup", Some("bbbb"), vec![]), at(11_100), &mut t.fx)
        .unwrap();
    assert_eq!(
        t.c.worker(&w("dup")).unwrap().instance.as_deref(),
        Some("bbbb")
    );
    assert_eq!(t.place(11_200), 1);
    assert_eq!(t.app(&id).attempt, 2);
    // Now "bbbb" is the live one: the old process coming back is refused.
    assert!(matches!(
        t.c.register(reg_as("dup", Some("aaaa"), vec![]), at(11_300), &mut t.fx),
        Err(OpError::Conflict(_))
    ));

    // After a master recovery no instance is known: the worker is UNKNOWN, any process may
    // register, and what it does not list is reconciled as lost.
    let workers: Vec<WorkerRecord> = t.c.workers().map(|w| (*w.record).clone()).collect();
    let apps: Vec<App> = vec![(*t.app(&id)).clone()];
    let mut fx = Effects::default();
    let mut c = Cluster::recover(rules(), workers, apps, 1, at(20_000), &mut fx);
    assert_eq!(c.worker(&w("dup")).unwrap().instance, None);
    c.register(reg_as("dup", Some("cccc"), vec![]), at(20_100), &mut fx)
        .unwrap();
    let app = match c.lookup(&id) {
        Lookup::Found(a) => a,
        other => panic!("{other:?}"),
    };
    assert_ne!(app.state, AppState::Running);
    c.check_invariants().unwrap();
}
