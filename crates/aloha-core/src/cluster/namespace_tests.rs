//! Namespaces: existence, queue quotas, hold-back quotas and weighted fair placement, on plain
//! data with a hand-moved clock.

use super::*;
use crate::namespace::{NamespaceSpec, Quota, Usage};
use crate::schedules::ScheduleRequest;
use chrono::TimeZone;

fn at(ms: u64) -> Now {
    Now {
        wall: Utc.timestamp_opt(1_700_000_000, 0).unwrap()
            + chrono::Duration::milliseconds(ms as i64),
        mono_ms: ms,
    }
}

fn req(ns: &str, cores: i64, memory_mb: i64) -> SubmitRequest {
    serde_json::from_value(serde_json::json!({
        "name": "t", "kind": "process", "spec": {"command": ["true"]},
        "cores": cores, "memory_mb": memory_mb, "namespace": ns
    }))
    .unwrap()
}

fn spec(weight: u32, quota: Quota) -> NamespaceSpec {
    NamespaceSpec { quota, weight }
}

struct N {
    c: Cluster,
    fx: Effects,
    t: u64,
}

impl N {
    fn new() -> N {
        N {
            c: Cluster::new(Rules::default()),
            fx: Effects::default(),
            t: 0,
        }
    }

    fn now(&mut self) -> Now {
        self.t += 1;
        at(self.t)
    }

    fn worker(&mut self, id: &str, cores: u32, memory_mb: u64) {
        let now = self.now();
        let reg = Registration {
            id: WorkerId(id.into()),
            address: format!("{id}:1"),
            cores,
            memory_mb,
            kinds: vec!["process".into()],
            plugin_errors: vec![],
            apps: vec![],
            instance: None,
        };
        self.c.register(reg, now, &mut self.fx).unwrap();
    }

    fn ns(&mut self, name: &str, weight: u32, quota: Quota) {
        let now = self.now();
        self.c
            .put_namespace(name, spec(weight, quota), now, &mut self.fx)
            .unwrap();
    }

    fn submit(&mut self, ns: &str, cores: i64, memory_mb: i64) -> Result<AppId, OpError> {
        let now = self.now();
        let r = self
            .c
            .submit(req(ns, cores, memory_mb), None, now, &mut self.fx);
        if self.c.app_count() < 100 {
            self.c.check_invariants().unwrap();
        }
        r.map(|s| s.app.id.clone())
    }

    fn place(&mut self) -> usize {
        let now = self.now();
        let n = self.c.place(now, &mut self.fx);
        self.c.check_invariants().unwrap();
        n
    }

    fn app(&self, id: &AppId) -> Arc<App> {
        match self.c.lookup(id) {
            Lookup::Found(a) => a,
            other => panic!("{id}: {other:?}"),
        }
    }

    /// Ends app `id` on its worker (RUNNING, then FINISHED).
    fn finish(&mut self, id: &AppId) {
        let app = self.app(id);
        let wid = app.worker_id.clone().unwrap();
        for state in [AppState::Running, AppState::Finished] {
            let r = WorkerReport {
                app: id.clone(),
                attempt: app.attempt,
                state,
                exit_code: Some(0),
                message: None,
                worker_shutdown: false,
                details: BTreeMap::new(),
            };
            let now = self.now();
            self.c.report(&wid, &r, now, &mut self.fx);
        }
        self.c.check_invariants().unwrap();
    }

    /// Apps on workers, per namespace.
    fn running(&self, ns: &str) -> u64 {
        self.c.usage(ns).running_apps
    }

    fn on_workers(&self) -> Vec<AppId> {
        self.c
            .apps
            .values()
            .filter(|a| a.state.is_on_worker())
            .map(|a| a.id.clone())
            .collect()
    }
}

#[test]
fn apps_go_to_default_unless_they_name_an_existing_namespace() {
    let mut n = N::new();
    let id = n.submit("default", 1, 0).unwrap();
    assert_eq!(n.app(&id).namespace, "default");
    assert_eq!(
        n.submit("team-a", 1, 0),
        Err(OpError::Submit(SubmitError::UnknownNamespace(
            "team-a".into()
        )))
    );
    assert!(matches!(
        n.submit("Team_A", 1, 0),
        Err(OpError::Submit(SubmitError::Invalid(_)))
    ));
    n.fx = Effects::default();
    n.ns("team-a", 1, Quota::default());
    assert!(n.fx.namespaces.contains_key("team-a"));
    assert!(matches!(
        n.fx.events.last(),
        Some(EventBody::NamespaceUpdated { namespace, .. }) if namespace == "team-a"
    ));
    let id = n.submit("team-a", 1, 0).unwrap();
    assert_eq!(n.app(&id).namespace, "team-a");
    let names: Vec<String> = n.c.namespaces().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["default", "team-a"]);
    assert_eq!(n.c.usage("team-a").queued_apps, 1);
}

#[test]
fn a_full_queue_refuses_submissions_and_writes_nothing() {
    let mut n = N::new();
    n.ns(
        "a",
        1,
        Quota {
            max_queued_apps: Some(2),
            ..Default::default()
        },
    );
    n.submit("a", 1, 0).unwrap();
    n.submit("a", 1, 0).unwrap();
    let last = n.c.last_seq();
    n.fx = Effects::default();
    let err = n.submit("a", 1, 0).unwrap_err();
    assert!(
        matches!(&err, OpError::Quota(m) if m.contains("max_queued_apps = 2")),
        "{err}"
    );
    assert!(n.fx.writes_nothing());
    assert_eq!(n.c.last_seq(), last);
    // Another namespace is not affected, and an idempotent repeat is not a new app.
    n.submit("default", 1, 0).unwrap();
    let now = n.now();
    let mut r = req("default", 1, 0);
    r.name = "keyed".into();
    n.c.submit(r.clone(), Some("k".into()), now, &mut n.fx)
        .unwrap();
    n.ns(
        "default",
        1,
        Quota {
            max_queued_apps: Some(1),
            ..Default::default()
        },
    );
    let again = n.c.submit(r, Some("k".into()), now, &mut n.fx).unwrap();
    assert!(
        !again.created,
        "a repeat returns the first app, over quota or not"
    );
    // Placing frees the queue.
    n.worker("w1", 8, 1024);
    n.place();
    n.submit("a", 1, 0).unwrap();
}

#[test]
fn apps_over_a_hold_back_quota_wait_and_never_block_other_namespaces() {
    let mut n = N::new();
    n.worker("w1", 8, 8192);
    n.ns(
        "a",
        1,
        Quota {
            max_cores: Some(2),
            ..Default::default()
        },
    );
    n.ns(
        "b",
        1,
        Quota {
            max_running_apps: Some(1),
            max_memory_mb: Some(1000),
            ..Default::default()
        },
    );
    let a: Vec<AppId> = (0..4).map(|_| n.submit("a", 1, 0).unwrap()).collect();
    let b1 = n.submit("b", 1, 600).unwrap();
    let b2 = n.submit("b", 1, 100).unwrap();
    let d = n.submit("default", 1, 0).unwrap();
    n.place();
    assert_eq!(n.running("a"), 2);
    assert_eq!(n.running("b"), 1);
    assert!(n.app(&d).state.is_on_worker(), "default is not held back");
    assert!(n.app(&b1).state.is_on_worker());
    let waiting = n.app(&a[2]);
    assert_eq!(waiting.state, AppState::Submitted);
    assert_eq!(
        n.c.wait_reason(&waiting),
        "waiting for namespace a's quota max_cores = 2 (2 in use, needs 1)"
    );
    assert!(n
        .c
        .wait_reason(&n.app(&b2))
        .contains("max_running_apps = 1"));
    // An app of a ends: the next of a goes.
    n.finish(&a[0]);
    n.place();
    assert!(n.app(&a[2]).state.is_on_worker());
    assert_eq!(n.running("a"), 2);
    // Raising b's quota lets b2 go (its memory fits 600 + 100 <= 1000).
    n.ns(
        "b",
        1,
        Quota {
            max_running_apps: Some(5),
            max_memory_mb: Some(1000),
            ..Default::default()
        },
    );
    n.place();
    assert!(n.app(&b2).state.is_on_worker());
}

#[test]
fn shares_follow_the_weights() {
    let mut n = N::new();
    n.worker("w1", 4, 4096);
    n.ns("a", 1, Quota::default());
    n.ns("b", 3, Quota::default());
    for _ in 0..8 {
        n.submit("a", 1, 0).unwrap();
    }
    for _ in 0..8 {
        n.submit("b", 1, 0).unwrap();
    }
    assert_eq!(n.place(), 4);
    assert_eq!((n.running("a"), n.running("b")), (1, 3));

    // Three weights over 60 cores, with every app ending and being replaced many times.
    let mut n = N::new();
    n.worker("w1", 40, 1 << 20);
    n.worker("w2", 20, 1 << 20);
    for (ns, w) in [("x", 1), ("y", 2), ("z", 3)] {
        n.ns(ns, w, Quota::default());
        for _ in 0..400 {
            n.submit(ns, 1, 0).unwrap();
        }
    }
    n.place();
    for round in 0..20 {
        assert_eq!(
            (n.running("x"), n.running("y"), n.running("z")),
            (10, 20, 30),
            "round {round}"
        );
        // The oldest third of the running apps end; the freed cores go by share.
        let mut on = n.on_workers();
        on.sort_by_key(|id| id.seq());
        for id in on.iter().take(20) {
            n.finish(id);
        }
        n.place();
    }
}

#[test]
fn a_big_backlog_does_not_starve_a_small_namespace() {
    let mut n = N::new();
    n.worker("w1", 10, 1 << 20);
    n.ns("big", 1, Quota::default());
    n.ns("small", 1, Quota::default());
    for _ in 0..10_000 {
        n.submit("big", 1, 0).unwrap();
    }
    let small: Vec<AppId> = (0..10).map(|_| n.submit("small", 1, 0).unwrap()).collect();
    n.place();
    assert_eq!((n.running("big"), n.running("small")), (5, 5));
    // One round of endings later, every app of the small namespace has run or is running,
    // while 9,990 apps of the big one still wait.
    for id in n.on_workers() {
        n.finish(&id);
    }
    n.place();
    for id in &small {
        assert!(n.app(id).state != AppState::Submitted, "{id} still waits");
    }
    assert_eq!(n.c.usage("big").queued_apps, 9_990);
}

#[test]
fn a_shape_that_fits_nowhere_in_one_namespace_does_not_hold_back_another() {
    let mut n = N::new();
    n.worker("w1", 4, 4096);
    n.ns("a", 1, Quota::default());
    n.ns("b", 1, Quota::default());
    let huge = n.submit("a", 16, 0).unwrap();
    let small = n.submit("b", 1, 0).unwrap();
    n.place();
    assert_eq!(n.app(&huge).state, AppState::Submitted);
    assert!(n.app(&small).state.is_on_worker());
}

#[test]
fn schedules_count_against_max_schedules_and_keep_their_namespace() {
    let mut n = N::new();
    n.worker("w1", 4, 4096);
    n.ns(
        "a",
        1,
        Quota {
            max_schedules: Some(1),
            ..Default::default()
        },
    );
    let sreq = |ns: &str| -> ScheduleRequest {
        serde_json::from_value(serde_json::json!({
            "name": "roll", "namespace": ns,
            "app": {"kind": "process", "spec": {"command": ["true"]}},
            "every": "1s", "overlap": "allow"
        }))
        .unwrap()
    };
    let now = n.now();
    assert!(matches!(
        n.c.create_schedule(sreq("nope"), now, &mut n.fx),
        Err(OpError::Submit(SubmitError::UnknownNamespace(_)))
    ));
    let s = n.c.create_schedule(sreq("a"), now, &mut n.fx).unwrap();
    let err = n.c.create_schedule(sreq("a"), now, &mut n.fx).unwrap_err();
    assert!(
        matches!(&err, OpError::Quota(m) if m.contains("max_schedules = 1")),
        "{err}"
    );
    assert_eq!(n.c.usage("a").schedules, 1);
    // Its runs are apps of the namespace.
    let later = at(n.t + 5_000);
    n.c.fire_schedules(later, &mut n.fx);
    n.c.check_invariants().unwrap();
    let runs: Vec<Arc<App>> = n.c.apps.values().cloned().collect();
    assert!(!runs.is_empty());
    assert!(runs.iter().all(|a| a.namespace == "a"));
    // A namespace with a schedule cannot be deleted; without, it can.
    n.fx = Effects::default();
    assert!(matches!(
        n.c.delete_namespace("a", &mut n.fx),
        Err(OpError::Conflict(m)) if m.contains("1 schedules")
    ));
    n.c.delete_schedule(&s.id, &mut n.fx).unwrap();
    for a in runs {
        let now = n.now();
        n.c.kill(&a.id, None, now, &mut n.fx).unwrap();
    }
    n.c.check_invariants().unwrap();
    assert_eq!(n.c.usage("a"), Usage::default());
    n.c.delete_namespace("a", &mut n.fx).unwrap();
    assert_eq!(n.fx.namespaces.get("a"), Some(&None));
    assert!(!n.c.namespace_exists("a"));
    assert!(matches!(
        n.c.delete_namespace("a", &mut n.fx),
        Err(OpError::NamespaceNotFound(_))
    ));
    assert!(matches!(
        n.c.delete_namespace("default", &mut n.fx),
        Err(OpError::Conflict(_))
    ));
}

#[test]
fn namespaces_survive_recovery_and_mirroring() {
    let mut n = N::new();
    n.ns(
        "a",
        2,
        Quota {
            max_cores: Some(1),
            ..Default::default()
        },
    );
    let id = n.submit("a", 1, 0).unwrap();
    let records: Vec<Namespace> =
        n.fx.namespaces
            .values()
            .flatten()
            .map(|r| (**r).clone())
            .collect();
    let apps: Vec<App> = n.c.apps.values().map(|a| (**a).clone()).collect();
    let mut fx = Effects::default();
    let c = Cluster::recover(
        Rules::default(),
        vec![],
        apps,
        n.c.last_seq(),
        at(99),
        &mut fx,
    )
    .with_namespaces(records.clone());
    c.check_invariants().unwrap();
    assert_eq!(c.usage("a").queued_apps, 1);
    let info = c.namespace("a").unwrap();
    assert_eq!((info.weight, info.quota.max_cores), (2, Some(1)));
    let mut m = Cluster::mirror(Rules::default(), vec![], vec![], 0).with_namespaces(records);
    assert!(m.namespace_exists("a"));
    m.mirror_namespace_deleted("a");
    assert!(!m.namespace_exists("a"));
    assert!(matches!(c.lookup(&id), Lookup::Found(_)));
}

#[test]
fn a_late_namespace_gets_the_next_free_core() {
    let mut n = N::new();
    n.worker("w1", 4, 1 << 20);
    n.ns("a", 1, Quota::default());
    n.ns("late", 1, Quota::default());
    for _ in 0..20 {
        n.submit("a", 1, 0).unwrap();
    }
    n.place();
    assert_eq!(n.running("a"), 4);
    let late = n.submit("late", 1, 0).unwrap();
    n.place();
    assert_eq!(n.app(&late).state, AppState::Submitted);
    let first = n.on_workers()[0].clone();
    n.finish(&first);
    n.place();
    assert!(n.app(&late).state.is_on_worker(), "{:?}", n.app(&late));
}
