//! The worker's configuration: defaults < TOML file (`--config`) < `ALOHA_*` env vars < flags.
//! Every key is documented in `config/worker.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything `run` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Master gRPC URLs; the worker finds the leader among them.
    pub masters: Vec<String>,
    /// Worker id; defaults to `worker-<hostname>-<rpc port>`.
    pub id: Option<String>,
    /// WorkerService listen address (port 0 picks a free port).
    pub rpc_addr: SocketAddr,
    /// Address the master should use to reach this worker (defaults to the bound address).
    pub advertise_addr: Option<String>,
    /// Cores offered; defaults to the machine's.
    pub cores: Option<u32>,
    /// Memory offered in MiB; defaults to the machine's.
    pub memory_mb: Option<u64>,
    /// Where app directories are created.
    pub work_dir: PathBuf,
    /// Where `*.so` Application plugins are loaded from; defaults to the binary's directory.
    pub plugin_dir: Option<PathBuf>,
    /// On shutdown, how long to wait for apps to stop before giving up on them.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A file holding the join token every gRPC call between masters and workers must carry
    /// (`aloha_proto::auth`); none: no token is required.
    pub join_token_file: Option<PathBuf>,
    /// The token read from `join_token_file` by [`Args::into_config`].
    #[serde(skip)]
    pub join_token: Option<aloha_proto::auth::JoinToken>,
    /// The cluster's PEM CA: mutual TLS on the gRPC links to and from masters, with
    /// `tls_cert`/`tls_key` (URI SAN `aloha:role:worker`) as this worker's certificate
    /// (`aloha_proto::tls`).
    pub tls_ca: Option<PathBuf>,
    /// This worker's PEM certificate chain for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Loaded from `tls_ca`, `tls_cert` and `tls_key` by [`Args::into_config`].
    #[serde(skip)]
    pub mutual_tls: Option<aloha_proto::tls::MutualTls>,
    /// Per-kind plugin settings, handed to the plugin as its configuration (JSON).
    pub plugins: BTreeMap<String, serde_json::Value>,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            masters: vec!["http://127.0.0.1:7077".into()],
            id: None,
            rpc_addr: "127.0.0.1:0".parse().expect("literal address"),
            advertise_addr: None,
            cores: None,
            memory_mb: None,
            work_dir: PathBuf::from("./aloha-data/worker"),
            plugin_dir: None,
            shutdown_timeout: Duration::from_secs(30),
            join_token_file: None,
            join_token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            mutual_tls: None,
            plugins: BTreeMap::new(),
            log: "info".into(),
        }
    }
}

/// `aloha-worker` flags. Each also reads an `ALOHA_*` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "aloha-worker",
    version,
    about = "The Aloha-rs worker: runs apps for the master"
)]
pub struct Args {
    /// TOML config file (see config/worker.toml); flags and env vars override it.
    #[arg(long, env = "ALOHA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Master gRPC URL, e.g. http://127.0.0.1:7077; repeat for several masters (HA)
    /// [default: http://127.0.0.1:7077].
    #[arg(long = "master", env = "ALOHA_MASTERS", value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Worker id [default: worker-<hostname>-<rpc port>].
    #[arg(long, env = "ALOHA_WORKER_ID")]
    pub id: Option<String>,
    /// WorkerService listen address [default: 127.0.0.1:0, a free port].
    #[arg(long, env = "ALOHA_WORKER_RPC_ADDR")]
    pub rpc_addr: Option<SocketAddr>,
    /// Address the master uses to reach this worker [default: the bound address].
    #[arg(long, env = "ALOHA_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Cores offered [default: the machine's].
    #[arg(long, env = "ALOHA_CORES")]
    pub cores: Option<u32>,
    /// Memory offered, MiB [default: the machine's].
    #[arg(long, env = "ALOHA_MEMORY_MB")]
    pub memory_mb: Option<u64>,
    /// Where app directories go [default: ./aloha-data/worker].
    #[arg(long, env = "ALOHA_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Directory of *.so Application plugins [default: the binary's directory].
    #[arg(long, env = "ALOHA_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// How long shutdown waits for apps to stop, e.g. "30s" [default: 30s].
    #[arg(long, env = "ALOHA_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// File with the join token the masters require (chmod 600).
    #[arg(long, env = "ALOHA_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// PEM CA of the cluster: mutual TLS with the masters (with --tls-cert and --tls-key).
    #[arg(long, env = "ALOHA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) of this worker, with URI SAN aloha:role:worker.
    #[arg(long, env = "ALOHA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ALOHA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log filter [default: info].
    #[arg(long, env = "ALOHA_LOG")]
    pub log: Option<String>,
}

/// What can be wrong with a configuration; shared with the other daemon.
pub use aloha_daemon::ConfigError;

impl aloha_daemon::DaemonConfig for Config {
    fn log_filter(&self) -> &str {
        &self.log
    }
}

impl Args {
    /// Merges defaults, the config file and the flags/env.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => aloha_daemon::load_toml(path)?,
            None => Config::default(),
        };
        if !self.masters.is_empty() {
            cfg.masters = self.masters;
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { cfg.$f = Some(v); } )* };
        }
        set!(
            id,
            advertise_addr,
            cores,
            memory_mb,
            plugin_dir,
            join_token_file,
            tls_ca,
            tls_cert,
            tls_key
        );
        cfg.mutual_tls = match (&cfg.tls_ca, &cfg.tls_cert, &cfg.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some(
                aloha_proto::tls::MutualTls::load(
                    aloha_proto::tls::PeerRole::Worker,
                    cert,
                    key,
                    ca,
                )
                .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            ),
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_ca, tls_cert and tls_key go together (mutual TLS with the masters): \
                     give all three or none"
                        .into(),
                ))
            }
        };
        if let Some(path) = &cfg.join_token_file {
            cfg.join_token =
                Some(aloha_proto::auth::JoinToken::from_file(path).map_err(ConfigError::Invalid)?);
        }
        if let Some(v) = self.rpc_addr {
            cfg.rpc_addr = v;
        }
        if let Some(v) = self.work_dir {
            cfg.work_dir = v;
        }
        if let Some(v) = self.shutdown_timeout {
            cfg.shutdown_timeout = v;
        }
        if let Some(v) = self.log {
            cfg.log = v;
        }
        cfg.masters = cfg
            .masters
            .into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .map(|m| {
                if m.contains("://") {
                    m
                } else {
                    format!("http://{m}")
                }
            })
            .collect();
        if cfg.masters.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one --master is required".into(),
            ));
        }
        if cfg.cores == Some(0) {
            return Err(ConfigError::Invalid("cores must be at least 1".into()));
        }
        Ok(cfg)
    }
}

/// The machine's cores.
pub fn machine_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// The machine's memory in MiB, from /proc/meminfo (1024 when it cannot be read).
pub fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn masters_are_repeatable_and_normalised() {
        let args = Args::try_parse_from([
            "aloha-worker",
            "--master",
            "127.0.0.1:7077",
            "--master",
            "http://127.0.0.1:7078",
        ])
        .unwrap();
        let cfg = args.into_config().unwrap();
        assert_eq!(
            cfg.masters,
            ["http://127.0.0.1:7077", "http://127.0.0.1:7078"]
        );
    }

    #[test]
    fn the_shipped_example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/worker.toml");
        let mut cfg = aloha_daemon::load_toml::<Config>(&path).unwrap();
        // The example documents a process plugin table; everything else is default.
        assert!(cfg.plugins.contains_key("process"));
        cfg.plugins.clear();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn machine_resources_are_positive() {
        assert!(machine_cores() >= 1);
        assert!(machine_memory_mb() >= 1);
    }
}
