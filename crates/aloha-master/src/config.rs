//! The master's configuration: defaults, overridden by a TOML file (`--config`), overridden by
//! `ALOHA_*` environment variables and flags. Every key is documented in `config/master.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything `run` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// REST API and metrics listen address.
    pub http_addr: SocketAddr,
    /// gRPC listen address for workers.
    pub rpc_addr: SocketAddr,
    /// Spark's REST submission protocol (`spark-submit --deploy-mode cluster`) listens here;
    /// off when unset. Open on loopback only; see `submission_jws_secret_file` and
    /// docs/rest-api.md.
    pub submission_addr: Option<SocketAddr>,
    /// A file (mode 0600) with the base64url secret of Spark's `JWSFilter`: requests to
    /// `submission_addr` then need `Authorization: Bearer <jws>` signed with it (HS256), or
    /// (with `auth = "required"`) an Aloha token; see [`crate::jws`].
    pub submission_jws_secret_file: Option<PathBuf>,
    /// The secret read from `submission_jws_secret_file` by [`Args::into_config`].
    #[serde(skip)]
    pub submission_jws: Option<crate::jws::JwsKey>,
    /// A PEM certificate chain: with `tls_key`, the REST API and the console are served over
    /// HTTPS (TLS 1.2 and 1.3, rustls).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The cluster's PEM CA: mutual TLS on every gRPC link (workers, standbys, the leader). This
    /// master's certificate is `grpc_tls_cert` (or `tls_cert`) and carries the URI SAN
    /// `aloha:role:master`; peers must present certificates issued by this CA with their role
    /// (`aloha_proto::tls`).
    pub tls_ca: Option<PathBuf>,
    /// The PEM certificate chain for gRPC with `tls_ca`; unset: `tls_cert`.
    pub grpc_tls_cert: Option<PathBuf>,
    /// The PEM private key of `grpc_tls_cert`; unset: `tls_key`.
    pub grpc_tls_key: Option<PathBuf>,
    /// Loaded from `tls_ca` and the gRPC certificate by [`Args::into_config`].
    #[serde(skip)]
    pub mutual_tls: Option<aloha_proto::tls::MutualTls>,
    /// HTTP address advertised to clients and other masters (defaults to `http_addr`).
    pub advertise_http: Option<String>,
    /// gRPC address advertised to workers (defaults to `rpc_addr`).
    pub advertise_rpc: Option<String>,
    /// Where the embedded database lives (single-node mode).
    pub state_dir: PathBuf,
    /// The embedded database's page cache, MiB (single-node mode).
    pub redb_cache_mb: u64,
    /// A worker silent this long is declared DEAD.
    #[serde(with = "humantime_serde")]
    pub worker_timeout: Duration,
    /// App kinds accepted even before a worker providing them has registered.
    pub allowed_kinds: Vec<String>,
    /// etcd client URLs; when set, the master runs in HA mode with its state in etcd.
    pub etcd_endpoints: Vec<String>,
    /// HA: the etcd user (etcd's authentication); with `etcd_password_file`.
    pub etcd_user: Option<String>,
    /// HA: a file (mode 0600) holding `etcd_user`'s password.
    pub etcd_password_file: Option<PathBuf>,
    /// The password read from `etcd_password_file` by [`Args::into_config`].
    #[serde(skip)]
    pub etcd_password: Option<String>,
    /// HA: the PEM CA that signed etcd's certificates; etcd is then reached over TLS
    /// (`https://` endpoints).
    pub etcd_ca: Option<PathBuf>,
    /// HA: a PEM client certificate for etcd's `--client-cert-auth` (with `etcd_key`).
    pub etcd_cert: Option<PathBuf>,
    /// HA: the PEM key of `etcd_cert`.
    pub etcd_key: Option<PathBuf>,
    /// Cluster name: HA state lives under `/aloha/<cluster_name>/` in etcd.
    pub cluster_name: String,
    /// The leader's etcd lease TTL: how long a dead leader holds leadership at most.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// HA: standbys watch the leader over a gRPC stream and, when it breaks and the leader
    /// cannot be dialled again, revoke its lease so a standby takes over at once instead of
    /// after the lease TTL. A false positive (a live leader the standby cannot reach) costs a
    /// leadership change, never data: the old leader's writes are fenced.
    pub fast_failover: bool,
    /// Most events kept in the event log.
    pub event_retention: u64,
    /// Events older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub event_max_age: Duration,
    /// Most terminal apps (FINISHED, FAILED, KILLED, ERROR) kept; the oldest beyond are removed.
    pub retain_finished: usize,
    /// Terminal apps are removed this long after they ended.
    #[serde(with = "humantime_serde")]
    pub retain_finished_for: Duration,
    /// DEAD workers are forgotten this long after they died.
    #[serde(with = "humantime_serde")]
    pub retain_dead_workers_for: Duration,
    /// Which of the workers that fit an app it goes to: `spread` (most free cores) or
    /// `binpack` (fewest free cores that fit).
    pub placement: aloha_core::schedule::PlacementPolicy,
    /// A file holding the join token every gRPC call between masters and workers must carry
    /// (`aloha_proto::auth`); none: no token is required.
    pub join_token_file: Option<PathBuf>,
    /// The token read from `join_token_file` by [`Args::into_config`].
    #[serde(skip)]
    pub join_token: Option<aloha_proto::auth::JoinToken>,
    /// REST API authentication: `required` or `off`; unset: `off` when `http_addr` is a
    /// loopback address, `required` otherwise ([`Config::auth_mode`]).
    pub auth: Option<crate::auth::AuthMode>,
    /// A file (mode 0600) holding the bootstrap admin token.
    pub bootstrap_token_file: Option<PathBuf>,
    /// The token read from `bootstrap_token_file` by [`Args::into_config`].
    #[serde(skip)]
    pub bootstrap_token: Option<aloha_proto::auth::JoinToken>,
    /// Listener plugins (`[[listeners]]`).
    pub listeners: Vec<crate::listeners::ListenerSpec>,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: "127.0.0.1:8080".parse().expect("literal address"),
            rpc_addr: "127.0.0.1:7077".parse().expect("literal address"),
            submission_addr: None,
            submission_jws_secret_file: None,
            submission_jws: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            grpc_tls_cert: None,
            grpc_tls_key: None,
            mutual_tls: None,
            advertise_http: None,
            advertise_rpc: None,
            state_dir: PathBuf::from("./aloha-data/master"),
            redb_cache_mb: crate::store::redb_default_cache_mb(),
            worker_timeout: Duration::from_secs(10),
            allowed_kinds: vec!["process".into(), "spark".into(), "flink".into()],
            etcd_endpoints: Vec::new(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_password: None,
            cluster_name: "aloha".into(),
            lease_ttl: Duration::from_secs(5),
            fast_failover: true,
            event_retention: 100_000,
            event_max_age: Duration::from_secs(7 * 24 * 3600),
            retain_finished: 10_000,
            retain_finished_for: Duration::from_secs(7 * 24 * 3600),
            retain_dead_workers_for: Duration::from_secs(3600),
            placement: aloha_core::schedule::PlacementPolicy::Spread,
            join_token_file: None,
            join_token: None,
            auth: None,
            bootstrap_token_file: None,
            bootstrap_token: None,
            listeners: Vec::new(),
            log: "info".into(),
        }
    }
}

impl Config {
    /// The gRPC mutual TLS setup of `tls_ca` and `grpc_tls_cert`/`grpc_tls_key` (or
    /// `tls_cert`/`tls_key`); none without `tls_ca`.
    fn load_mutual_tls(&self) -> Result<Option<aloha_proto::tls::MutualTls>, ConfigError> {
        if self.grpc_tls_cert.is_some() != self.grpc_tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "grpc_tls_cert and grpc_tls_key go together: give both or neither".into(),
            ));
        }
        let Some(ca) = &self.tls_ca else {
            if self.grpc_tls_cert.is_some() {
                return Err(ConfigError::Invalid(
                    "grpc_tls_cert is for mutual TLS: give tls_ca (the cluster CA) too".into(),
                ));
            }
            return Ok(None);
        };
        let (cert, key) = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(c), Some(k)) => (c, k),
            _ => match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls_ca needs this master's certificate and key: grpc_tls_cert and \
                         grpc_tls_key, or tls_cert and tls_key"
                            .into(),
                    ))
                }
            },
        };
        aloha_proto::tls::MutualTls::load(aloha_proto::tls::PeerRole::Master, cert, key, ca)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The heartbeat interval workers are told to use: a quarter of the timeout, so three
    /// heartbeats can be lost before a worker is declared dead.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.worker_timeout / 4).max(Duration::from_millis(50))
    }

    /// Whether the REST API requires tokens: as configured, else `off` on a loopback HTTP
    /// address (only this host can call it) and `required` on any other.
    pub fn auth_mode(&self) -> crate::auth::AuthMode {
        self.auth.unwrap_or(if self.http_addr.ip().is_loopback() {
            crate::auth::AuthMode::Off
        } else {
            crate::auth::AuthMode::Required
        })
    }

    /// The HTTP URL clients should use for this master.
    pub fn http_url(&self) -> String {
        match &self.advertise_http {
            Some(a) if a.starts_with("http") => a.clone(),
            Some(a) => format!("http://{a}"),
            None if self.tls_cert.is_some() => format!("https://{}", self.http_addr),
            None => format!("http://{}", self.http_addr),
        }
    }

    /// The gRPC address workers should use for this master.
    pub fn rpc_url(&self) -> String {
        match &self.advertise_rpc {
            Some(a) if a.starts_with("http") => a.clone(),
            Some(a) => format!("http://{a}"),
            None => format!("http://{}", self.rpc_addr),
        }
    }
}

/// `aloha-master` flags. Each also reads an `ALOHA_*` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "aloha-master",
    version,
    about = "The Aloha-rs master: schedules apps onto workers"
)]
pub struct Args {
    /// TOML config file (see config/master.toml); flags and env vars override it.
    #[arg(long, env = "ALOHA_CONFIG")]
    pub config: Option<PathBuf>,
    /// REST API listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "ALOHA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// gRPC listen address for workers [default: 127.0.0.1:7077].
    #[arg(long, env = "ALOHA_RPC_ADDR")]
    pub rpc_addr: Option<SocketAddr>,
    /// Serve Spark's REST submission protocol here, e.g. 127.0.0.1:6066 [default: off].
    /// Open on loopback; elsewhere it needs --auth required or --submission-jws-secret-file.
    #[arg(long, env = "ALOHA_SUBMISSION_ADDR")]
    pub submission_addr: Option<SocketAddr>,
    /// File (chmod 600) with a base64url secret, as Spark's JWSFilter takes it: requests to
    /// --submission-addr then need `Authorization: Bearer <jws>` signed with it (HS256).
    #[arg(long, env = "ALOHA_SUBMISSION_JWS_SECRET_FILE")]
    pub submission_jws_secret_file: Option<PathBuf>,
    /// HTTP address advertised to clients [default: the http address].
    #[arg(long, env = "ALOHA_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// gRPC address advertised to workers [default: the rpc address].
    #[arg(long, env = "ALOHA_ADVERTISE_RPC")]
    pub advertise_rpc: Option<String>,
    /// Directory of the embedded state database [default: ./aloha-data/master].
    #[arg(long, env = "ALOHA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Page cache of the embedded database, MiB [default: 64].
    #[arg(long, env = "ALOHA_REDB_CACHE_MB")]
    pub redb_cache_mb: Option<u64>,
    /// A worker silent this long is declared DEAD, e.g. "10s" [default: 10s].
    #[arg(long, env = "ALOHA_WORKER_TIMEOUT", value_parser = humantime::parse_duration)]
    pub worker_timeout: Option<Duration>,
    /// etcd client URLs, comma-separated (e.g. http://127.0.0.1:2379); switches on HA mode.
    #[arg(long, env = "ALOHA_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Cluster name, the etcd key prefix /aloha/<name>/ [default: aloha].
    /// HA: the etcd user, when etcd has authentication enabled (with --etcd-password-file).
    #[arg(long, env = "ALOHA_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// HA: a file (chmod 600) with the etcd user's password.
    #[arg(long, env = "ALOHA_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// HA: PEM CA of etcd's certificates: talk to etcd over TLS (https:// endpoints).
    #[arg(long, env = "ALOHA_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// HA: PEM client certificate for etcd (with --etcd-key and --etcd-ca).
    #[arg(long, env = "ALOHA_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,
    /// HA: PEM key of --etcd-cert.
    #[arg(long, env = "ALOHA_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    #[arg(long, env = "ALOHA_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Leader lease TTL in HA mode, whole seconds, e.g. "5s" [default: 5s].
    #[arg(long, env = "ALOHA_LEASE_TTL", value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// A listener plugin: PATH or PATH=JSON-CONFIG; repeatable (adds to the config file's).
    /// HA: revoke a crashed leader's lease as soon as its liveness stream breaks and it cannot
    /// be dialled again (default true); false waits for the lease TTL.
    #[arg(long, env = "ALOHA_FAST_FAILOVER", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub fast_failover: Option<bool>,
    /// PEM certificate (chain) to serve the REST API and console over HTTPS (with --tls-key).
    #[arg(long, env = "ALOHA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ALOHA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA of the cluster: mutual TLS on every gRPC link; peers need certificates from it
    /// with their role (URI SAN aloha:role:master / aloha:role:worker).
    #[arg(long, env = "ALOHA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) of this master for gRPC, with URI SAN aloha:role:master
    /// [default: --tls-cert].
    #[arg(long, env = "ALOHA_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert [default: --tls-key].
    #[arg(long, env = "ALOHA_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// REST API authentication [default: off on a loopback --http-addr, required otherwise].
    #[arg(long, env = "ALOHA_AUTH", value_enum)]
    pub auth: Option<crate::auth::AuthMode>,
    /// File (chmod 600) with the bootstrap admin token for the REST API.
    #[arg(long, env = "ALOHA_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// File with the join token workers and masters must present (chmod 600).
    #[arg(long, env = "ALOHA_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    #[arg(long = "listener", env = "ALOHA_LISTENERS", value_delimiter = ';')]
    pub listeners: Vec<String>,
    /// Most events kept in the event log [default: 100000].
    #[arg(long, env = "ALOHA_EVENT_RETENTION")]
    pub event_retention: Option<u64>,
    /// Events older than this are deleted, e.g. "7d" [default: 7d].
    #[arg(long, env = "ALOHA_EVENT_MAX_AGE", value_parser = humantime::parse_duration)]
    pub event_max_age: Option<Duration>,
    /// Most terminal apps kept; older ones are removed (with an app.expired event) [default: 10000].
    #[arg(long, env = "ALOHA_RETAIN_FINISHED")]
    pub retain_finished: Option<usize>,
    /// Terminal apps are removed this long after they ended, e.g. "7d" [default: 7d].
    #[arg(long, env = "ALOHA_RETAIN_FINISHED_FOR", value_parser = humantime::parse_duration)]
    pub retain_finished_for: Option<Duration>,
    /// DEAD workers are forgotten this long after they died, e.g. "1h" [default: 1h].
    #[arg(long, env = "ALOHA_RETAIN_DEAD_WORKERS_FOR", value_parser = humantime::parse_duration)]
    pub retain_dead_workers_for: Option<Duration>,
    /// Where an app goes among the workers that fit it: "spread" (the most free cores) or
    /// "binpack" (the fewest free cores that fit) [default: spread].
    #[arg(long, env = "ALOHA_PLACEMENT")]
    pub placement: Option<aloha_core::schedule::PlacementPolicy>,
    /// Log filter, e.g. "info" or "aloha_master=debug" [default: info].
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
        if let Some(v) = self.http_addr {
            cfg.http_addr = v;
        }
        if let Some(v) = self.rpc_addr {
            cfg.rpc_addr = v;
        }
        if let Some(v) = self.submission_addr {
            cfg.submission_addr = Some(v);
        }
        if let Some(v) = self.submission_jws_secret_file {
            cfg.submission_jws_secret_file = Some(v);
        }
        if let Some(path) = &cfg.submission_jws_secret_file {
            cfg.submission_jws =
                Some(crate::jws::JwsKey::from_file(path).map_err(ConfigError::Invalid)?);
        }
        if let Some(v) = self.advertise_http {
            cfg.advertise_http = Some(v);
        }
        if let Some(v) = self.advertise_rpc {
            cfg.advertise_rpc = Some(v);
        }
        if let Some(v) = self.state_dir {
            cfg.state_dir = v;
        }
        if let Some(v) = self.redb_cache_mb {
            cfg.redb_cache_mb = v;
        }
        if let Some(v) = self.worker_timeout {
            cfg.worker_timeout = v;
        }
        if let Some(v) = self.log {
            cfg.log = v;
        }
        if !self.etcd_endpoints.is_empty() {
            cfg.etcd_endpoints = self.etcd_endpoints;
        }
        if let Some(v) = self.etcd_ca {
            cfg.etcd_ca = Some(v);
        }
        if let Some(v) = self.etcd_cert {
            cfg.etcd_cert = Some(v);
        }
        if let Some(v) = self.etcd_key {
            cfg.etcd_key = Some(v);
        }
        if cfg.etcd_cert.is_some() != cfg.etcd_key.is_some()
            || (cfg.etcd_cert.is_some() && cfg.etcd_ca.is_none())
        {
            return Err(ConfigError::Invalid(
                "etcd_cert and etcd_key go together, and need etcd_ca".into(),
            ));
        }
        if let Some(v) = self.etcd_user {
            cfg.etcd_user = Some(v);
        }
        if let Some(v) = self.etcd_password_file {
            cfg.etcd_password_file = Some(v);
        }
        match (&cfg.etcd_user, &cfg.etcd_password_file) {
            (Some(_), Some(path)) => {
                cfg.etcd_password = Some(
                    aloha_proto::auth::read_secret_file(path, "etcd password")
                        .map_err(ConfigError::Invalid)?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "etcd_user and etcd_password_file go together: give both or neither".into(),
                ))
            }
        }
        if let Some(v) = self.cluster_name {
            cfg.cluster_name = v;
        }
        if let Some(v) = self.lease_ttl {
            cfg.lease_ttl = v;
        }
        if let Some(v) = self.auth {
            cfg.auth = Some(v);
        }
        if let Some(v) = self.tls_cert {
            cfg.tls_cert = Some(v);
        }
        if let Some(v) = self.tls_key {
            cfg.tls_key = Some(v);
        }
        if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key go together: give both or neither".into(),
            ));
        }
        if let Some(v) = self.tls_ca {
            cfg.tls_ca = Some(v);
        }
        if let Some(v) = self.grpc_tls_cert {
            cfg.grpc_tls_cert = Some(v);
        }
        if let Some(v) = self.grpc_tls_key {
            cfg.grpc_tls_key = Some(v);
        }
        cfg.mutual_tls = cfg.load_mutual_tls()?;
        if let Some(v) = self.bootstrap_token_file {
            cfg.bootstrap_token_file = Some(v);
        }
        if let Some(path) = &cfg.bootstrap_token_file {
            cfg.bootstrap_token =
                Some(aloha_proto::auth::JoinToken::from_file(path).map_err(|e| {
                    ConfigError::Invalid(e.replace("join token", "bootstrap token"))
                })?);
        }
        if let Some(v) = self.join_token_file {
            cfg.join_token_file = Some(v);
        }
        if let Some(path) = &cfg.join_token_file {
            cfg.join_token =
                Some(aloha_proto::auth::JoinToken::from_file(path).map_err(ConfigError::Invalid)?);
        }
        if let Some(v) = self.fast_failover {
            cfg.fast_failover = v;
        }
        if let Some(v) = self.event_retention {
            cfg.event_retention = v;
        }
        if let Some(v) = self.event_max_age {
            cfg.event_max_age = v;
        }
        if let Some(v) = self.retain_finished {
            cfg.retain_finished = v;
        }
        if let Some(v) = self.retain_finished_for {
            cfg.retain_finished_for = v;
        }
        if let Some(v) = self.retain_dead_workers_for {
            cfg.retain_dead_workers_for = v;
        }
        if let Some(v) = self.placement {
            cfg.placement = v;
        }
        for l in &self.listeners {
            cfg.listeners
                .push(crate::listeners::ListenerSpec::parse_flag(l).map_err(ConfigError::Invalid)?);
        }
        if cfg.event_retention == 0 {
            return Err(ConfigError::Invalid(
                "event_retention must be at least 1".into(),
            ));
        }
        cfg.etcd_endpoints.retain(|e| !e.trim().is_empty());
        if cfg.cluster_name.is_empty()
            || !cfg
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Invalid(format!(
                "cluster_name must be non-empty letters, digits, '-' or '_' (got {:?})",
                cfg.cluster_name
            )));
        }
        if cfg.lease_ttl < Duration::from_secs(1) || cfg.lease_ttl.subsec_nanos() != 0 {
            return Err(ConfigError::Invalid(format!(
                "lease_ttl must be a whole number of seconds, at least 1s (got {})",
                humantime::format_duration(cfg.lease_ttl)
            )));
        }
        if cfg.worker_timeout < Duration::from_millis(200) {
            return Err(ConfigError::Invalid(format!(
                "worker_timeout must be at least 200ms (got {})",
                humantime::format_duration(cfg.worker_timeout)
            )));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "worker_timeout = \"30s\"\nstate_dir = \"/var/lib/aloha\"\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "aloha-master",
            "--config",
            file.to_str().unwrap(),
            "--worker-timeout",
            "5s",
        ])
        .unwrap();
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.worker_timeout, Duration::from_secs(5));
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/aloha"));
        assert_eq!(cfg.http_addr, Config::default().http_addr);
        assert_eq!(cfg.submission_addr, None, "off by default");
    }

    #[test]
    fn the_submission_address_comes_from_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "submission_addr = \"127.0.0.1:6066\"\n").unwrap();
        let from_file = Args::try_parse_from(["aloha-master", "--config", file.to_str().unwrap()])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            from_file.submission_addr,
            Some("127.0.0.1:6066".parse().unwrap())
        );
        let from_flag = Args::try_parse_from([
            "aloha-master",
            "--config",
            file.to_str().unwrap(),
            "--submission-addr",
            "127.0.0.1:7066",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            from_flag.submission_addr,
            Some("127.0.0.1:7066".parse().unwrap())
        );
    }

    #[test]
    fn the_placement_policy_comes_from_the_file_or_the_flag() {
        use aloha_core::schedule::PlacementPolicy;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "placement = \"binpack\"\n").unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["aloha-master", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).map(|a| a.into_config().unwrap().placement)
        };
        assert_eq!(parse(&[]).unwrap(), PlacementPolicy::Binpack);
        assert_eq!(
            parse(&["--placement", "spread"]).unwrap(),
            PlacementPolicy::Spread
        );
        let err = parse(&["--placement", "pack"]).unwrap_err().to_string();
        assert!(err.contains("expected \"spread\" or \"binpack\""), "{err}");
        std::fs::write(&file, "placement = \"pack\"\n").unwrap();
        let err = aloha_daemon::load_toml::<Config>(&file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pack"), "{err}");
    }

    #[test]
    fn the_shipped_example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/master.toml");
        assert_eq!(
            aloha_daemon::load_toml::<Config>(&path).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_and_tiny_timeouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "worker_timout = \"30s\"\n").unwrap();
        let err = aloha_daemon::load_toml::<Config>(&file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let args = Args::try_parse_from(["aloha-master", "--worker-timeout", "1ms"]).unwrap();
        assert!(args.into_config().is_err());
    }
}
