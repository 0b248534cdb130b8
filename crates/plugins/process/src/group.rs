//! The running process group: spawning it from a monitor thread, watching it, signalling it.
//!
//! The one hazard here is signalling a process group id that has been reused. A group id is the
//! leader's pid, and the kernel keeps that number reserved while the leader is unreaped (or any
//! member lives). So the monitor waits for the leader with `WNOWAIT`, marks the group exited,
//! sweeps it with SIGKILL while the leader is still a zombie, and only then reaps it; everybody
//! else signals only under the lock and only while the group is not marked exited. No signal can
//! reach a recycled id.

use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aloha_plugin::{ExitNotifier, ExitState};
use libc::{c_int, pid_t};

use crate::spec::Spec;

/// What the plugin's threads share about one app's process group.
#[derive(Default)]
pub struct Group {
    state: Mutex<RunState>,
    /// Signalled when the leader exits.
    exited: Condvar,
}

#[derive(Default)]
struct RunState {
    /// The leader's pid, which is also the group id; set once the process runs.
    pgid: Option<pid_t>,
    /// The leader has exited: the group id must not be signalled any more.
    exited: bool,
    /// A shutdown was asked for (before the exit), and why.
    shutdown: Option<Option<String>>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        // Every assignment under this lock is a single field store, so a panic elsewhere cannot
        // leave the state half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the group to stop: SIGTERM now, SIGKILL after `grace` if the leader is still there.
    /// Returns at once. A no-op if the process is not running or a shutdown is under way.
    pub fn shutdown(self: &Arc<Self>, reason: Option<&str>, grace: Duration) -> Result<(), String> {
        let mut state = self.lock();
        let Some(pgid) = state.pgid else {
            return Ok(());
        };
        if state.exited || state.shutdown.is_some() {
            return Ok(());
        }
        state.shutdown = Some(reason.map(str::to_owned));
        let term = signal_group(pgid, libc::SIGTERM);
        let group = Arc::clone(self);
        let escalate = std::thread::Builder::new()
            .name("process-kill".into())
            .spawn(move || group.kill_after(pgid, grace));
        if let Err(e) = escalate {
            // Without a thread to wait out the grace period, skip it.
            let kill = signal_group(pgid, libc::SIGKILL);
            return Err(format!(
                "cannot start the escalation thread ({e}); sent SIGKILL at once{}",
                kill.err()
                    .map(|e| format!(", which failed: {e}"))
                    .unwrap_or_default()
            ));
        }
        term.map_err(|e| format!("cannot send SIGTERM to process group {pgid}: {e}"))
    }

    fn kill_after(&self, pgid: pid_t, grace: Duration) {
        let state = self.lock();
        let (state, _) = self
            .exited
            .wait_timeout_while(state, grace, |s| !s.exited)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.exited {
            // Nobody to report to from here; the exit (by SIGKILL) is reported by the monitor.
            let _ = signal_group(pgid, libc::SIGKILL);
        }
    }

    /// Kills whatever of the group still runs (the leader has not exited). After the leader's
    /// exit the monitor has swept the group already, and its id may be reused, so nothing is
    /// sent then. A kill of a running app counts as a shutdown, with `reason`.
    pub fn kill(&self, reason: &str) -> Result<(), String> {
        let mut state = self.lock();
        match state.pgid {
            Some(pgid) if !state.exited => {
                state
                    .shutdown
                    .get_or_insert_with(|| Some(reason.to_owned()));
                signal_group(pgid, libc::SIGKILL)
                    .map_err(|e| format!("cannot send SIGKILL to process group {pgid}: {e}"))
            }
            _ => Ok(()),
        }
    }
}

/// What the monitor needs to run an app.
pub struct Launch {
    /// The command, fully configured but for the process group and death signal.
    pub command: Command,
    /// The program, for error messages.
    pub program: String,
    /// Where to write the pid.
    pub pid_file: PathBuf,
}

impl Launch {
    /// Builds the command for `spec`, with output going to the given files.
    pub fn new(spec: &Spec, stdout: File, stderr: File, pid_file: PathBuf) -> Launch {
        // `spec::parse` guarantees a non-empty command, so the indexing cannot fail.
        let mut command = Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .envs(&spec.env)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        Launch {
            command,
            program: spec.command[0].clone(),
            pid_file,
        }
    }
}

/// The body of the monitor thread: spawns the process (so that the thread that forked it lives
/// exactly as long as it does, which is what PR_SET_PDEATHSIG watches), reports the spawn result
/// on `started`, waits for the leader, sweeps the group and reports the exit.
pub fn monitor(
    mut launch: Launch,
    group: Arc<Group>,
    events: ExitNotifier,
    started: SyncSender<Result<pid_t, String>>,
) {
    set_group_and_death_signal(&mut launch.command);
    let mut child = match launch.command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = started.send(Err(format!("cannot run {:?}: {e}", launch.program)));
            return;
        }
    };
    // A pid always fits pid_t; std hands it out as u32.
    let pid = child.id() as pid_t;
    if let Err(e) = std::fs::write(&launch.pid_file, format!("{pid}\n")) {
        // A start that fails must leave nothing running.
        let _ = signal_group(pid, libc::SIGKILL);
        let _ = child.wait();
        let _ = started.send(Err(format!(
            "cannot write {}: {e}",
            launch.pid_file.display()
        )));
        return;
    }
    group.lock().pgid = Some(pid);
    events.detail("pid", &pid.to_string());
    // Start may have given up waiting only if its thread died; then the app is still ours to run.
    let _ = started.send(Ok(pid));

    let state = match wait_without_reaping(pid) {
        Ok(()) => {
            let shutdown = {
                let mut state = group.lock();
                state.exited = true;
                // Sweep the group while the leader, still a zombie, holds its id.
                let _ = signal_group(pid, libc::SIGKILL);
                state.shutdown.clone()
            };
            group.exited.notify_all();
            match child.wait() {
                Ok(status) => exit_state(status, shutdown),
                Err(e) => ExitState::failed(-1, format!("cannot collect the exit status: {e}")),
            }
        }
        Err(e) => {
            // Someone else reaped the leader (a host calling waitpid(-1)): its id may be reused
            // already, so the group is not swept.
            group.lock().exited = true;
            group.exited.notify_all();
            ExitState::failed(-1, format!("lost track of process {pid}: {e}"))
        }
    };
    events.exit(state);
}

fn set_group_and_death_signal(command: &mut Command) {
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
        // (prctl, getppid) and builds errors without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                // The worker may have died between fork and prctl; nothing would kill us then.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
}

/// Blocks until process `pid` (our child) has exited, leaving it unreaped.
fn wait_without_reaping(pid: pid_t) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-parameter for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends `signal` to the process group `pgid`; a group that is gone already is not an error.
pub fn signal_group(pgid: pid_t, signal: c_int) -> io::Result<()> {
    // kill(0, ..) and kill(-1, ..) would hit our own group or every process we may signal.
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// How the exit of a process with `status` is reported; `shutdown` is the reason of a shutdown
/// asked for before the exit, if any.
pub fn exit_state(status: ExitStatus, shutdown: Option<Option<String>>) -> ExitState {
    let (code, how) = if let Some(code) = status.code() {
        (code, format!("exited with code {code}"))
    } else if let Some(signal) = status.signal() {
        (
            128 + signal,
            format!("killed by signal {signal} ({})", signal_name(signal)),
        )
    } else {
        (-1, format!("ended with an unknown status ({status})"))
    };
    match shutdown {
        Some(reason) => ExitState::killed(
            code,
            format!(
                "killed: {}",
                reason.as_deref().unwrap_or("shutdown requested")
            ),
        ),
        None if status.success() => ExitState::finished(code, how),
        None => ExitState::failed(code, how),
    }
}

/// The conventional name of a signal (`SIGKILL`), or `unknown` for one without a name here.
pub fn signal_name(signal: c_int) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGSYS => "SIGSYS",
        #[cfg(target_os = "linux")]
        libc::SIGPWR => "SIGPWR",
        #[cfg(target_os = "linux")]
        libc::SIGSTKFLT => "SIGSTKFLT",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloha_plugin::ExitKind;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn signalled(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    #[test]
    fn exits_map_to_states() {
        assert_eq!(
            exit_state(exited(0), None),
            ExitState::finished(0, "exited with code 0")
        );
        assert_eq!(
            exit_state(exited(3), None),
            ExitState::failed(3, "exited with code 3")
        );
        assert_eq!(
            exit_state(signalled(libc::SIGSEGV), None),
            ExitState::failed(139, "killed by signal 11 (SIGSEGV)")
        );
    }

    #[test]
    fn a_requested_shutdown_wins_whatever_the_status() {
        let s = exit_state(signalled(libc::SIGTERM), Some(Some("by alice".into())));
        assert_eq!(s, ExitState::killed(143, "killed: by alice"));
        let s = exit_state(exited(0), Some(None));
        assert_eq!((s.kind, s.code), (ExitKind::Killed, 0));
        assert_eq!(s.message, "killed: shutdown requested");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(200), "unknown");
    }

    #[test]
    fn dangerous_group_ids_are_refused() {
        for pgid in [-5, 0, 1] {
            let err = signal_group(pgid, 0).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
