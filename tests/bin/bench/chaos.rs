//! `chaos`: a real 3-member etcd, three HA masters and two workers under continuous
//! submissions while the leader is SIGKILLed and SIGSTOPped, workers are SIGKILLed and etcd
//! loses a member or its quorum, in cycles; then every acknowledged app is checked. The engine
//! is the harness's (`aloha_e2e::chaos`), shared with `tests/chaos.rs`; this file parses the
//! flags and prints the report.

use std::path::PathBuf;
use std::time::Duration;

use aloha_e2e::chaos::{self, ChaosOpts, ChaosReport, Fault};

use crate::report::{ms, percentile, report};

#[derive(clap::Args)]
pub(crate) struct ChaosArgs {
    /// Cycles of each fault.
    #[arg(long, default_value_t = 50)]
    cycles: usize,
    /// Faults to inject, comma-separated: leader-kill, leader-stop, worker-kill, etcd-member,
    /// etcd-quorum.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "leader-kill,leader-stop,worker-kill,etcd-member,etcd-quorum",
        value_parser = Fault::parse
    )]
    faults: Vec<Fault>,
    /// The masters' --lease-ttl, whole seconds.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Passed to every master as `--fast-failover VALUE`; when absent the flag is not passed
    /// and the masters use their default.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    fast_failover: Option<bool>,
    /// Markdown file whose `bench:chaos` section is replaced with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

pub(crate) fn chaos(a: &ChaosArgs, command_line: &str) -> Result<(), String> {
    if a.cycles == 0 {
        return Err("--cycles must be at least 1".into());
    }
    if a.lease_ttl.subsec_nanos() != 0 || a.lease_ttl.as_secs() == 0 {
        return Err(format!(
            "--lease-ttl must be whole seconds, at least 1s (got {:?})",
            a.lease_ttl
        ));
    }
    let mut kinds = a.faults.clone();
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        return Err("--faults names no fault".into());
    }
    let mut opts = ChaosOpts::new(kinds.iter().map(|&f| (f, a.cycles)).collect(), a.lease_ttl);
    opts.fast_failover = a.fast_failover;
    let r = chaos::run(&opts);
    let table = table(&opts, &r);
    report("chaos", command_line, &table, a.write.as_deref())?;
    if r.ok() {
        Ok(())
    } else {
        eprint!("{}", r.findings(20));
        Err(format!(
            "{} lost, {} stuck, {} double runs, {} orphans, {} other errors",
            r.lost.len(),
            r.stuck.len(),
            r.double_runs.len(),
            r.orphans.len(),
            r.errors.len()
        ))
    }
}

fn table(opts: &ChaosOpts, r: &ChaosReport) -> String {
    let faults: Vec<String> = r
        .faults
        .iter()
        .map(|(f, n)| format!("{} {n}", f.name()))
        .collect();
    let mut failovers = r.failovers.clone();
    failovers.sort();
    let p = |q: f64| {
        percentile(&failovers, q)
            .map(ms)
            .unwrap_or_else(|| "—".into())
    };
    let fast = match opts.fast_failover {
        Some(v) => v.to_string(),
        None => "default".into(),
    };
    let ends: Vec<String> = r
        .end_states
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let mut out = format!(
        "| faults (cycles) | lease TTL | fast failover | acknowledged (short + long) | lost | \
         stuck | double runs | orphans | errors | failover min | median | p99 | max |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n\
         | {} | {}s | {fast} | {} ({} + {}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        faults.join(", "),
        opts.lease_ttl.as_secs(),
        r.acknowledged(),
        r.acknowledged_short,
        r.acknowledged_long,
        r.lost.len(),
        r.stuck.len(),
        r.double_runs.len(),
        r.orphans.len(),
        r.errors.len(),
        p(0.0),
        p(0.5),
        p(0.99),
        p(1.0),
    );
    out.push_str(&format!(
        "\n3-member etcd, 3 masters, 2 workers; a submission every {} ms (every {}th a {} s app, \
         the others {} s), {:.1} min in all. Failover: leader SIGKILL → first 201 from another \
         master. End states: {}; {} apps ran more than one attempt. The sampler scanned /proc {} times, seeing up to {} app processes \
         at once.\n",
        opts.submit_every.as_millis(),
        opts.long_every,
        opts.long_run.as_secs(),
        opts.short_run.as_secs_f64(),
        r.elapsed.as_secs_f64() / 60.0,
        if ends.is_empty() {
            "—".into()
        } else {
            ends.join(", ")
        },
        r.relaunched,
        r.samples,
        r.max_live,
    ));
    out
}
