//! The engine behind the master handle, over the in-memory store with a hand-driven clock.
//! Commands to workers are recorded by a connector at the gRPC edge; the end-to-end tests in
//! `tests/` run the same paths over real gRPC.

use super::*;
use crate::clock::ManualClock;
use crate::store::{MemoryStore, StoreError};
use aloha_core::cluster::Lookup;
use aloha_proto as pb;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
struct Recorder {
    sent: StdMutex<Vec<(String, String, u32)>>, // (verb, app, attempt)
    refuse_launch: AtomicBool,
}

#[async_trait]
impl WorkerConnector for Recorder {
    async fn launch(
        &self,
        _: &str,
        r: pb::LaunchAppRequest,
    ) -> Result<pb::LaunchAppResponse, String> {
        self.sent
            .lock()
            .unwrap()
            .push(("launch".into(), r.app_id, r.attempt));
        if self.refuse_launch.load(Ordering::SeqCst) {
            return Err("connection refused".into());
        }
        Ok(pb::LaunchAppResponse {
            accepted: true,
            ..Default::default()
        })
    }
    async fn kill(&self, _: &str, r: pb::KillAppRequest) -> Result<pb::KillAppResponse, String> {
        self.sent
            .lock()
            .unwrap()
            .push(("kill".into(), r.app_id, r.attempt));
        Ok(pb::KillAppResponse {
            accepted: true,
            message: String::new(),
        })
    }
}

/// A store over memory that counts transactions and can be made to fail or stall them.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    txns: AtomicUsize,
    fail: AtomicBool,
    stall: AtomicBool,
    stalled: Notify,
    release: Notify,
}

#[async_trait]
impl StateStore for TestStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_from(prefix, from, limit).await
    }
    async fn txn(&self, txn: Txn) -> Result<bool, StoreError> {
        if self.stall.load(Ordering::SeqCst) {
            let released = self.release.notified();
            self.stalled.notify_one();
            released.await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full (test)".into()));
        }
        self.txns.fetch_add(1, Ordering::SeqCst);
        self.inner.txn(txn).await
    }
    fn kind(&self) -> &'static str {
        "test"
    }
    fn max_txn_ops(&self) -> Option<usize> {
        self.inner.max_txn_ops()
    }
}

struct Rig {
    master: Arc<Master>,
    store: Arc<TestStore>,
    clock: Arc<ManualClock>,
    rec: Arc<Recorder>,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn cfg() -> Config {
    Config {
        worker_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

async fn rig_on(store: Arc<TestStore>, clock: Arc<ManualClock>, cfg: Config) -> Rig {
    let rec = Arc::new(Recorder::default());
    let epoch = next_local_epoch(store.as_ref()).await.unwrap();
    let master = Master::recover(
        cfg,
        store.clone(),
        rec.clone(),
        clock.clone(),
        epoch,
        Arc::new(Metrics::new()),
        EventLog::new(store.clone()),
    )
    .await
    .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(master.clone().run_loops(rx));
    Rig {
        master,
        store,
        clock,
        rec,
        _stop: stop,
    }
}

async fn rig() -> Rig {
    rig_on(Arc::default(), Arc::default(), cfg()).await
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

fn report(app: &str, attempt: u32, state: AppState) -> WorkerReport {
    WorkerReport {
        app: AppId(app.into()),
        attempt,
        state,
        exit_code: None,
        message: None,
        worker_shutdown: false,
        details: Default::default(),
    }
}

fn submit_req(max_retries: i64) -> SubmitRequest {
    serde_json::from_value(serde_json::json!({
        "name": "t", "kind": "process", "spec": {"command": ["true"]}, "max_retries": max_retries
    }))
    .unwrap()
}

fn app(r: &Rig, id: &str) -> Arc<App> {
    match r.master.view().cluster.lookup(&AppId(id.into())) {
        Lookup::Found(a) => a,
        other => panic!("{id}: {other:?}"),
    }
}

async fn sent(rec: &Recorder, n: usize) -> Vec<(String, String, u32)> {
    for _ in 0..400 {
        if rec.sent.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.sent.lock().unwrap().clone()
}

/// Submits an app; it is placed in the same batch on the only worker, which reports RUNNING.
async fn running_app(r: &Rig, worker: &str, max_retries: i64) -> String {
    let s = r
        .master
        .submit(submit_req(max_retries), None)
        .await
        .unwrap();
    let id = s.app.id.0.clone();
    let a = app(r, &id);
    assert_eq!(
        a.state,
        AppState::Launching,
        "placed in the submission's batch"
    );
    assert_eq!(a.worker_id.as_ref().map(|w| w.as_str()), Some(worker));
    let out = r
        .master
        .report(WorkerId(worker.into()), report(&id, 1, AppState::Running))
        .await
        .unwrap();
    assert_eq!(out, ReportOutcome::Done);
    id
}

#[tokio::test]
async fn submit_place_launch_run_finish() {
    let r = rig().await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = running_app(&r, "w1", 0).await;
    assert_eq!(sent(&r.rec, 1).await, [("launch".into(), id.clone(), 1)]);
    let mut fin = report(&id, 1, AppState::Finished);
    fin.exit_code = Some(0);
    r.master.report(WorkerId("w1".into()), fin).await.unwrap();
    let a = app(&r, &id);
    assert_eq!((a.state, a.exit_code), (AppState::Finished, Some(0)));
    // Persisted, not just in memory.
    let stored: App =
        serde_json::from_slice(&r.store.get(&keys::app(&a.id)).await.unwrap().unwrap()).unwrap();
    assert_eq!(&stored, a.as_ref());
    // The engine counted the time it worked for these batches.
    let text = r.master.render_metrics();
    let busy: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("aloha_engine_busy_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no aloha_engine_busy_seconds_total in {text}"));
    assert!(busy > 0.0, "{busy}");
}

#[tokio::test]
async fn a_failed_commit_acknowledges_nothing_and_changes_nothing() {
    let r = rig().await;
    let first = r.master.submit(submit_req(0), None).await.unwrap();
    let before = r.master.view().cluster.last_seq();
    r.store.fail.store(true, Ordering::SeqCst);
    let tries = futures_join(&r, 5).await;
    for t in &tries {
        assert!(matches!(t, Err(MasterError::Store(_))), "{t:?}");
    }
    let kill = r.master.kill(&first.app.id.0, None).await;
    assert!(matches!(kill, Err(MasterError::Store(_))));
    let view = r.master.view();
    assert_eq!(
        view.cluster.last_seq(),
        before,
        "no sequence number was spent"
    );
    assert_eq!(app(&r, &first.app.id.0).state, AppState::Submitted);
    assert_eq!(view.cluster.queued(), 1);
    // The store is back: the next submission takes the next number, as if nothing happened.
    r.store.fail.store(false, Ordering::SeqCst);
    let next = r.master.submit(submit_req(0), None).await.unwrap();
    assert_eq!(next.app.seq, before + 1);
}

/// Makes the store stall its next transaction, submits an app, and returns once the engine is
/// inside that commit. `r.store.release` lets it go on.
async fn submit_into_a_stalled_commit(
    r: &Rig,
) -> tokio::task::JoinHandle<Result<Submitted, MasterError>> {
    r.store.stall.store(true, Ordering::SeqCst);
    let stalled = r.store.stalled.notified();
    let m = r.master.clone();
    let first = tokio::spawn(async move { m.submit(submit_req(0), None).await });
    stalled.await;
    first
}

async fn futures_join(r: &Rig, n: usize) -> Vec<Result<Submitted, MasterError>> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let m = r.master.clone();
        handles.push(tokio::spawn(
            async move { m.submit(submit_req(0), None).await },
        ));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn reads_are_answered_while_a_commit_is_stalled_and_concurrent_submissions_share_one_commit()
{
    let r = rig().await;
    r.master
        .register_worker(reg("w1", 1, vec![]))
        .await
        .unwrap();
    let txns_before = r.store.txns.load(Ordering::SeqCst);
    let first = submit_into_a_stalled_commit(&r).await;
    // The engine is inside a commit: reads still answer at once, from the last snapshot.
    let view = tokio::time::timeout(Duration::from_millis(200), async { r.master.view() })
        .await
        .expect("a read never waits for a write");
    assert_eq!(view.cluster.app_count(), 0);
    assert_eq!(r.master.workers().len(), 1);
    assert!(r.master.render_metrics().contains("aloha_queue_length"));
    // 50 more submissions queue up behind the stalled commit...
    let mut rest = Vec::new();
    for _ in 0..50 {
        let m = r.master.clone();
        rest.push(tokio::spawn(
            async move { m.submit(submit_req(0), None).await },
        ));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.store.stall.store(false, Ordering::SeqCst);
    r.store.release.notify_one();
    first.await.unwrap().unwrap();
    let mut seqs = Vec::new();
    for h in rest {
        seqs.push(h.await.unwrap().unwrap().app.seq);
    }
    // ...and are written together: one transaction for the first, one for the 50.
    assert_eq!(r.store.txns.load(Ordering::SeqCst) - txns_before, 2);
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=51).collect::<Vec<u64>>());
    // One of them was placed on the 1-core worker in that same batch.
    assert_eq!(r.master.view().cluster.count(AppState::Launching), 1);
}

#[tokio::test]
async fn the_batch_gathered_behind_a_commit_waits_for_it_and_fails_with_it() {
    let r = rig().await;
    let before = r.master.view().cluster.last_seq();
    let first = submit_into_a_stalled_commit(&r).await;
    // Applied behind the stalled commit, on top of the first submission...
    let m = r.master.clone();
    let second = tokio::spawn(async move { m.submit(submit_req(0), None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...but neither answered nor visible before it is written.
    assert!(!second.is_finished());
    assert_eq!(r.master.view().cluster.app_count(), 0);
    // The first commit fails: the second, built on it, fails too, and nothing remains.
    r.store.fail.store(true, Ordering::SeqCst);
    r.store.stall.store(false, Ordering::SeqCst);
    r.store.release.notify_one();
    assert!(matches!(first.await.unwrap(), Err(MasterError::Store(_))));
    assert!(matches!(second.await.unwrap(), Err(MasterError::Store(_))));
    assert_eq!(r.master.view().cluster.last_seq(), before);
    r.store.fail.store(false, Ordering::SeqCst);
    let next = r.master.submit(submit_req(0), None).await.unwrap();
    assert_eq!(next.app.seq, before + 1, "no number was spent");
    assert_eq!(r.master.view().cluster.app_count(), 1);
}

#[tokio::test]
async fn the_batch_gathered_behind_a_commit_is_written_once_it_is_durable() {
    let r = rig().await;
    let txns_before = r.store.txns.load(Ordering::SeqCst);
    let first = submit_into_a_stalled_commit(&r).await;
    r.store.stall.store(false, Ordering::SeqCst);
    let m = r.master.clone();
    let second = tokio::spawn(async move { m.submit(submit_req(0), None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "answered before its commit");
    r.store.release.notify_one();
    let a = first.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert_eq!((a.app.seq, b.app.seq), (1, 2));
    assert_eq!(r.store.txns.load(Ordering::SeqCst) - txns_before, 2);
    assert_eq!(r.master.view().cluster.app_count(), 2);
    // Both are in the store, with their events in order.
    assert!(r
        .store
        .inner
        .get(&crate::store::keys::app(&b.app.id))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_batch_submission_is_one_commit_with_a_result_per_app() {
    let r = rig().await;
    let txns = r.store.txns.load(Ordering::SeqCst);
    let mut bad = submit_req(0);
    bad.cores = 0;
    let reqs = vec![
        (submit_req(0), None),
        (bad, None),
        (submit_req(0), Some("k#2".to_string())),
    ];
    let out = r
        .master
        .submit_batch_as(&aloha_core::namespace::Scope::All, reqs.clone())
        .await
        .unwrap();
    assert_eq!(r.store.txns.load(Ordering::SeqCst) - txns, 1, "one commit");
    assert!(
        matches!(out[1], Err(MasterError::Submit(_))),
        "{:?}",
        out[1]
    );
    let (a, c) = (out[0].as_ref().unwrap(), out[2].as_ref().unwrap());
    assert!(a.created && c.created);
    assert_eq!(
        (a.app.seq, c.app.seq),
        (1, 2),
        "the refused one spent no number"
    );
    // Again: the keyed one answers with its first app, the others are new.
    let again = r
        .master
        .submit_batch_as(&aloha_core::namespace::Scope::All, reqs)
        .await
        .unwrap();
    let c2 = again[2].as_ref().unwrap();
    assert!(!c2.created);
    assert_eq!(c2.app.id, c.app.id);
    assert_eq!(again[0].as_ref().unwrap().app.seq, 3);
}

#[tokio::test]
async fn idempotent_submissions_survive_a_restart() {
    let store: Arc<TestStore> = Arc::default();
    let clock: Arc<ManualClock> = Arc::default();
    let r = rig_on(store.clone(), clock.clone(), cfg()).await;
    let a = r
        .master
        .submit(submit_req(0), Some("key-1".into()))
        .await
        .unwrap();
    assert!(a.created);
    let again = r
        .master
        .submit(submit_req(0), Some("key-1".into()))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.app.id, a.app.id);
    drop(r);
    let r = rig_on(store, clock, cfg()).await;
    let after = r
        .master
        .submit(submit_req(0), Some("key-1".into()))
        .await
        .unwrap();
    assert!(!after.created, "the key was recovered with its app");
    assert_eq!(after.app.id, a.app.id);
    let other = r.master.submit(submit_req(3), Some("key-1".into())).await;
    assert!(matches!(other, Err(MasterError::Conflict(_))));
}

#[tokio::test]
async fn retention_removes_finished_apps_and_their_ids_say_expired() {
    let mut c = cfg();
    c.retain_finished = 1;
    let r = rig_on(Arc::default(), Arc::default(), c).await;
    let a = r.master.submit(submit_req(0), None).await.unwrap().app;
    let b = r.master.submit(submit_req(0), None).await.unwrap().app;
    r.master.kill(&a.id.0, None).await.unwrap();
    r.master.kill(&b.id.0, None).await.unwrap();
    r.master.tick().await.unwrap();
    let view = r.master.view();
    assert_eq!(view.cluster.lookup(&a.id), Lookup::Expired);
    assert!(matches!(view.cluster.lookup(&b.id), Lookup::Found(_)));
    assert_eq!(
        r.store.get(&keys::app(&a.id)).await.unwrap(),
        None,
        "deleted from the store"
    );
    let events = r.master.event_log().read_after(0, 100).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.body.type_name() == "app.expired" && e.body.app_id() == Some(&a.id)));
    assert!(matches!(
        r.master.kill(&a.id.0, None).await,
        Err(MasterError::AppExpired(_))
    ));
}

#[tokio::test]
async fn a_silent_worker_dies_and_its_app_moves() {
    let r = rig().await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = running_app(&r, "w1", 1).await;
    r.master
        .register_worker(reg("w2", 2, vec![]))
        .await
        .unwrap();
    r.clock.advance(6_000);
    assert_eq!(r.master.heartbeat("w2").await, HeartbeatAnswer::Ok);
    r.master.tick().await.unwrap();
    assert_eq!(app(&r, &id).state, AppState::Running, "not yet");
    r.clock.advance(5_000);
    r.master.tick().await.unwrap();
    // Lost and, in the same batch, placed again on w2.
    let a = app(&r, &id);
    assert_eq!((a.state, a.attempt), (AppState::Launching, 2));
    assert_eq!(a.worker_id.as_ref().unwrap().0, "w2");
    assert!(a.history.iter().any(|h| h
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("worker w1 lost: no heartbeat for"))));
    let workers = r.master.workers();
    assert_eq!(workers[0].state, aloha_core::worker::WorkerStatus::Dead);
    assert_eq!(r.master.heartbeat("w1").await, HeartbeatAnswer::Reregister);
}

#[tokio::test]
async fn recovery_marks_running_apps_unknown_until_their_worker_reports() {
    let store: Arc<TestStore> = Arc::default();
    let clock: Arc<ManualClock> = Arc::default();
    let r = rig_on(store.clone(), clock.clone(), cfg()).await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = running_app(&r, "w1", 0).await;
    let big: SubmitRequest =
        serde_json::from_value(serde_json::json!({"name": "big", "kind": "process", "cores": 8}))
            .unwrap();
    let waiting = r.master.submit(big, None).await.unwrap().app;
    drop(r);
    let r = rig_on(store, clock, cfg()).await;
    assert_eq!(r.master.epoch(), 2);
    assert_eq!(app(&r, &id).state, AppState::Unknown);
    assert_eq!(app(&r, &waiting.id.0).state, AppState::Submitted);
    let kill = r
        .master
        .register_worker(reg("w1", 2, vec![report(&id, 1, AppState::Running)]))
        .await
        .unwrap();
    assert!(kill.is_empty());
    let a = app(&r, &id);
    assert_eq!((a.state, a.attempt), (AppState::Running, 1));
    let next = r.master.submit(submit_req(0), None).await.unwrap();
    assert_eq!(next.app.seq, 3, "sequence continues across restarts");
}

#[tokio::test]
async fn reconciliation_kills_what_the_master_does_not_own_and_loses_what_is_missing() {
    let r = rig().await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = running_app(&r, "w1", 0).await;
    let stranger = "app-20231114221320-0077";
    let kill = r
        .master
        .register_worker(reg("w1", 2, vec![report(stranger, 1, AppState::Running)]))
        .await
        .unwrap();
    assert_eq!(kill, [(AppId(stranger.into()), 1)]);
    let a = app(&r, &id);
    assert_eq!(a.state, AppState::Failed);
    assert!(a
        .message
        .as_deref()
        .unwrap()
        .contains("re-registered without attempt 1"));
}

#[tokio::test]
async fn kills_end_waiting_apps_at_once_and_running_ones_through_the_worker() {
    let r = rig().await;
    let waiting = r.master.submit(submit_req(0), None).await.unwrap().app;
    let killed = r.master.kill(&waiting.id.0, None).await.unwrap();
    assert_eq!(killed.state, AppState::Killed);
    assert!(matches!(
        r.master.kill(&waiting.id.0, None).await,
        Err(MasterError::Conflict(_))
    ));
    assert!(matches!(
        r.master.kill("app-x", None).await,
        Err(MasterError::AppNotFound(_))
    ));
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = running_app(&r, "w1", 3).await;
    let a = r.master.kill(&id, Some("enough".into())).await.unwrap();
    assert_eq!((a.state, a.kill_requested), (AppState::Running, true));
    let s = sent(&r.rec, 2).await;
    assert!(s.contains(&("kill".into(), id.clone(), 1)), "{s:?}");
    // If the worker dies before confirming, the app ends KILLED, not relaunched.
    r.clock.advance(10_001);
    r.master.tick().await.unwrap();
    assert_eq!(app(&r, &id).state, AppState::Killed);
}

#[tokio::test]
async fn a_failed_launch_goes_back_to_the_queue_without_a_retry() {
    let r = rig().await;
    r.rec.refuse_launch.store(true, Ordering::SeqCst);
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = r
        .master
        .submit(submit_req(0), None)
        .await
        .unwrap()
        .app
        .id
        .clone();
    sent(&r.rec, 1).await;
    let mut a = app(&r, &id.0);
    for _ in 0..200 {
        if a.state == AppState::Relaunching {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        a = app(&r, &id.0);
    }
    assert_eq!((a.state, a.retries), (AppState::Relaunching, 0));
    assert!(a.message.as_deref().unwrap().contains("connection refused"));
    // The worker is suspect until it heartbeats; then the app is placed again.
    r.rec.refuse_launch.store(false, Ordering::SeqCst);
    assert_eq!(r.master.heartbeat("w1").await, HeartbeatAnswer::Ok);
    sent(&r.rec, 2).await;
    assert_eq!(app(&r, &id.0).attempt, 2);
}

#[tokio::test]
async fn a_launch_lost_with_the_master_is_queued_again_without_spending_a_retry() {
    let store: Arc<TestStore> = Arc::default();
    let clock: Arc<ManualClock> = Arc::default();
    let r = rig_on(store.clone(), clock.clone(), cfg()).await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = r
        .master
        .submit(submit_req(0), None)
        .await
        .unwrap()
        .app
        .id
        .clone();
    assert_eq!(app(&r, &id.0).state, AppState::Launching);
    // The master dies right after persisting LAUNCHING: the worker never got the launch.
    drop(r);
    let r = rig_on(store, clock, cfg()).await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let a = app(&r, &id.0);
    assert_eq!(a.retries, 0, "no retry spent on an attempt that never ran");
    assert_eq!(
        (a.state, a.attempt),
        (AppState::Launching, 2),
        "queued and placed again"
    );
}

#[tokio::test]
async fn large_changes_are_written_in_chunks_that_each_fit_a_transaction() {
    let store = Arc::new(TestStore {
        inner: MemoryStore::with_max_ops(128),
        ..TestStore::default()
    });
    let clock: Arc<ManualClock> = Arc::default();
    let r = rig_on(store.clone(), clock.clone(), cfg()).await;
    let mut ids = Vec::new();
    for _ in 0..150 {
        let req = serde_json::from_value(serde_json::json!({
            "name": "t", "kind": "process", "memory_mb": 0
        }))
        .unwrap();
        ids.push(r.master.submit(req, None).await.unwrap().app.id.clone());
    }
    // A worker joins the queue: placing all 150 is far more than 128 operations.
    r.master
        .register_worker(reg("w1", 500, vec![]))
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(app(&r, &id.0).state, AppState::Launching);
    }
    drop(r);
    // And a recovery that turns all 150 UNKNOWN.
    let r = rig_on(store, clock, cfg()).await;
    for id in &ids {
        assert_eq!(app(&r, &id.0).state, AppState::Unknown);
    }
}

#[tokio::test]
async fn several_reports_of_one_worker_are_applied_in_order_in_one_commit() {
    let r = rig().await;
    r.master
        .register_worker(reg("w1", 2, vec![]))
        .await
        .unwrap();
    let id = r
        .master
        .submit(submit_req(0), None)
        .await
        .unwrap()
        .app
        .id
        .clone();
    let txns = r.store.txns.load(Ordering::SeqCst);
    let mut fin = report(&id.0, 1, AppState::Finished);
    fin.exit_code = Some(0);
    let out = r
        .master
        .reports(
            WorkerId("w1".into()),
            vec![
                report(&id.0, 1, AppState::Running),
                fin,
                report(&id.0, 7, AppState::Running),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out[..2], [ReportOutcome::Done, ReportOutcome::Done]);
    assert!(matches!(out[2], ReportOutcome::Kill(_)), "a stale attempt");
    assert_eq!(r.store.txns.load(Ordering::SeqCst) - txns, 1, "one commit");
    let a = app(&r, &id.0);
    assert_eq!((a.state, a.exit_code), (AppState::Finished, Some(0)));
    assert_eq!(
        crate::master::tests::history(&a),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]
    );
}

fn history(a: &App) -> Vec<&'static str> {
    a.history.iter().map(|h| h.state.as_str()).collect()
}
