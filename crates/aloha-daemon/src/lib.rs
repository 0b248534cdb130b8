//! # aloha-daemon
//!
//! The start-up and shutdown both daemons (`aloha-master`, `aloha-worker`) share, so that they
//! behave alike and the code exists once. Each daemon keeps its own `Config` and `Args`; this
//! crate only knows how to load a TOML file, set up logging, wait for the shutdown signal, and
//! turn the outcome into an exit code.
//!
//! ## Layout
//! - [`main`]: the whole `main` of a daemon: config → logging → `run` → exit code.
//! - [`load_toml`] and [`ConfigError`]: the config file and what can be wrong with a config.
//! - [`init_logging`]: `tracing` to stderr.
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C.
//! - [`unblock_shutdown_signals`]: a daemon started with them blocked can still be stopped.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;

use serde::de::DeserializeOwned;

/// The exit code when the configuration (flags, env vars, file) cannot be used.
pub const EXIT_CONFIG: i32 = 2;

/// The exit code when the daemon started but `run` failed (e.g. its port is taken).
pub const EXIT_RUN: i32 = 1;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config (including keys the config does not have).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Reads the TOML file at `path` as a `T`. Keys missing from the file take `T`'s defaults
/// (`#[serde(default)]`); keys `T` does not have are refused when `T` says
/// `#[serde(deny_unknown_fields)]`, as both daemons' `Config`s do, so a typo is not silently
/// ignored. Both errors name the file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.message().to_string(),
    })
}

/// Sets up logging to stderr with the configured filter (tracing-subscriber `EnvFilter` syntax);
/// `RUST_LOG` wins when set. Colours only when stderr is a terminal. A second call does nothing.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGTERM or Ctrl-C (SIGINT), whichever comes first. The handlers are installed
/// when the future is first polled. If SIGTERM cannot be watched, only Ctrl-C is.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The signals [`shutdown_signal`] waits for.
const SHUTDOWN_SIGNALS: [std::ffi::c_int; 2] = [sys::SIGTERM, sys::SIGINT];

/// Unblocks the signals the daemons handle (SIGTERM, SIGINT) in the calling thread.
///
/// A blocked signal mask is inherited across exec: a daemon started by a parent that blocks
/// SIGTERM would otherwise keep it pending forever, and could only be stopped with SIGKILL.
/// A signal sent to the process goes to any one thread that does not block it, so unblocking
/// it in one long-lived thread is enough; [`main`] does it in the thread that runs it, which
/// `#[tokio::main]`'s `block_on` keeps for the daemon's whole life (the runtime's worker
/// threads, made earlier, keep the inherited mask; threads made later from this one do not).
/// The apps the worker starts get a clean mask of their own from the process plugin.
pub fn unblock_shutdown_signals() -> std::io::Result<()> {
    sys::unblock(&SHUTDOWN_SIGNALS)
}

/// The three POSIX calls [`unblock_shutdown_signals`] needs, declared as in `<signal.h>`
/// (libc is only a dev-dependency of this crate).
mod sys {
    use std::ffi::c_int;

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    const SIG_UNBLOCK: c_int = 1;

    /// `sigset_t` on Linux, glibc and musl alike: 1024 bits, only ever touched through
    /// `sigemptyset`/`sigaddset`.
    #[repr(C)]
    struct SigSet([u64; 16]);

    extern "C" {
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigaddset(set: *mut SigSet, signal: c_int) -> c_int;
        fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    }

    /// Unblocks `signals` in the calling thread.
    pub fn unblock(signals: &[c_int]) -> std::io::Result<()> {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a valid, writable sigset_t for all three calls; the old mask is not
        // asked for (null is allowed).
        unsafe {
            if sigemptyset(&mut set) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            for signal in signals {
                if sigaddset(&mut set, *signal) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            match pthread_sigmask(SIG_UNBLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(()),
                error => Err(std::io::Error::from_raw_os_error(error)),
            }
        }
    }
}

/// What [`main`] needs from a daemon's `Config`.
pub trait DaemonConfig {
    /// The log filter for [`init_logging`].
    fn log_filter(&self) -> &str;
}

/// Why a daemon exits non-zero: the code and the one line printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// [`EXIT_CONFIG`] or [`EXIT_RUN`].
    pub code: i32,
    /// `<bin>: <error>`; a `run` error with its causes, `: `-separated.
    pub message: String,
}

/// A daemon's `main`: with the merged `config`, set up logging and `run` it. Exits the process
/// with [`EXIT_CONFIG`] and `<bin>: <error>` on stderr when the config cannot be used, with
/// [`EXIT_RUN`] and `<bin>: <error: causes>` when `run` fails; returns when `run` succeeds.
///
/// ```no_run
/// # struct Config { log: String }
/// # impl aloha_daemon::DaemonConfig for Config { fn log_filter(&self) -> &str { &self.log } }
/// # async fn run(_: Config) -> anyhow::Result<()> { Ok(()) }
/// # fn into_config() -> Result<Config, aloha_daemon::ConfigError> { todo!() }
/// #[tokio::main]
/// async fn main() {
///     aloha_daemon::main("aloha-example", into_config(), run).await
/// }
/// ```
pub async fn main<C, E, F, Fut>(bin: &str, config: Result<C, E>, run: F)
where
    C: DaemonConfig,
    E: Display,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Before anything else, so that every thread made from here on inherits it. It cannot fail
    // with these valid arguments; should it, SIGKILL still stops the daemon.
    if let Err(e) = unblock_shutdown_signals() {
        eprintln!("{bin}: cannot unblock SIGTERM and SIGINT: {e}");
    }
    if let Err(exit) = start(bin, config, run).await {
        eprintln!("{}", exit.message);
        std::process::exit(exit.code);
    }
}

/// [`main`] without the printing and exiting, so the outcome can be tested.
pub async fn start<C, E, F, Fut>(bin: &str, config: Result<C, E>, run: F) -> Result<(), Exit>
where
    C: DaemonConfig,
    E: Display,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cfg = config.map_err(|e| Exit {
        code: EXIT_CONFIG,
        message: format!("{bin}: {e}"),
    })?;
    init_logging(cfg.log_filter());
    run(cfg).await.map_err(|e| Exit {
        code: EXIT_RUN,
        message: format!("{bin}: {e:#}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        name: String,
        port: u16,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                name: "aloha".into(),
                port: 8080,
            }
        }
    }

    impl DaemonConfig for Sample {
        fn log_filter(&self) -> &str {
            "off"
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn missing_keys_take_the_defaults() {
        let (_dir, path) = file("port = 9090\n");
        let got: Sample = load_toml(&path).unwrap();
        assert_eq!(
            got,
            Sample {
                name: "aloha".into(),
                port: 9090
            }
        );
        let (_dir, path) = file("");
        assert_eq!(load_toml::<Sample>(&path).unwrap(), Sample::default());
    }

    #[test]
    fn unknown_keys_are_refused_and_the_error_names_the_file() {
        let (_dir, path) = file("prot = 9090\n");
        let err = load_toml::<Sample>(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("invalid config file {}: ", path.display())),
            "{text}"
        );
        assert!(text.contains("unknown field `prot`"), "{text}");
    }

    #[test]
    fn bad_toml_and_wrong_types_are_parse_errors() {
        for bad in ["port = ", "port = \"eighty\"\n", "port = 70000\n"] {
            let (_dir, path) = file(bad);
            let err = load_toml::<Sample>(&path).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{bad:?}: {err:?}");
            assert!(err.to_string().contains("daemon.toml"), "{err}");
        }
    }

    #[test]
    fn an_unreadable_file_is_a_read_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = load_toml::<Sample>(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read config file {}: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_say_so() {
        assert_eq!(
            ConfigError::Invalid("cores must be at least 1".into()).to_string(),
            "invalid configuration: cores must be at least 1"
        );
    }

    #[tokio::test]
    async fn a_bad_config_exits_2_without_running() {
        let config: Result<Sample, ConfigError> = Err(ConfigError::Invalid("no".into()));
        let exit = start("aloha-test", config, |_| async {
            panic!("run must not be called with a bad config")
        })
        .await
        .unwrap_err();
        assert_eq!(
            exit,
            Exit {
                code: EXIT_CONFIG,
                message: "aloha-test: invalid configuration: no".into()
            }
        );
    }

    #[tokio::test]
    async fn a_failed_run_exits_1_with_its_causes() {
        let exit = start(
            "aloha-test",
            Ok::<_, ConfigError>(Sample::default()),
            |cfg| async move {
                Err(anyhow::anyhow!("address in use")
                    .context(format!("cannot listen on 127.0.0.1:{}", cfg.port)))
            },
        )
        .await
        .unwrap_err();
        assert_eq!(exit.code, EXIT_RUN);
        assert_eq!(
            exit.message,
            "aloha-test: cannot listen on 127.0.0.1:8080: address in use"
        );
    }

    #[tokio::test]
    async fn a_clean_run_is_ok() {
        let ran = start(
            "aloha-test",
            Ok::<_, ConfigError>(Sample::default()),
            |_| async { Ok(()) },
        )
        .await;
        assert_eq!(ran, Ok(()));
    }

    /// The calling thread's blocked signals, from `/proc/thread-self/status`.
    fn blocked_here() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:\t"))
            .unwrap();
        u64::from_str_radix(blocked, 16).unwrap()
    }

    #[test]
    fn blocked_shutdown_signals_are_unblocked() {
        // A thread of its own: the mask is per thread, and other tests must not see this one.
        std::thread::spawn(|| {
            let bit = |signal: libc::c_int| 1u64 << (signal - 1);
            // SAFETY: plain data, initialized by sigemptyset before use; this thread's mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
                    libc::sigaddset(&mut set, signal);
                }
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let all = bit(libc::SIGTERM) | bit(libc::SIGINT) | bit(libc::SIGUSR1);
            assert_eq!(blocked_here() & all, all);
            unblock_shutdown_signals().unwrap();
            // Only the daemon's own signals: the rest of the mask is not ours to change.
            assert_eq!(blocked_here() & all, bit(libc::SIGUSR1));
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn sigterm_ends_the_shutdown_signal() {
        let signal = shutdown_signal();
        tokio::pin!(signal);
        // The first poll installs the handlers; until a signal comes, the future waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut signal)
                .await
                .is_err(),
            "completed without a signal"
        );
        // SAFETY: raise only sends a signal to this process, whose SIGTERM tokio now handles.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(5), signal)
            .await
            .expect("SIGTERM did not end shutdown_signal");
    }
}
