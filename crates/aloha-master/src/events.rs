//! The event log: every state change as a numbered [`Event`], persisted in the same store
//! transaction as the change (see `Master::persist`), kept for a retention, read back for
//! resumable streams and for listeners catching up.
//!
//! Keys: `events/<seq, 20 digits>` (so key order is sequence order) and `meta/event_seq`, the
//! last sequence number written. The log keeps a bounded in-memory tail of recent events so
//! live readers rarely touch the store; older reads go to the store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloha_core::Event;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::store::{StateStore, StoreError, Txn};

pub use crate::store::keys::{EVENTS, EVENT_SEQ};
/// Most events kept in memory.
const TAIL: usize = 4096;

/// The key of event `seq`.
pub fn key(seq: u64) -> String {
    crate::store::keys::event(seq)
}

/// How long and how many events are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// At most this many events.
    pub max_events: u64,
    /// None older than this.
    pub max_age: Duration,
}

/// Reads and tails the event log. Shared by every master incarnation of a process (and used
/// by standbys, which read straight from the store).
pub struct EventLog {
    store: Arc<dyn StateStore>,
    tail: Mutex<VecDeque<Arc<Event>>>,
    last_seq: AtomicU64,
    new_events: Notify,
    /// This process leads: every event is published here, so the tail is complete. Otherwise
    /// (a standby, a leader that stepped down) another master writes the log and reads go to
    /// the store.
    authoritative: std::sync::atomic::AtomicBool,
}

fn decode(key: &str, v: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Backend(format!("corrupt event {key}: {e}")))
}

impl EventLog {
    /// A log over `store` (for reads).
    pub fn new(store: Arc<dyn StateStore>) -> Arc<EventLog> {
        Arc::new(EventLog {
            store,
            tail: Mutex::new(VecDeque::new()),
            last_seq: AtomicU64::new(0),
            new_events: Notify::new(),
            authoritative: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This process starts (`true`) or stops leading. On a step-down the in-memory tail is
    /// dropped — the next leader writes events this process never sees — and readers are woken
    /// so that they go on from the store.
    pub fn set_authoritative(&self, leading: bool) {
        self.authoritative.store(leading, Ordering::SeqCst);
        if !leading {
            self.tail().clear();
        }
        self.new_events.notify_waiters();
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Event>>> {
        // Single push/pop/iterate sections: a poisoned lock still holds a consistent deque.
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last sequence number this process knows was written (0: none yet or unknown).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    /// Reads the last sequence number from the store.
    pub async fn load_last_seq(&self) -> Result<u64, StoreError> {
        let seq = crate::store::read_u64(self.store.as_ref(), EVENT_SEQ).await?;
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(seq)
    }

    /// Records events that were just committed (in order, contiguous) and wakes readers.
    pub fn published(&self, events: &[Arc<Event>]) {
        let Some(last) = events.last() else { return };
        {
            let mut tail = self.tail();
            let contiguous = tail.back().is_none_or(|b| b.seq + 1 == events[0].seq);
            if !contiguous {
                // A new leadership (or a gap we did not see): start the tail afresh.
                tail.clear();
            }
            for e in events {
                tail.push_back(e.clone());
            }
            while tail.len() > TAIL {
                tail.pop_front();
            }
        }
        self.last_seq.fetch_max(last.seq, Ordering::SeqCst);
        self.new_events.notify_waiters();
    }

    /// Waits until new events are published here or `timeout` passes (standbys, which publish
    /// nothing, just poll).
    pub async fn wait_new(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.new_events.notified()).await;
    }

    /// Up to `limit` events with `seq > after`, in order: from memory when the tail covers
    /// them, else from the store.
    pub async fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        if self.authoritative.load(Ordering::SeqCst) {
            let tail = self.tail();
            if let Some(front) = tail.front() {
                if front.seq <= after.saturating_add(1) {
                    return Ok(tail
                        .iter()
                        .filter(|e| e.seq > after)
                        .take(limit)
                        .cloned()
                        .collect());
                }
            }
        }
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let rows = self.store.scan_from(EVENTS, &key(from), limit).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            out.push(Arc::new(decode(&k, &v)?));
        }
        if let Some(last) = out.last() {
            self.last_seq.fetch_max(last.seq, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// The oldest retained sequence number (None: the log is empty).
    pub async fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        let rows = self.store.scan_from(EVENTS, EVENTS, 1).await?;
        Ok(rows
            .first()
            .map(|(k, v)| decode(k, v))
            .transpose()?
            .map(|e| e.seq))
    }

    /// Deletes events beyond the retention, through `writer` (the leader's fenced store),
    /// oldest first, in batches. Returns how many were deleted.
    pub async fn compact(
        &self,
        writer: &dyn StateStore,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let last = self.load_last_seq().await?;
        let keep_from_count = last.saturating_sub(retention.max_events) + 1;
        let cutoff =
            now - chrono::Duration::from_std(retention.max_age).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        loop {
            let rows = self.store.scan_from(EVENTS, EVENTS, 500).await?;
            let mut txn = Txn::default();
            for (k, v) in &rows {
                // The key holds the sequence number: events beyond the count go without being
                // decoded; only the ones kept by the count are read for their age.
                let by_count = k
                    .strip_prefix(EVENTS)
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|seq| seq < keep_from_count);
                if by_count || decode(k, v)?.at < cutoff {
                    txn.delete(k.clone());
                } else {
                    break;
                }
            }
            let n = txn.ops.len() as u64;
            if n == 0 {
                return Ok(deleted);
            }
            if !writer.txn(txn).await? {
                return Err(StoreError::Fenced);
            }
            deleted += n;
            if n < rows.len() as u64 {
                return Ok(deleted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use aloha_core::api::Role;
    use aloha_core::EventBody;
    use chrono::TimeZone;

    fn ev(seq: u64, secs: i64) -> Event {
        Event {
            seq,
            at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            body: EventBody::LeaderChanged {
                role: Role::Alive,
                leader: None,
                epoch: 1,
            },
        }
    }

    async fn write(store: &MemoryStore, events: &[Event]) {
        let mut t = Txn::default();
        for e in events {
            t.put(key(e.seq), serde_json::to_vec(e).unwrap());
        }
        t.put(
            EVENT_SEQ,
            events.last().unwrap().seq.to_string().into_bytes(),
        );
        store.txn(t).await.unwrap();
    }

    #[tokio::test]
    async fn reads_come_from_the_tail_or_the_store_in_order() {
        let store = Arc::new(MemoryStore::new());
        let all: Vec<Event> = (1..=10).map(|i| ev(i, i as i64)).collect();
        write(&store, &all).await;
        let log = EventLog::new(store.clone());
        // Only 6..=10 were published in this process: older ones come from the store.
        log.published(&all[5..].iter().cloned().map(Arc::new).collect::<Vec<_>>());
        let seqs = |v: Vec<Arc<Event>>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.read_after(2, 3).await.unwrap()), [3, 4, 5]);
        assert_eq!(seqs(log.read_after(7, 100).await.unwrap()), [8, 9, 10]);
        assert!(log.read_after(10, 100).await.unwrap().is_empty());
        assert_eq!(log.last_seq(), 10);
        assert_eq!(log.load_last_seq().await.unwrap(), 10);
    }

    #[tokio::test]
    async fn compaction_keeps_the_newest_by_count_and_age() {
        let store = Arc::new(MemoryStore::new());
        let all: Vec<Event> = (1..=10).map(|i| ev(i, i as i64 * 60)).collect();
        write(&store, &all).await;
        let log = EventLog::new(store.clone());
        let now = Utc.timestamp_opt(1_700_000_000 + 600, 0).unwrap();
        let by_count = Retention {
            max_events: 7,
            max_age: Duration::from_secs(86_400),
        };
        assert_eq!(log.compact(store.as_ref(), by_count, now).await.unwrap(), 3);
        assert_eq!(log.first_seq().await.unwrap(), Some(4));
        // Events 4..=6 are more than 4 minutes old at `now` (they happened at 240..360 s).
        let by_age = Retention {
            max_events: 100,
            max_age: Duration::from_secs(239),
        };
        assert_eq!(log.compact(store.as_ref(), by_age, now).await.unwrap(), 3);
        assert_eq!(log.first_seq().await.unwrap(), Some(7));
        assert_eq!(log.read_after(0, 100).await.unwrap().len(), 4);
    }
}
