//! A short chaos run (the long one is `aloha-bench chaos`): a real 3-member etcd, three HA
//! masters and two workers under continuous submissions, through two leader SIGKILLs, a leader
//! SIGSTOP past its lease, a worker SIGKILL, the loss of an etcd member and of etcd's quorum.
//! No acknowledged app may be lost or stuck, none may run twice at once, and no process may
//! outlive its app. The engine is the harness's `chaos` module.

use std::time::Duration;

use aloha_e2e::chaos::{self, ChaosOpts, Fault};

#[test]
fn no_app_is_lost_stuck_or_run_twice_through_leader_worker_and_etcd_faults() {
    let plan = vec![
        (Fault::LeaderKill, 2),
        (Fault::LeaderStop, 1),
        (Fault::WorkerKill, 1),
        (Fault::EtcdMember, 1),
        (Fault::EtcdQuorum, 1),
    ];
    let opts = ChaosOpts::new(plan.clone(), Duration::from_secs(2));
    let r = chaos::run(&opts);
    eprintln!(
        "chaos: {} apps acknowledged ({} short, {} long), end states {:?}, failovers {:?}, \
         {} scans of /proc (up to {} app processes at once), {:.0} s",
        r.acknowledged(),
        r.acknowledged_short,
        r.acknowledged_long,
        r.end_states,
        r.failovers,
        r.samples,
        r.max_live,
        r.elapsed.as_secs_f64()
    );
    assert!(r.ok(), "the chaos run found problems:\n{}", r.findings(20));
    assert!(
        r.max_live > 0,
        "the sampler saw no app process in {} scans of /proc: it cannot see double runs",
        r.samples
    );
    for (fault, n) in plan {
        assert_eq!(
            r.faults.get(&fault).copied().unwrap_or(0),
            n,
            "{} cycles run",
            fault.name()
        );
    }
    assert_eq!(r.failovers.len(), 2, "one failover per leader SIGKILL");
    assert!(
        r.acknowledged_short > 0 && r.acknowledged_long > 0,
        "submissions went on through the run: {} short, {} long",
        r.acknowledged_short,
        r.acknowledged_long
    );
}
