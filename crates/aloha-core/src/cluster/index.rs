//! The two placement indexes: the waiting queue grouped by resource shape, and free capacity
//! per kind. Both are persistent maps (`imbl`), so cloning a [`super::Cluster`] — the engine's
//! rollback point and the readers' snapshot — costs a few pointer copies.

use std::cmp::Reverse;
use std::ops::Bound;

use imbl::{OrdMap, OrdSet};

use crate::schedule::PlacementPolicy;
use crate::worker::WorkerId;

/// What an app needs from one worker: apps of one shape are interchangeable for placement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// Plugin kind.
    pub kind: String,
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
}

/// Waiting apps by shape, FIFO (submission sequence) within each shape.
///
/// A shape found to fit on no worker is *blocked*: it is not looked at again until capacity
/// grows somewhere ([`WaitQueue::unblock_all`]). Since capacity only shrinks while a round
/// places apps, a blocked shape could not have been placed anyway, so skipping it changes no
/// decision; it only makes a round cost O(apps placed + shapes), not O(apps waiting).
#[derive(Debug, Clone, Default)]
pub struct WaitQueue {
    shapes: OrdMap<Shape, OrdSet<u64>>,
    /// The oldest app of every shape that is not blocked.
    heads: OrdSet<(u64, Shape)>,
    blocked: OrdSet<Shape>,
    len: usize,
}

impl WaitQueue {
    /// Apps waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Distinct shapes waiting.
    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }

    /// Queues app `seq` of `shape`.
    pub fn push(&mut self, shape: &Shape, seq: u64) {
        let mut set = self.shapes.get(shape).cloned().unwrap_or_default();
        let old_head = set.get_min().copied();
        if set.insert(seq).is_some() {
            return;
        }
        self.len += 1;
        self.shapes.insert(shape.clone(), set);
        if self.blocked.contains(shape) {
            return;
        }
        if old_head.is_none_or(|h| seq < h) {
            if let Some(h) = old_head {
                self.heads.remove(&(h, shape.clone()));
            }
            self.heads.insert((seq, shape.clone()));
        }
    }

    /// Takes app `seq` of `shape` out of the queue (placed, killed, ...).
    pub fn remove(&mut self, shape: &Shape, seq: u64) {
        let Some(set) = self.shapes.get_mut(shape) else {
            return;
        };
        let head = set.get_min().copied();
        if set.remove(&seq).is_none() {
            return;
        }
        self.len -= 1;
        let next = set.get_min().copied();
        let empty = set.is_empty();
        if empty {
            self.shapes.remove(shape);
            self.blocked.remove(shape);
        }
        if head == Some(seq) && !self.blocked.contains(shape) {
            self.heads.remove(&(seq, shape.clone()));
            if let Some(n) = next {
                self.heads.insert((n, shape.clone()));
            }
        }
    }

    /// The oldest app of any shape that is not blocked.
    pub fn next(&self) -> Option<(u64, Shape)> {
        self.heads.get_min().cloned()
    }

    /// `shape` fits nowhere now: skip it until capacity grows.
    pub fn block(&mut self, shape: &Shape) {
        if let Some(head) = self.shapes.get(shape).and_then(|s| s.get_min().copied()) {
            self.heads.remove(&(head, shape.clone()));
            self.blocked.insert(shape.clone());
        }
    }

    /// Whether some shape is blocked.
    pub fn has_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Capacity grew somewhere: every shape is a candidate again.
    pub fn unblock_all(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        for shape in std::mem::take(&mut self.blocked) {
            if let Some(head) = self.shapes.get(&shape).and_then(|s| s.get_min().copied()) {
                self.heads.insert((head, shape));
            }
        }
    }

    /// How many apps of `shape` wait.
    pub fn waiting(&self, shape: &Shape) -> usize {
        self.shapes.get(shape).map_or(0, |s| s.len())
    }

    /// Every waiting app, oldest first (for tests and checks).
    pub fn all(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .shapes
            .values()
            .flat_map(|s| s.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }
}

/// A placeable worker's free resources as the index orders them: most free cores first, then
/// most free memory, then the smallest id (the placement policy of `crate::schedule`).
pub type CapKey = (u32, u64, Reverse<WorkerId>);

/// Free capacity of placeable workers, per kind they provide.
#[derive(Debug, Clone, Default)]
pub struct CapacityIndex {
    by_kind: OrdMap<String, OrdSet<CapKey>>,
}

impl CapacityIndex {
    /// Adds a worker with `free` resources under each of its `kinds`.
    pub fn insert(&mut self, id: &WorkerId, kinds: &[String], free: (u32, u64)) {
        for kind in kinds {
            let mut set = self.by_kind.get(kind).cloned().unwrap_or_default();
            set.insert((free.0, free.1, Reverse(id.clone())));
            self.by_kind.insert(kind.clone(), set);
        }
    }

    /// Removes a worker entered with `free` under `kinds`.
    pub fn remove(&mut self, id: &WorkerId, kinds: &[String], free: (u32, u64)) {
        for kind in kinds {
            if let Some(set) = self.by_kind.get_mut(kind) {
                set.remove(&(free.0, free.1, Reverse(id.clone())));
                if set.is_empty() {
                    self.by_kind.remove(kind);
                }
            }
        }
    }

    /// The worker `shape` goes to: among the workers of its kind with enough free cores and
    /// memory, with [`PlacementPolicy::Spread`] the one with the most free cores (ties: most
    /// free memory, then smallest id), with [`PlacementPolicy::Binpack`] the one with the
    /// fewest (ties: least free memory, then smallest id). Walks from the preferred end and
    /// passes over only workers of enough cores but too little memory.
    pub fn best(&self, shape: &Shape, policy: PlacementPolicy) -> Option<WorkerId> {
        let set = self.by_kind.get(&shape.kind)?;
        match policy {
            PlacementPolicy::Spread => {
                for (cores, memory, Reverse(id)) in set.iter().rev() {
                    if *cores < shape.cores {
                        return None;
                    }
                    if *memory >= shape.memory_mb {
                        return Some(id.clone());
                    }
                }
                None
            }
            PlacementPolicy::Binpack => {
                // The first key that may fit: just above (cores, memory - 1, the last id), or
                // above every key of one core fewer. No id is empty, so `Reverse("")` sorts
                // after every key of its cores and memory.
                let last = || Reverse(WorkerId(String::new()));
                let from = match (shape.cores, shape.memory_mb) {
                    (0, 0) => Bound::Unbounded,
                    (c, 0) => Bound::Excluded((c - 1, u64::MAX, last())),
                    (c, m) => Bound::Excluded((c, m - 1, last())),
                };
                let (cores, memory, _) = set
                    .range((from, Bound::Unbounded))
                    .find(|k| k.1 >= shape.memory_mb)?;
                // Keys of equal cores and memory sort by descending id (`Reverse`): the
                // smallest id of the tie is the last key of its run, found without walking it.
                set.range(..=(*cores, *memory, last()))
                    .next_back()
                    .map(|(_, _, Reverse(id))| id.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(cores: u32) -> Shape {
        Shape {
            kind: "process".into(),
            cores,
            memory_mb: 0,
        }
    }

    #[test]
    fn the_queue_hands_out_the_oldest_unblocked_head() {
        let mut q = WaitQueue::default();
        q.push(&shape(2), 5);
        q.push(&shape(1), 7);
        q.push(&shape(2), 3);
        q.push(&shape(1), 4);
        assert_eq!((q.len(), q.shapes()), (4, 2));
        assert_eq!(q.next(), Some((3, shape(2))));
        q.block(&shape(2));
        assert_eq!(q.next(), Some((4, shape(1))));
        q.remove(&shape(1), 4);
        assert_eq!(q.next(), Some((7, shape(1))));
        q.remove(&shape(1), 7);
        assert_eq!(q.next(), None, "only a blocked shape is left");
        // A newer app of a blocked shape does not unblock it.
        q.push(&shape(2), 9);
        assert_eq!(q.next(), None);
        q.unblock_all();
        assert_eq!(q.next(), Some((3, shape(2))));
        q.remove(&shape(2), 3);
        q.remove(&shape(2), 5);
        q.remove(&shape(2), 9);
        assert!(q.is_empty());
        assert_eq!(q.shapes(), 0);
        q.push(&shape(2), 10);
        assert_eq!(
            q.next(),
            Some((10, shape(2))),
            "an emptied shape is not left blocked"
        );
    }

    #[test]
    fn removing_twice_or_pushing_twice_counts_once() {
        let mut q = WaitQueue::default();
        q.push(&shape(1), 1);
        q.push(&shape(1), 1);
        assert_eq!(q.len(), 1);
        q.remove(&shape(1), 1);
        q.remove(&shape(1), 1);
        assert_eq!(q.len(), 0);
        assert_eq!(q.all(), Vec::<u64>::new());
    }

    const S: PlacementPolicy = PlacementPolicy::Spread;

    #[test]
    fn capacity_prefers_most_free_cores_then_memory_then_smallest_id() {
        let mut c = CapacityIndex::default();
        let k = vec!["process".to_string()];
        let w = |s: &str| WorkerId(s.into());
        c.insert(&w("b"), &k, (4, 100));
        c.insert(&w("a"), &k, (4, 100));
        c.insert(&w("c"), &k, (4, 50));
        c.insert(&w("d"), &k, (8, 10));
        let need = |cores, memory_mb| Shape {
            kind: "process".into(),
            cores,
            memory_mb,
        };
        assert_eq!(c.best(&need(1, 0), S), Some(w("d")));
        assert_eq!(
            c.best(&need(1, 60), S),
            Some(w("a")),
            "d lacks memory; a beats b"
        );
        assert_eq!(c.best(&need(5, 60), S), None);
        assert_eq!(c.best(&need(9, 0), S), None);
        let mut spark = need(1, 0);
        spark.kind = "spark".into();
        assert_eq!(c.best(&spark, S), None);
        c.remove(&w("a"), &k, (4, 100));
        assert_eq!(c.best(&need(1, 60), S), Some(w("b")));
    }

    #[test]
    fn binpack_prefers_fewest_free_cores_then_memory_then_smallest_id() {
        const B: PlacementPolicy = PlacementPolicy::Binpack;
        let mut c = CapacityIndex::default();
        let k = vec!["process".to_string()];
        let w = |s: &str| WorkerId(s.into());
        let need = |cores, memory_mb| Shape {
            kind: "process".into(),
            cores,
            memory_mb,
        };
        assert_eq!(c.best(&need(1, 0), B), None, "no worker at all");
        c.insert(&w("b"), &k, (2, 100));
        c.insert(&w("a"), &k, (2, 100));
        c.insert(&w("c"), &k, (2, 50));
        c.insert(&w("d"), &k, (8, 10));
        c.insert(&w("e"), &k, (1, 5));
        c.insert(&w("f"), &k, (0, 500));
        assert_eq!(
            c.best(&need(0, 0), B),
            Some(w("f")),
            "no cores asked: the full one"
        );
        assert_eq!(c.best(&need(1, 0), B), Some(w("e")));
        assert_eq!(
            c.best(&need(1, 6), B),
            Some(w("c")),
            "e lacks memory; c has the least that fits"
        );
        assert_eq!(
            c.best(&need(1, 60), B),
            Some(w("a")),
            "a beats b on a full tie"
        );
        assert_eq!(
            c.best(&need(2, 100), B),
            Some(w("a")),
            "exactly enough of both"
        );
        assert_eq!(
            c.best(&need(2, 101), B),
            None,
            "d has the cores but not the memory"
        );
        assert_eq!(c.best(&need(3, 0), B), Some(w("d")));
        assert_eq!(c.best(&need(9, 0), B), None);
        c.remove(&w("a"), &k, (2, 100));
        assert_eq!(c.best(&need(1, 60), B), Some(w("b")));
    }
}
