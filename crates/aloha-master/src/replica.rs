//! A standby's read replica of the leader's state, followed through etcd's watch.
//!
//! A standby master answers `GET` requests too. Reading etcd for each of them made every read
//! as slow as etcd (a scan of every app per list) and made reads hang while etcd had no
//! quorum. Instead, while it is a standby, the master loads the app and worker records once,
//! at one etcd revision, into a [`Cluster`] built with [`Cluster::mirror`], then applies every
//! change the leader writes after that revision, as etcd's watch delivers it, and publishes an
//! immutable snapshot after each watch message. Reads take the snapshot and never wait for etcd.
//!
//! The replica is as fresh as the watch: usually milliseconds behind the leader. If etcd cannot
//! be reached, the replica keeps serving the last state it saw while it tries again every half
//! second; a watch that fails (etcd compacted the revision it needed, a broken connection)
//! starts over with a fresh load. The leader does not follow its own writes: the follower
//! pauses while this master leads and loads afresh when it is a standby again.

use std::sync::Arc;
use std::time::Duration;

use aloha_core::api::Role;
use aloha_core::cluster::{Cluster, Rules};
use aloha_core::namespace::Namespace;
use aloha_core::schedules::{Schedule, ScheduleId};
use aloha_core::{App, AppId, WorkerId, WorkerRecord};
use arc_swap::ArcSwapOption;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::engine::View;
use crate::store::etcd::prefix_end;
use crate::store::keys;

/// Records read per etcd request while loading.
const PAGE: i64 = 5_000;

/// The replica, shared with the readers.
#[derive(Default)]
pub struct Replica {
    current: ArcSwapOption<View>,
}

impl Replica {
    /// The replica as of the last watch message, if one is loaded.
    pub fn get(&self) -> Option<Arc<View>> {
        self.current.load_full()
    }

    fn set(&self, c: Option<Cluster>) {
        // A standby has no epoch of its own: readers take the leader's from the election.
        self.current
            .store(c.map(|cluster| Arc::new(View { cluster, epoch: 0 })));
    }
}

/// What a stored key is, relative to the cluster prefix.
enum Key<'a> {
    App(&'a str),
    Worker(&'a str),
    Schedule(&'a str),
    Namespace(&'a str),
    AppSeq,
    ScheduleSeq,
    Other,
}

fn classify(rel: &str) -> Key<'_> {
    if let Some(id) = rel.strip_prefix(keys::APPS) {
        Key::App(id)
    } else if let Some(id) = rel.strip_prefix(keys::WORKERS) {
        Key::Worker(id)
    } else if let Some(id) = rel.strip_prefix(keys::SCHEDULES) {
        Key::Schedule(id)
    } else if let Some(name) = rel.strip_prefix(keys::NAMESPACES) {
        Key::Namespace(name)
    } else if rel == keys::APP_SEQ {
        Key::AppSeq
    } else if rel == keys::SCHEDULE_SEQ {
        Key::ScheduleSeq
    } else {
        Key::Other
    }
}

/// Follows the cluster under `prefix` (`/aloha/<cluster>/`) into `replica` while `role` is
/// STANDBY, until `stop`.
pub async fn follow(
    client: Client,
    prefix: String,
    rules: Rules,
    replica: Arc<Replica>,
    mut role: watch::Receiver<Role>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        if *role.borrow_and_update() != Role::Standby {
            // Leading (or about to): the engine's snapshot serves reads.
            replica.set(None);
            tokio::select! {
                _ = role.changed() => continue,
                _ = stop.changed() => return,
            }
        }
        match replicate(&client, &prefix, &rules, &replica, &mut role, &mut stop).await {
            Ok(()) => {}
            Err(e) => {
                warn!("standby replica: {e}; loading again shortly");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Loads at one revision, then applies the watch until the role changes, `stop`, or an error.
async fn replicate(
    client: &Client,
    prefix: &str,
    rules: &Rules,
    replica: &Replica,
    role: &mut watch::Receiver<Role>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let (mut cluster, revision) = load(client, prefix, rules).await?;
    info!(
        revision,
        apps = cluster.app_count(),
        "standby replica loaded; following the leader's writes"
    );
    replica.set(Some(cluster.clone()));
    // One watch answer carries a whole group commit: past gRPC's 4 MiB default at times.
    let mut w = client
        .watch_client()
        .max_decoding_message_size(crate::store::etcd::MAX_ANSWER_BYTES);
    let mut stream = w
        .watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("cannot watch etcd: {e}"))?;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = msg
                    .map_err(|e| format!("etcd watch failed: {e}"))?
                    .ok_or_else(|| "etcd closed the watch".to_string())?;
                if resp.canceled() {
                    return Err(format!(
                        "etcd cancelled the watch (compacted at revision {})",
                        resp.compact_revision()
                    ));
                }
                let mut changed = false;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    let rel = key.strip_prefix(prefix).unwrap_or(key);
                    changed |= apply(&mut cluster, rel, ev.event_type(), kv.value());
                }
                if changed {
                    replica.set(Some(cluster.clone()));
                }
            }
            r = role.changed() => {
                if r.is_err() || *role.borrow() != Role::Standby {
                    return Ok(());
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Applies one stored change; whether it touched what readers see.
fn apply(cluster: &mut Cluster, rel: &str, kind: EventType, value: &[u8]) -> bool {
    match (classify(rel), kind) {
        (Key::App(_), EventType::Put) => match serde_json::from_slice::<App>(value) {
            Ok(app) => {
                cluster.mirror_app(app);
                true
            }
            Err(e) => {
                warn!("standby replica: unreadable app record {rel}: {e}");
                false
            }
        },
        (Key::App(id), EventType::Delete) => {
            cluster.mirror_app_deleted(&AppId(id.to_string()));
            true
        }
        (Key::Worker(_), EventType::Put) => match serde_json::from_slice::<WorkerRecord>(value) {
            Ok(w) => {
                cluster.mirror_worker(w);
                true
            }
            Err(e) => {
                warn!("standby replica: unreadable worker record {rel}: {e}");
                false
            }
        },
        (Key::Worker(id), EventType::Delete) => {
            cluster.mirror_worker_deleted(&WorkerId(id.to_string()));
            true
        }
        (Key::Schedule(_), EventType::Put) => match serde_json::from_slice::<Schedule>(value) {
            Ok(sch) => {
                cluster.mirror_schedule(sch);
                true
            }
            Err(e) => {
                warn!("standby replica: unreadable schedule record {rel}: {e}");
                false
            }
        },
        (Key::Namespace(_), EventType::Put) => match serde_json::from_slice::<Namespace>(value) {
            Ok(ns) => {
                cluster.mirror_namespace(ns);
                true
            }
            Err(e) => {
                warn!("standby replica: unreadable namespace record {rel}: {e}");
                false
            }
        },
        (Key::Namespace(name), EventType::Delete) => {
            cluster.mirror_namespace_deleted(name);
            true
        }
        (Key::Schedule(id), EventType::Delete) => {
            cluster.mirror_schedule_deleted(&ScheduleId(id.to_string()));
            true
        }
        (Key::ScheduleSeq, EventType::Put) => {
            if let Some(seq) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                cluster.mirror_last_schedule_seq(seq);
            }
            true
        }
        (Key::AppSeq, EventType::Put) => {
            if let Some(seq) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                cluster.mirror_last_seq(seq);
            }
            true
        }
        _ => false,
    }
}

/// Reads every app and worker record at one revision; returns the mirror and the revision.
async fn load(client: &Client, prefix: &str, rules: &Rules) -> Result<(Cluster, i64), String> {
    // Pages of records may pass gRPC's 4 MiB default answer size.
    let mut c = client
        .kv_client()
        .max_decoding_message_size(crate::store::etcd::MAX_ANSWER_BYTES);
    let seq_key = format!("{prefix}{}", keys::APP_SEQ);
    let first = c
        .get(seq_key, None)
        .await
        .map_err(|e| format!("cannot read etcd: {e}"))?;
    let revision = first
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| "etcd gave no revision".to_string())?;
    let last_seq = first
        .kvs()
        .first()
        .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
        .unwrap_or(0);
    let workers: Vec<WorkerRecord> =
        scan(&mut c, &format!("{prefix}{}", keys::WORKERS), revision).await?;
    let apps: Vec<App> = scan(&mut c, &format!("{prefix}{}", keys::APPS), revision).await?;
    let schedules: Vec<Schedule> =
        scan(&mut c, &format!("{prefix}{}", keys::SCHEDULES), revision).await?;
    let namespaces: Vec<Namespace> =
        scan(&mut c, &format!("{prefix}{}", keys::NAMESPACES), revision).await?;
    debug!(
        revision,
        apps = apps.len(),
        workers = workers.len(),
        "standby replica read"
    );
    let (cluster, errors) = Cluster::mirror(rules.clone(), workers, apps, last_seq)
        .with_namespaces(namespaces)
        .with_schedules(schedules, 0);
    for e in errors {
        warn!("standby replica: {e}");
    }
    Ok((cluster, revision))
}

/// Every record under `prefix` at `revision`, a page at a time.
async fn scan<T: serde::de::DeserializeOwned>(
    c: &mut etcd_client::KvClient,
    prefix: &str,
    revision: i64,
) -> Result<Vec<T>, String> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut out = Vec::new();
    loop {
        let opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(revision);
        let resp = c
            .get(from.clone(), Some(opts))
            .await
            .map_err(|e| format!("cannot read etcd at revision {revision}: {e}"))?;
        let kvs = resp.kvs();
        for kv in kvs {
            match serde_json::from_slice(kv.value()) {
                Ok(v) => out.push(v),
                Err(e) => warn!(
                    "standby replica: unreadable record {}: {e}",
                    String::from_utf8_lossy(kv.key())
                ),
            }
        }
        if !resp.more() || kvs.is_empty() {
            return Ok(out);
        }
        let mut next = kvs[kvs.len() - 1].key().to_vec();
        next.push(0);
        from = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart() {
        assert!(matches!(classify("apps/app-1"), Key::App("app-1")));
        assert!(matches!(classify("workers/w1"), Key::Worker("w1")));
        assert!(matches!(classify("meta/app_seq"), Key::AppSeq));
        assert!(matches!(
            classify("events/00000000000000000001"),
            Key::Other
        ));
        assert_eq!(prefix_end(b"/aloha/x/apps/"), b"/aloha/x/apps0".to_vec());
    }
}
