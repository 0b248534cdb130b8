//! A command run in its own process group: spawned from a monitor thread, watched, signalled.
//!
//! The one hazard here is signalling a process group id that has been reused. A group id is the
//! leader's pid, and the kernel keeps that number reserved while the leader is unreaped (or any
//! member lives). So the monitor waits for the leader with `WNOWAIT`, marks the group exited,
//! sweeps it with SIGKILL while the leader is still a zombie, and only then reaps it; everybody
//! else signals only under the lock and only while the group is not marked exited. No signal can
//! reach a recycled id.
//!
//! ## The supervisor
//! When the host hands plugins a supervisor (`AppContext::supervisor`, the worker's
//! `aloha-supervise`), the group's leader is the supervisor and the program is its child:
//! `aloha-supervise --report-fd 0 <host pid> -- <program> [args...]`, with the stdout, stderr,
//! environment and directory the program was given (its stdin is `/dev/null`). The supervisor
//! arms its own parent-death signal, SIGUSR2, and checks that the host is still its parent: on
//! that signal it kills the whole group, so that the program's children die with the host too,
//! which the sweep here cannot do once the host is gone. As nothing has to run between fork
//! and exec, std starts it with `posix_spawn`, which does not copy the host's page tables as
//! `fork` does (about half a millisecond for the worker on a small VM). It passes the
//! program's end on as its own (the same exit code, or death by the same signal), so everything
//! below reads the leader's status as before, and the leader's pid is still the group id.
//!
//! A program that cannot be run must still fail the start with the usual wording. The
//! supervisor's own exec succeeds then, so `spawn` cannot tell: the monitor gives it the write
//! end of a close-on-exec pipe as its standard input (`--report-fd 0`; the supervisor moves it
//! out of the program's way), drops its own copy, writes the pid file meanwhile, and reads the
//! pipe to end of file. The supervisor writes why the program cannot run (std's `spawn` error,
//! `No such file or directory (os error 2)`) and exits, or closes the pipe without a word once
//! the program was exec'd. Only then is the start reported. Checking the program beforehand instead (exists, executable) would race with the
//! file system and miss the failures only exec finds (a bad interpreter, a missing loader).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aloha_plugin::ExitState;
use libc::{c_int, pid_t};

/// One process group of a plugin: at most one leader, spawned by [`ProcessGroup::spawn`], then
/// stopped by [`shutdown`](ProcessGroup::shutdown) or [`kill`](ProcessGroup::kill). Share it
/// between the plugin's threads in an `Arc`.
#[derive(Default)]
pub struct ProcessGroup {
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

/// What the monitor needs to start a process.
pub struct Launch {
    command: Command,
    program: String,
    /// Set when `command` runs the supervisor, which runs `program`.
    supervised: Option<Supervised>,
    pid_file: Option<PathBuf>,
    thread_name: String,
}

/// A launch through the supervisor: its path, and the pipe it reports a failed start on (or why
/// there is none).
struct Supervised {
    path: PathBuf,
    report: Result<ReportPipe, String>,
}

/// Both ends of the report pipe, close-on-exec in this process. The write end becomes the
/// supervisor's standard input (`--report-fd 0`).
struct ReportPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl ReportPipe {
    fn new() -> io::Result<ReportPipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(ReportPipe { read, write })
    }
}

impl Launch {
    /// A launch of `program`, through `supervisor` (the host's `aloha-supervise`, from
    /// [`AppContext::supervisor`](aloha_plugin::AppContext::supervisor)) when there is one,
    /// else directly. Give it its arguments, environment, directory and stdio through
    /// [`command`](Launch::command); the process group and the death signal are the
    /// monitor's. `thread_name` names the monitor thread (`"process-monitor"`).
    pub fn new(program: impl AsRef<OsStr>, supervisor: Option<&Path>, thread_name: &str) -> Launch {
        let program = program.as_ref();
        let (command, supervised) = match supervisor {
            None => (Command::new(program), None),
            Some(path) => {
                let report = ReportPipe::new()
                    .map_err(|e| format!("cannot create a pipe for the supervisor: {e}"));
                let mut command = Command::new(path);
                if report.is_ok() {
                    command.arg("--report-fd").arg("0");
                }
                // getpid is the same in every thread: the monitor thread's process is ours.
                // SAFETY: getpid has no preconditions.
                let host = unsafe { libc::getpid() };
                command.arg(host.to_string()).arg("--").arg(program);
                let supervised = Supervised {
                    path: path.to_path_buf(),
                    report,
                };
                (command, Some(supervised))
            }
        };
        Launch {
            command,
            program: program.to_string_lossy().into_owned(),
            supervised,
            pid_file: None,
            thread_name: thread_name.to_owned(),
        }
    }

    /// The command to configure: arguments (after the program), environment, working
    /// directory, stdio. Its program is the supervisor when there is one; leave that be. A
    /// supervised program's standard input is always `/dev/null`: the supervisor's own carries
    /// its start report, so a `stdin` set here is replaced.
    pub fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Whether the program runs under the supervisor.
    pub fn is_supervised(&self) -> bool {
        self.supervised.is_some()
    }

    /// Also writes the leader's pid (= the group id) to `path` once it runs; a start fails if
    /// that write does.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Launch {
        self.pid_file = Some(path.into());
        self
    }
}

/// How the leader of a group ended, handed to the `on_exit` of [`ProcessGroup::spawn`].
#[derive(Debug)]
pub struct ProcessExit {
    /// The leader's pid (= the group id, which may be reused by now).
    pub pid: pid_t,
    /// Its exit status, or why it could not be learnt.
    pub status: Result<ExitStatus, String>,
    /// `Some(reason)` if a shutdown or kill was asked for before the exit.
    pub shutdown: Option<Option<String>>,
}

impl ProcessExit {
    /// The exit as a process plugin reports it: FINISHED (code 0), FAILED (`exited with code N`,
    /// or `killed by signal N (SIGX)` with code 128+N), or KILLED (`killed: <reason>`) if a
    /// shutdown was asked for before it.
    pub fn exit_state(&self) -> ExitState {
        match &self.status {
            Ok(status) => exit_state(*status, self.shutdown.clone()),
            Err(e) => ExitState::failed(-1, e.clone()),
        }
    }

    /// The exit code as shells report it (128+N for death by signal N); -1 if unknown.
    pub fn code(&self) -> i32 {
        match &self.status {
            Ok(status) => status_code(*status).0,
            Err(_) => -1,
        }
    }

    /// `exited with code N` / `killed by signal N (SIGX)` / the reason the status is unknown.
    pub fn describe(&self) -> String {
        match &self.status {
            Ok(status) => status_code(*status).1,
            Err(e) => e.clone(),
        }
    }

    /// Whether the leader exited with code 0.
    pub fn success(&self) -> bool {
        matches!(&self.status, Ok(s) if s.success())
    }
}

impl ProcessGroup {
    /// A group with nothing running yet.
    pub fn new() -> Arc<ProcessGroup> {
        Arc::new(ProcessGroup::default())
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        // Every assignment under this lock is a single field store, so a panic elsewhere cannot
        // leave the state half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `launch` as the leader of a new process group, from a new monitor thread, and
    /// returns its pid once it runs (or why it could not start; nothing runs then and neither
    /// callback is called).
    ///
    /// The monitor thread lives exactly as long as the leader, because the leader gets
    /// `PR_SET_PDEATHSIG` (SIGKILL, or SIGUSR2 for the supervisor, which then kills the whole
    /// group), which fires when the *thread* that forked it exits: so the process dies with the
    /// host, but not with the host's (possibly short-lived) calling thread. Once it runs (under
    /// a supervisor: once the supervisor reported the program running), the monitor calls
    /// `on_start(pid)`; when the leader exits, it sweeps what is left of the group with SIGKILL
    /// (so no orphan survives, unless it moved to another group or session), then reaps the
    /// leader and calls `on_exit`. `on_start` always returns before `on_exit` is called, so
    /// details reported from it come before the exit.
    pub fn spawn(
        self: &Arc<Self>,
        launch: Launch,
        on_start: impl FnOnce(pid_t) + Send + 'static,
        on_exit: impl FnOnce(ProcessExit) + Send + 'static,
    ) -> Result<pid_t, String> {
        if self.lock().pgid.is_some() {
            return Err("the process group was started already".into());
        }
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let group = Arc::clone(self);
        std::thread::Builder::new()
            .name(launch.thread_name.clone())
            .spawn(move || monitor(launch, group, started_tx, on_start, on_exit))
            .map_err(|e| format!("cannot start the monitor thread: {e}"))?;
        match started_rx.recv() {
            Ok(result) => result,
            Err(_) => Err("the monitor thread ended before the process started".into()),
        }
    }

    /// The leader's pid (= the group id; the supervisor's when there is one) once it was
    /// started, even after it exited.
    pub fn pid(&self) -> Option<pid_t> {
        self.lock().pgid
    }

    /// Whether the leader was started and has not exited yet.
    pub fn is_running(&self) -> bool {
        let state = self.lock();
        state.pgid.is_some() && !state.exited
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
    /// sent then. A kill of a running group counts as a shutdown, with `reason`.
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

    /// Waits up to `timeout` for the leader to exit; true if it has (or never ran).
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .exited
            .wait_timeout_while(state, timeout, |s| s.pgid.is_some() && !s.exited)
            .unwrap_or_else(PoisonError::into_inner);
        state.pgid.is_none() || state.exited
    }

    fn mark_exited(&self) -> Option<Option<String>> {
        let shutdown = {
            let mut state = self.lock();
            state.exited = true;
            if let Some(pgid) = state.pgid {
                // Sweep the group while the leader, still a zombie, holds its id.
                let _ = signal_group(pgid, libc::SIGKILL);
            }
            state.shutdown.clone()
        };
        self.exited.notify_all();
        shutdown
    }
}

/// The body of the monitor thread: spawns the process (so that the thread that forked it lives
/// exactly as long as it does, which is what PR_SET_PDEATHSIG watches), reports the start result
/// on `started`, waits for the leader, sweeps the group and reports the exit.
fn monitor(
    mut launch: Launch,
    group: Arc<ProcessGroup>,
    started: mpsc::SyncSender<Result<pid_t, String>>,
    on_start: impl FnOnce(pid_t),
    on_exit: impl FnOnce(ProcessExit),
) {
    let mut child = match start(&mut launch) {
        Ok(child) => child,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    // A pid always fits pid_t; std hands it out as u32.
    let pid = child.id() as pid_t;
    group.lock().pgid = Some(pid);
    on_start(pid);
    // Start may have given up waiting only if its thread died; then the app is still ours to run.
    let _ = started.send(Ok(pid));

    let (status, shutdown) = match wait_without_reaping(pid) {
        Ok(()) => {
            let shutdown = group.mark_exited();
            let status = child
                .wait()
                .map_err(|e| format!("cannot collect the exit status: {e}"));
            (status, shutdown)
        }
        Err(e) => {
            // Someone else reaped the leader (a host calling waitpid(-1)): its id may be reused
            // already, so the group is not swept.
            let shutdown = {
                let mut state = group.lock();
                state.exited = true;
                state.shutdown.clone()
            };
            group.exited.notify_all();
            (Err(format!("lost track of process {pid}: {e}")), shutdown)
        }
    };
    on_exit(ProcessExit {
        pid,
        status,
        shutdown,
    });
}

/// Starts the leader: the program itself, or the supervisor, which must then report the program
/// running (see the module documentation), and writes the pid file. Nothing runs when this
/// fails, and no pid file is left.
fn start(launch: &mut Launch) -> Result<Child, String> {
    let Some(supervised) = launch.supervised.take() else {
        set_group_and_death_signal(&mut launch.command, libc::SIGKILL);
        let mut child = launch
            .command
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", launch.program))?;
        if let Err(e) = write_pid_file(launch.pid_file.as_deref(), &child) {
            // A start that fails must leave nothing running.
            let _ = signal_group(child.id() as pid_t, libc::SIGKILL);
            let _ = child.wait();
            return Err(e);
        }
        return Ok(child);
    };
    let pipe = supervised.report?;
    // Nothing runs between fork and exec: only stdio and the group are set, so std spawns with
    // posix_spawn, without copying this (multi-threaded) process's page tables. The supervisor
    // arms its own death signal and checks that we are still its parent.
    launch.command.process_group(0).stdin(pipe.write);
    let spawned = launch.command.spawn();
    // The command held the write end for the child's stdin: dropping it here leaves the
    // supervisor with the only one, so end of file means it is done.
    launch.command.stdin(std::process::Stdio::null());
    let mut child = spawned.map_err(|e| {
        format!(
            "cannot run {:?}: cannot start the supervisor {}: {e}",
            launch.program,
            supervised.path.display()
        )
    })?;
    // Written while the supervisor starts the program: the pid is the supervisor's.
    let written = write_pid_file(launch.pid_file.as_deref(), &child);
    let mut message = String::new();
    let read = File::from(pipe.read)
        .take(4096)
        .read_to_string(&mut message);
    let failure = match (read, written) {
        (Ok(_), Ok(())) if message.is_empty() => return Ok(child),
        (Ok(_), Err(e)) if message.is_empty() => e,
        (Ok(_), _) => format!("cannot run {:?}: {}", launch.program, message.trim_end()),
        (Err(e), _) => format!(
            "cannot run {:?}: no word from the supervisor {}: {e}",
            launch.program,
            supervised.path.display()
        ),
    };
    // The supervisor is unreaped, so its pid is still the group's id: sweep, then reap.
    // A pid always fits pid_t; std hands it out as u32.
    let _ = signal_group(child.id() as pid_t, libc::SIGKILL);
    let _ = child.wait();
    if let Some(path) = &launch.pid_file {
        let _ = std::fs::remove_file(path);
    }
    Err(failure)
}

/// Writes the leader's pid to `path`, if there is one.
fn write_pid_file(path: Option<&Path>, child: &Child) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    std::fs::write(path, format!("{}\n", child.id()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes the command lead a new process group and die by `death_signal` when the forking
/// thread (the monitor) goes.
///
/// The child also starts clean: every signal at its default action, none blocked. Whatever
/// the host inherited (SIGHUP ignored under `nohup`, a blocked SIGTERM) is not the app's: an
/// app sent SIGHUP dies by it, as it would under a service manager. The supervisor does the
/// same for its program; doing it here too covers the start without a supervisor.
fn set_group_and_death_signal(command: &mut Command, death_signal: c_int) {
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // Not async-signal-safe (glibc reads it once), so asked here, before the fork.
        let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
        // (prctl, getppid, signal, sigemptyset, sigprocmask) and builds errors without
        // allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    death_signal as libc::c_ulong,
                    0,
                    0,
                    0,
                ) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                // The host may have died between fork and prctl; nothing would kill us then.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // 1 to 31 but SIGKILL and SIGSTOP, and the real-time signals libc leaves us.
                let catchable = (1..=31)
                    .filter(|s| *s != libc::SIGKILL && *s != libc::SIGSTOP)
                    .chain(rtmin..=rtmax);
                for signal in catchable {
                    // Fails only for a number libc keeps for itself (and never ignores).
                    libc::signal(signal, libc::SIG_DFL);
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
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

/// The code a shell would report for `status` (128+N for death by signal N), and its wording.
fn status_code(status: ExitStatus) -> (i32, String) {
    if let Some(code) = status.code() {
        (code, format!("exited with code {code}"))
    } else if let Some(signal) = status.signal() {
        (
            128 + signal,
            format!("killed by signal {signal} ({})", signal_name(signal)),
        )
    } else {
        (-1, format!("ended with an unknown status ({status})"))
    }
}

/// How the exit of a process with `status` is reported; `shutdown` is the reason of a shutdown
/// asked for before the exit, if any.
pub fn exit_state(status: ExitStatus, shutdown: Option<Option<String>>) -> ExitState {
    let (code, how) = status_code(status);
    match shutdown {
        Some(reason) => ExitState::killed(code, killed_message(reason.as_deref())),
        None if status.success() => ExitState::finished(code, how),
        None => ExitState::failed(code, how),
    }
}

/// `killed: <reason>`, or `killed: shutdown requested` without one.
pub fn killed_message(reason: Option<&str>) -> String {
    format!("killed: {}", reason.unwrap_or("shutdown requested"))
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
    use std::os::fd::AsRawFd;
    use std::process::Stdio;
    use std::time::Instant;

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
    fn process_exit_describes_itself() {
        let e = ProcessExit {
            pid: 10,
            status: Ok(signalled(libc::SIGKILL)),
            shutdown: None,
        };
        assert_eq!((e.code(), e.success()), (137, false));
        assert_eq!(e.describe(), "killed by signal 9 (SIGKILL)");
        let e = ProcessExit {
            pid: 10,
            status: Err("lost track of process 10: gone".into()),
            shutdown: Some(None),
        };
        assert_eq!(e.code(), -1);
        assert_eq!(
            e.exit_state(),
            ExitState::failed(-1, "lost track of process 10: gone")
        );
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

    #[test]
    fn spawn_reports_start_then_exit_and_refuses_a_second_leader() {
        let group = ProcessGroup::new();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let mut launch = Launch::new("sh", None, "test-monitor");
        launch.command().args(["-c", "exit 4"]).stdin(Stdio::null());
        assert!(!launch.is_supervised());
        let pid = group
            .spawn(
                launch,
                move |pid| tx.send(format!("start {pid}")).unwrap(),
                move |exit| tx2.send(format!("exit {}", exit.code())).unwrap(),
            )
            .unwrap();
        let deadline = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(deadline).unwrap(), format!("start {pid}"));
        assert_eq!(rx.recv_timeout(deadline).unwrap(), "exit 4");
        assert!(group.wait_exited(deadline));
        assert!(!group.is_running());
        assert_eq!(group.pid(), Some(pid));
        let err = group
            .spawn(Launch::new("true", None, "t"), |_| {}, |_| {})
            .unwrap_err();
        assert!(err.contains("started already"), "{err}");
    }

    #[test]
    fn shutdown_escalates_and_wait_exited_sees_it() {
        let group = ProcessGroup::new();
        let (tx, rx) = mpsc::channel();
        let mut launch = Launch::new("sh", None, "test-monitor");
        launch
            .command()
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"]);
        group
            .spawn(launch, |_| {}, move |exit| tx.send(exit).unwrap())
            .unwrap();
        assert!(group.is_running());
        assert!(!group.wait_exited(Duration::from_millis(50)));
        // Give the shell time to install its trap.
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        group
            .shutdown(Some("test"), Duration::from_millis(200))
            .unwrap();
        let exit = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(asked.elapsed() >= Duration::from_millis(200));
        assert_eq!(exit.exit_state(), ExitState::killed(137, "killed: test"));
    }

    #[test]
    fn a_program_started_without_the_supervisor_gets_default_signals_and_none_blocked() {
        // As if the host ran under nohup: SIGHUP ignored (process-wide; nothing else here sends
        // it, and every child gets the default back), SIGTERM blocked in this thread, which the
        // monitor thread inherits.
        // SAFETY: plain signal-state calls on valid, initialized arguments.
        let previous = unsafe {
            let previous = libc::signal(libc::SIGHUP, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            previous
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("status");
        let group = ProcessGroup::new();
        let (tx, rx) = mpsc::channel();
        let mut launch = Launch::new("sh", None, "test-monitor");
        launch
            .command()
            .args([
                "-c",
                "grep -E '^Sig(Blk|Ign):' /proc/self/status > \"$0\"; kill -HUP $$; echo survived",
            ])
            .arg(&out)
            .stdin(Stdio::null());
        group
            .spawn(launch, |_| {}, move |exit| tx.send(exit).unwrap())
            .unwrap();
        let exit = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // SAFETY: as above; puts back what this test changed.
        unsafe {
            libc::signal(libc::SIGHUP, previous);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert_eq!(exit.describe(), "killed by signal 1 (SIGHUP)");
        let text = std::fs::read_to_string(&out).unwrap();
        // Signals 32 and 33 are glibc's own, out of reach of signal(2) (systemd cannot reset
        // them either); cargo, for one, starts its tests with one of them ignored.
        let catchable = (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX());
        let catchable = catchable.fold(0u64, |bits, signal| bits | 1 << (signal - 1));
        for field in ["SigBlk", "SigIgn"] {
            let bits = text
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(":\t"))
                .unwrap();
            let bits = u64::from_str_radix(bits, 16).unwrap();
            assert_eq!(bits & catchable, 0, "{text}");
        }
    }

    #[test]
    fn a_missing_program_calls_neither_callback() {
        let group = ProcessGroup::new();
        let err = group
            .spawn(
                Launch::new("/nonexistent/aloha-x", None, "t"),
                |_| panic!("started"),
                |_| panic!("exited"),
            )
            .unwrap_err();
        assert!(
            err.starts_with("cannot run \"/nonexistent/aloha-x\": "),
            "{err}"
        );
        assert_eq!(group.pid(), None);
        assert!(group.wait_exited(Duration::ZERO));
    }

    #[test]
    fn a_missing_supervisor_fails_the_start_naming_both() {
        let group = ProcessGroup::new();
        let launch = Launch::new("true", Some(Path::new("/nonexistent/aloha-supervise")), "t");
        assert!(launch.is_supervised());
        let err = group
            .spawn(launch, |_| panic!("started"), |_| panic!("exited"))
            .unwrap_err();
        assert!(
            err.starts_with(
                "cannot run \"true\": cannot start the supervisor /nonexistent/aloha-supervise: "
            ),
            "{err}"
        );
        assert_eq!(group.pid(), None);
    }

    #[test]
    fn the_supervisor_is_given_the_report_pipe_the_host_pid_and_the_program() {
        let mut launch = Launch::new("prog", Some(Path::new("/x/aloha-supervise")), "t");
        launch.command().arg("a b");
        let args: Vec<String> = launch
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(launch.command().get_program(), "/x/aloha-supervise");
        assert_eq!(args[..2], ["--report-fd", "0"]);
        // SAFETY: getpid has no preconditions.
        let host = unsafe { libc::getpid() };
        assert_eq!(
            args[2..],
            [host.to_string(), "--".into(), "prog".into(), "a b".into()]
        );
        // The write end stays out of every other child the host starts.
        let pipe = launch.supervised.as_ref().unwrap().report.as_ref().unwrap();
        // SAFETY: fcntl on a descriptor the launch holds open.
        let flags = unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
