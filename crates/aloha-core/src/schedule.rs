//! The placement policy: FIFO over the waiting queue, by resources, spreading across workers
//! (or packing them, [`PlacementPolicy::Binpack`]).
//!
//! * Waiting apps are considered oldest first (by submission sequence).
//! * An app goes to an ALIVE worker that provides its kind and has enough free cores and
//!   memory. By default ([`PlacementPolicy::Spread`]) the one with the most free cores (ties:
//!   most free memory, then smallest id): spreading keeps room on every worker and limits what
//!   one worker's loss takes down. With [`PlacementPolicy::Binpack`] the one with the fewest
//!   free cores that still fit (ties: least free memory, then smallest id): packing fills
//!   workers one after the other, keeps whole workers free for large apps, and lets a burst
//!   of launches to one worker travel together.
//! * An app that fits nowhere right now is skipped, not waited on: smaller apps behind it are
//!   placed (no head-of-line blocking). It keeps its place and is the first candidate next round.
//! * An app larger than every worker's total capacity can never run as things stand; it stays
//!   waiting with a message that says so.

use crate::app::{App, AppId};
use crate::worker::WorkerId;
use serde::{Deserialize, Serialize};

/// Which of the workers that fit an app it goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicy {
    /// The most free cores, then the most free memory, then the smallest id.
    #[default]
    Spread,
    /// The fewest free cores that fit, then the least free memory that fits, then the
    /// smallest id.
    Binpack,
}

impl std::fmt::Display for PlacementPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlacementPolicy::Spread => "spread",
            PlacementPolicy::Binpack => "binpack",
        })
    }
}

impl std::str::FromStr for PlacementPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spread" => Ok(PlacementPolicy::Spread),
            "binpack" => Ok(PlacementPolicy::Binpack),
            other => Err(format!(
                "unknown placement policy {other:?} (expected \"spread\" or \"binpack\")"
            )),
        }
    }
}

/// A worker's capacity as the scheduler sees it for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Worker id.
    pub id: WorkerId,
    /// Total cores.
    pub cores: u32,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Cores not held by apps.
    pub free_cores: u32,
    /// Memory not held by apps, MiB.
    pub free_memory_mb: u64,
    /// Kinds the worker provides.
    pub kinds: Vec<String>,
}

/// What the scheduler decided for one waiting app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Launch the app on the worker.
    Place {
        /// The app.
        app: AppId,
        /// The worker.
        worker: WorkerId,
    },
    /// The app keeps waiting, for the reason given.
    Wait {
        /// The app.
        app: AppId,
        /// Why it cannot be placed now.
        reason: String,
    },
}

/// Decides a placement round. `waiting` may be in any order; `workers` are the ALIVE workers.
/// Pure: the caller applies the decisions.
pub fn place(waiting: &[&App], workers: &[Capacity], policy: PlacementPolicy) -> Vec<Decision> {
    let mut queue: Vec<&App> = waiting.to_vec();
    queue.sort_by_key(|a| a.seq);
    let mut free: Vec<Capacity> = workers.to_vec();
    let mut out = Vec::with_capacity(queue.len());
    for app in queue {
        let provides = |w: &Capacity| w.kinds.contains(&app.kind);
        let best = free
            .iter_mut()
            .filter(|w| {
                provides(w) && w.free_cores >= app.cores && w.free_memory_mb >= app.memory_mb
            })
            .max_by(|a, b| {
                let better = match policy {
                    PlacementPolicy::Spread => a
                        .free_cores
                        .cmp(&b.free_cores)
                        .then(a.free_memory_mb.cmp(&b.free_memory_mb)),
                    PlacementPolicy::Binpack => b
                        .free_cores
                        .cmp(&a.free_cores)
                        .then(b.free_memory_mb.cmp(&a.free_memory_mb)),
                };
                // Smaller id wins a full tie: max_by keeps the last maximum, so reverse.
                better.then(b.id.cmp(&a.id))
            });
        if let Some(w) = best {
            w.free_cores -= app.cores;
            w.free_memory_mb -= app.memory_mb;
            out.push(Decision::Place {
                app: app.id.clone(),
                worker: w.id.clone(),
            });
            continue;
        }
        out.push(Decision::Wait {
            app: app.id.clone(),
            reason: wait_reason(app, &free),
        });
    }
    out
}

fn wait_reason(app: &App, workers: &[Capacity]) -> String {
    let need = format!("{} cores and {} MiB", app.cores, app.memory_mb);
    let candidates: Vec<&Capacity> = workers
        .iter()
        .filter(|w| w.kinds.contains(&app.kind))
        .collect();
    if workers.is_empty() {
        return format!("waiting for an ALIVE worker (needs {need})");
    }
    if candidates.is_empty() {
        return format!("waiting: no ALIVE worker provides kind {:?}", app.kind);
    }
    if !candidates
        .iter()
        .any(|w| w.cores >= app.cores && w.memory_mb >= app.memory_mb)
    {
        let max_cores = candidates.iter().map(|w| w.cores).max().unwrap_or(0);
        let max_mem = candidates.iter().map(|w| w.memory_mb).max().unwrap_or(0);
        return format!(
            "cannot be placed: needs {need} but the largest ALIVE worker has {max_cores} cores and {max_mem} MiB"
        );
    }
    format!("waiting for resources: needs {need} free on one worker")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{AppId, SubmitRequest};
    use chrono::{TimeZone, Utc};

    fn app(seq: u64, cores: i64, mem: i64) -> App {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let req: SubmitRequest = serde_json::from_value(serde_json::json!({
            "name": format!("a{seq}"), "kind": "process", "cores": cores, "memory_mb": mem
        }))
        .unwrap();
        App::submitted(AppId(format!("app-{seq}")), seq, req, at)
    }

    fn worker(id: &str, cores: u32, mem: u64) -> Capacity {
        Capacity {
            id: WorkerId(id.into()),
            cores,
            memory_mb: mem,
            free_cores: cores,
            free_memory_mb: mem,
            kinds: vec!["process".into()],
        }
    }

    fn placed(d: &[Decision]) -> Vec<(String, String)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Place { app, worker } => Some((app.0.clone(), worker.0.clone())),
                Decision::Wait { .. } => None,
            })
            .collect()
    }

    fn reason_for<'a>(d: &'a [Decision], id: &str) -> &'a str {
        d.iter()
            .find_map(|d| match d {
                Decision::Wait { app, reason } if app.0 == id => Some(reason.as_str()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn oldest_first_regardless_of_input_order() {
        let (a1, a2) = (app(1, 2, 0), app(2, 2, 0));
        let d = place(
            &[&a2, &a1],
            &[worker("w", 2, 1000)],
            PlacementPolicy::Spread,
        );
        assert_eq!(placed(&d), [("app-1".into(), "w".into())]);
        assert!(reason_for(&d, "app-2").starts_with("waiting for resources"));
    }

    #[test]
    fn spreads_to_the_worker_with_most_free_cores() {
        let (a1, a2, a3) = (app(1, 1, 0), app(2, 1, 0), app(3, 1, 0));
        let d = place(
            &[&a1, &a2, &a3],
            &[worker("w1", 2, 100), worker("w2", 3, 100)],
            PlacementPolicy::Spread,
        );
        assert_eq!(
            placed(&d),
            [
                ("app-1".into(), "w2".into()),
                ("app-2".into(), "w1".into()), // tie on free cores (2, 2) and memory: smaller id
                ("app-3".into(), "w2".into()),
            ]
        );
    }

    #[test]
    fn binpack_fills_the_fullest_worker_that_fits_first() {
        let apps: Vec<App> = (1..=4).map(|i| app(i, 1, 10)).collect();
        let refs: Vec<&App> = apps.iter().collect();
        let mut w3 = worker("w3", 4, 100);
        w3.free_cores = 1;
        w3.free_memory_mb = 5; // too little memory left for any of them
        let d = place(
            &refs,
            &[worker("w1", 3, 100), worker("w2", 2, 100), w3],
            PlacementPolicy::Binpack,
        );
        assert_eq!(
            placed(&d),
            [
                ("app-1".into(), "w2".into()),
                ("app-2".into(), "w2".into()),
                ("app-3".into(), "w1".into()),
                ("app-4".into(), "w1".into()),
            ]
        );
        // A full tie goes to the smaller id.
        let d = place(
            &refs[..1],
            &[worker("b", 2, 100), worker("a", 2, 100)],
            PlacementPolicy::Binpack,
        );
        assert_eq!(placed(&d), [("app-1".into(), "a".into())]);
    }

    #[test]
    fn a_placement_policy_reads_and_prints_its_name() {
        for p in [PlacementPolicy::Spread, PlacementPolicy::Binpack] {
            assert_eq!(p.to_string().parse::<PlacementPolicy>(), Ok(p));
        }
        assert_eq!(PlacementPolicy::default(), PlacementPolicy::Spread);
        let err = "pack".parse::<PlacementPolicy>().unwrap_err();
        assert!(err.contains("\"spread\" or \"binpack\""), "{err}");
    }

    #[test]
    fn a_big_app_does_not_block_smaller_ones_behind_it() {
        let mut w = worker("w", 4, 1000);
        w.free_cores = 2;
        let (big, small) = (app(1, 3, 0), app(2, 1, 0));
        let d = place(&[&big, &small], &[w], PlacementPolicy::Spread);
        assert_eq!(placed(&d), [("app-2".into(), "w".into())]);
        assert!(reason_for(&d, "app-1").contains("waiting for resources"));
    }

    #[test]
    fn memory_counts_too() {
        let (a, b) = (app(1, 1, 600), app(2, 1, 600));
        let d = place(&[&a, &b], &[worker("w", 8, 1000)], PlacementPolicy::Spread);
        assert_eq!(placed(&d).len(), 1);
    }

    #[test]
    fn an_app_larger_than_every_worker_says_so() {
        let a = app(1, 16, 0);
        let d = place(
            &[&a],
            &[worker("w1", 4, 100), worker("w2", 8, 100)],
            PlacementPolicy::Spread,
        );
        assert_eq!(
            reason_for(&d, "app-1"),
            "cannot be placed: needs 16 cores and 0 MiB but the largest ALIVE worker has 8 cores and 100 MiB"
        );
    }

    #[test]
    fn kinds_must_match() {
        let mut a = app(1, 1, 0);
        a.kind = "spark".into();
        let d = place(&[&a], &[worker("w", 4, 100)], PlacementPolicy::Spread);
        assert!(placed(&d).is_empty());
        assert!(reason_for(&d, "app-1").contains("kind \"spark\""));
        let d = place(&[&a], &[], PlacementPolicy::Spread);
        assert!(reason_for(&d, "app-1").contains("ALIVE worker"));
    }
}
