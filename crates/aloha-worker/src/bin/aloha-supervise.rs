//! `aloha-supervise`: the leader of an app's process group, so that the app's processes die with
//! their worker, even when the worker is killed with SIGKILL.
//!
//! ```text
//! aloha-supervise [--report-fd FD] <expected-parent-pid> -- <program> [args...]
//! ```
//!
//! ## Why
//! Plugins start an app as the leader of its own process group with
//! `PR_SET_PDEATHSIG`, which the kernel delivers when the worker dies. But that signal reaches the
//! leader only; the group sweep that killed the leader's children ran on a worker thread, which
//! died with the worker. So an app `sh -c 'sleep 601 & sleep 602; wait'` left both sleeps running
//! after `kill -9` of its worker. This program is that leader instead: its parent-death signal
//! is SIGUSR2, a signal nobody else sends it, and on it it sends SIGKILL to its whole group
//! (itself included). Processes that leave the group (`setsid`, `setpgid`) still escape; only a
//! cgroup would hold them.
//!
//! ## What it does
//! 1. Takes over the report descriptor (`--report-fd`, see below) and resets every signal it
//!    inherited as ignored to its default action (SIGPIPE excepted: std ignores it on purpose,
//!    so that a closed pipe is an error and not a death). Then it blocks SIGUSR2, SIGCHLD,
//!    SIGTERM, SIGINT and SIGHUP: from here they wait in the pending set for `sigtimedwait`, so
//!    none can be missed or run a handler.
//! 2. Makes itself the leader of its own process group (a no-op when started that way), so
//!    that signalling its group can never reach the group of whoever started it.
//! 3. Sets `PR_SET_PDEATHSIG = SIGUSR2` (again: the launcher sets it between fork and exec, but
//!    a launcher that did not still gets the guarantee) and checks that its parent is still
//!    `<expected-parent-pid>`: had the parent died before the death signal was armed, no
//!    signal would ever come, so it kills its group and exits instead.
//! 4. Runs the program as its only child, in the same group, with every signal at its default
//!    action, none blocked, and `PR_SET_PDEATHSIG = SIGKILL`: however the supervisor ends, its
//!    child ends with it. A worker started under `nohup`, or by a parent that ignores SIGQUIT or
//!    blocks SIGTERM, must not pass that on to every app: an app that is sent SIGHUP dies by
//!    it, as it would under a service manager (systemd resets signals the same way).
//! 5. Waits: the child's end is passed on (the same exit code, or death by the same signal,
//!    re-raised on itself, so the worker sees exactly what it would have seen without a
//!    supervisor); the worker's death (SIGUSR2, or a parent pid that changed, checked every
//!    second in case the death signal was lost) kills the group. SIGTERM, SIGINT and SIGHUP
//!    get no handling of their own: they are sent to the whole group, so the child has them
//!    already, and escalating to SIGKILL is the plugin's job.
//!
//! What is left of the group when the child has exited (its background children) is swept by
//! the plugin, which waits for this process without reaping it (so the group id stays
//! reserved), sends SIGKILL to the group, and only then reaps it.
//!
//! ## Start errors
//! A program that cannot be run (`No such file or directory`, permission denied, a bad
//! interpreter) must fail the plugin's `start`, as it did before the supervisor existed; the
//! supervisor's own exec succeeds in that case, so its launcher cannot learn it from `spawn`.
//! Hence `--report-fd FD`: an inherited pipe whose other end the launcher reads until end of
//! file. The supervisor marks it close-on-exec at once (the program never inherits it), writes
//! one line explaining why it cannot start the program, if so, and exits with 127; otherwise
//! it closes it, without a word, once the program was exec'd (`Command::spawn` returns only
//! after a successful exec: std learns of exec failures through a close-on-exec pipe of its own).
//! End of file without a message therefore means "the program runs"; the launcher then
//! reports the start. Without `--report-fd` the same messages go to stderr.
//!
//! `--report-fd 0` says the pipe is the supervisor's standard input. The worker's plugins start
//! the supervisor that way: a launcher that only hands over stdio needs no code between fork
//! and exec, so std starts the supervisor with `posix_spawn` (a `vfork`-style clone) instead
//! of `fork`, which copies the whole multi-threaded worker's page tables first. The supervisor
//! then moves the pipe above 2 and gives the program `/dev/null` as its standard input.
//!
//! std and libc only: after start-up it only makes system calls and allocates nothing.
//!
//! ## Start-up cost
//! Every app start waits for this program's start, so it skips std's runtime start-up
//! (`#![no_main]`: no stack-overflow guard, which reads `/proc/self/maps`, no alternate signal
//! stack) and only ignores SIGPIPE as std would. `std::env::args_os` still works: on Linux
//! glibc std takes the arguments from an init-array function, not from `main`.

// Test builds keep libtest's own `main`.
#![cfg_attr(not(test), no_main)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use libc::{c_int, pid_t};

const USAGE: &str =
    "usage: aloha-supervise [--report-fd FD] <expected-parent-pid> -- <program> [args...]";

/// The parent-death signal: the worker (the thread that started us) is gone.
const WORKER_DIED: c_int = libc::SIGUSR2;

/// The signals taken out of normal delivery and waited for with `sigtimedwait`.
const WATCHED: [c_int; 5] = [
    WORKER_DIED,
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
];

/// The exit code when the program could not be run, as shells report "command not found".
const CANNOT_RUN: i32 = 127;
/// The exit code for a command line that makes no sense.
const BAD_USAGE: i32 = 2;

/// How often the parent pid is checked, in case the death signal was lost (it is cleared, for
/// example, when credentials change).
const PARENT_CHECK_SECONDS: libc::time_t = 1;

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    report_fd: Option<RawFd>,
    parent: pid_t,
    program: OsString,
    args: Vec<OsString>,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut args = args.into_iter();
    let mut next = args.next();
    let mut report_fd = None;
    if next.as_deref() == Some("--report-fd".as_ref()) {
        let fd = args.next().ok_or("--report-fd needs a value")?;
        report_fd = Some(
            fd.to_str()
                .and_then(|s| s.parse::<RawFd>().ok())
                .filter(|fd| *fd == 0 || *fd > 2)
                .ok_or_else(|| format!("--report-fd {fd:?} is not 0 or a descriptor above 2"))?,
        );
        next = args.next();
    }
    let parent = next.ok_or("the expected parent pid is missing")?;
    let parent = parent
        .to_str()
        .and_then(|s| s.parse::<pid_t>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| format!("{parent:?} is not a pid"))?;
    if args.next().as_deref() != Some("--".as_ref()) {
        return Err("`--` must follow the parent pid".into());
    }
    let program = args.next().ok_or("the program is missing")?;
    Ok(Args {
        report_fd,
        parent,
        program,
        args: args.collect(),
    })
}

/// Where a failure to start the program is told: the launcher's pipe, else stderr.
struct Report(Option<File>);

impl Report {
    /// Takes over descriptor `fd`, marking it close-on-exec so the program does not inherit it.
    /// Descriptor 0 (the pipe is our standard input) is moved above 2 first, and `/dev/null`
    /// takes its place, so the program's standard input is `/dev/null`.
    fn take(fd: Option<RawFd>) -> Result<Report, String> {
        let Some(fd) = fd else {
            return Ok(Report(None));
        };
        if fd == 0 {
            return Self::take_stdin();
        }
        // SAFETY: fcntl on any number is sound; it fails with EBADF when nothing is open there.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(format!("--report-fd {fd}: {}", io::Error::last_os_error()));
        }
        // SAFETY: the descriptor is open (fcntl succeeded) and was handed to us alone, by
        // command line, to own; nothing else in this process uses it.
        Ok(Report(Some(unsafe { File::from_raw_fd(fd) })))
    }

    /// `--report-fd 0`: moves the pipe from descriptor 0 to a close-on-exec one above 2 and
    /// opens `/dev/null` on 0 for the program.
    fn take_stdin() -> Result<Report, String> {
        // SAFETY: fcntl on descriptor 0; F_DUPFD_CLOEXEC returns a new descriptor or -1.
        let moved = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
        if moved == -1 {
            return Err(format!("--report-fd 0: {}", io::Error::last_os_error()));
        }
        // SAFETY: a descriptor fcntl just created for us alone.
        let pipe = unsafe { File::from_raw_fd(moved) };
        let null = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
        // SAFETY: dup2 between two open descriptors; 0 is replaced (closing our copy of the
        // pipe), and `null` is dropped after, leaving 0 as the only descriptor of /dev/null.
        if unsafe { libc::dup2(null.as_raw_fd(), 0) } == -1 {
            return Err(format!(
                "cannot put /dev/null on standard input: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(Report(Some(pipe)))
    }

    /// Tells why the program does not start.
    fn tell(self, message: &str) {
        match self.0 {
            // The launcher reads to end of file; a failed write leaves it nothing better to do.
            Some(mut pipe) => {
                let _ = pipe.write_all(message.as_bytes());
            }
            None => {
                let message = message.strip_prefix("aloha-supervise: ").unwrap_or(message);
                eprintln!("aloha-supervise: {message}");
            }
        }
    }

    /// Tells why the program cannot start, and exits.
    fn fail(self, message: &str) -> ! {
        self.tell(message);
        std::process::exit(CANNOT_RUN)
    }

    /// Tells that `program` cannot be run, and exits: std's very wording to the launcher (the
    /// wording it would have got from a spawn of its own; it names the program itself), a
    /// sentence naming the program on stderr.
    fn cannot_run(self, program: &OsStr, e: &io::Error) -> ! {
        if self.0.is_some() {
            self.fail(&e.to_string())
        } else {
            self.fail(&format!("cannot run {program:?}: {e}"))
        }
    }
}

/// The C entry point (see "Start-up cost").
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const libc::c_char) -> c_int {
    // What std's start-up would have done for us: a closed pipe is an error, not a death.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    run()
}

/// Unused in test builds, where libtest's harness is the entry point.
#[cfg(test)]
fn main() {
    run()
}

fn run() -> ! {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("aloha-supervise: {e}\n{USAGE}");
            std::process::exit(BAD_USAGE)
        }
    };
    let report = match Report::take(args.report_fd) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("aloha-supervise: {e}");
            std::process::exit(BAD_USAGE)
        }
    };
    let watched = match take_signals() {
        Ok(taken) => taken,
        Err(e) => report.fail(&format!("aloha-supervise: cannot block signals: {e}")),
    };
    // SAFETY: these calls have no memory-safety preconditions.
    let me = unsafe {
        libc::setpgid(0, 0);
        libc::getpid()
    };
    // SAFETY: as above.
    if unsafe { libc::getpgrp() } != me {
        // A session leader cannot lead a new group; its group is someone else's to signal.
        report.fail("aloha-supervise: cannot lead its own process group");
    }
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; no pointers.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            WORKER_DIED as libc::c_ulong,
            0,
            0,
            0,
        )
    } == -1
    {
        let e = io::Error::last_os_error();
        report.fail(&format!(
            "aloha-supervise: cannot set the death signal: {e}"
        ));
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != args.parent {
        // The parent died before the death signal was armed: nobody watches us.
        let message = format!(
            "aloha-supervise: its parent is not pid {} (any more): whoever started it is gone",
            args.parent
        );
        report.tell(&message);
        kill_group(me);
    }

    let mut command = Command::new(&args.program);
    command.args(&args.args);
    // Not async-signal-safe (glibc reads it once), so asked here, before the fork.
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, signal, sigemptyset, sigprocmask); errors are built without allocating,
    // and the signal numbers are iterated without allocating either.
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
            // We may have died between fork and prctl; nothing would kill the child then.
            if libc::getppid() != me {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // A clean start: every signal at its default action (exec keeps only "ignored",
            // and std's SIGPIPE is one) and none blocked.
            for signal in catchable_signals(rtmin, rtmax) {
                // Fails only for a number this libc keeps for itself (and never ignores).
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
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => report.cannot_run(&args.program, &e),
    };
    // End of file on the pipe: the program runs.
    drop(report);
    // A pid always fits pid_t; std hands it out as u32.
    supervise(child.id() as pid_t, args.parent, me, &watched)
}

/// Every signal a process can catch or ignore: 1 to 31 but SIGKILL and SIGSTOP, and the
/// real-time signals `rtmin..=rtmax` (libc's `SIGRTMIN()`/`SIGRTMAX()`, which leave out the
/// ones libc keeps for itself).
fn catchable_signals(rtmin: c_int, rtmax: c_int) -> impl Iterator<Item = c_int> {
    (1..=31)
        .filter(|s| *s != libc::SIGKILL && *s != libc::SIGSTOP)
        .chain(rtmin..=rtmax)
}

/// Resets every signal inherited as ignored (SIGPIPE aside, which std ignores in every Rust
/// program) to its default action, then blocks the watched signals. Returns the blocked set.
fn take_signals() -> io::Result<libc::sigset_t> {
    for signal in catchable_signals(libc::SIGRTMIN(), libc::SIGRTMAX()) {
        if signal == libc::SIGPIPE {
            continue;
        }
        // SAFETY: sigaction is plain data; all-zero is a valid value to be overwritten.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: only reads the disposition into `current`.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // A handler (std's, for SIGSEGV and SIGBUS) is ours; an ignored signal is inherited.
        // An ignored SIGCHLD would make the kernel reap the child for us, and an ignored SIGUSR2
        // or SIGHUP would be discarded even while blocked: the watched ones above all must have
        // their default action while we wait.
        // SAFETY: installing SIG_DFL for a catchable signal has no preconditions.
        if current.sa_sigaction == libc::SIG_IGN
            && unsafe { libc::signal(signal, libc::SIG_DFL) } == libc::SIG_ERR
        {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: sigset_t is plain data; sigemptyset initializes it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for signal in WATCHED {
        // SAFETY: `set` is initialized and the signal number is valid.
        unsafe { libc::sigaddset(&mut set, signal) };
    }
    // SAFETY: `set` is initialized; the old mask is not asked for.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

/// How the child ended.
enum End {
    Exited(i32),
    Signalled(c_int),
}

/// Waits for the child's end or the worker's death; never returns.
fn supervise(child: pid_t, parent: pid_t, me: pid_t, watched: &libc::sigset_t) -> ! {
    let timeout = libc::timespec {
        tv_sec: PARENT_CHECK_SECONDS,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: all pointers are valid for the call.
        let signal = unsafe { libc::sigtimedwait(watched, &mut info, &timeout) };
        match signal {
            WORKER_DIED => kill_group(me),
            -1 => {
                let err = io::Error::last_os_error().raw_os_error();
                if err == Some(libc::EAGAIN) {
                    // A quiet second: is the worker still there?
                    // SAFETY: getppid has no preconditions.
                    if unsafe { libc::getppid() } != parent {
                        kill_group(me);
                    }
                } else if err != Some(libc::EINTR) {
                    // Cannot happen with valid arguments; not knowing when to stop is not an
                    // option, so stop now, with everything.
                    kill_group(me);
                }
            }
            // SIGTERM, SIGINT, SIGHUP: the whole group got it; the child decides what it means.
            _ => {}
        }
        // Any wake-up may come with (or after a coalesced) SIGCHLD: look at the child each time.
        match child_end(child) {
            Ok(None) => {}
            Ok(Some(End::Exited(code))) => std::process::exit(code),
            Ok(Some(End::Signalled(signal))) => die_by(signal),
            // Only we could reap it, so this does not happen; should it, the child is lost to
            // us, and so is everything it left behind.
            Err(_) => kill_group(me),
        }
    }
}

/// The child's end, if it has ended (and reaps it then).
fn child_end(child: pid_t) -> io::Result<Option<End>> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid out-parameter.
        let rc = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if rc == 0 {
            return Ok(None);
        }
        if rc == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(End::Exited(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(End::Signalled(libc::WTERMSIG(status))));
        }
        // Stopped or continued: not an end (and not reported without WUNTRACED anyway).
    }
}

/// Ends this process by `signal`, so our parent sees the child's death as its own.
fn die_by(signal: c_int) -> ! {
    // SAFETY: plain system calls on valid, initialized arguments.
    unsafe {
        // The child dumped its own core, if any; a second one of ours would only mislead.
        let mut core: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut core) == 0 {
            core.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &core);
        }
        // std may have a handler installed (SIGSEGV, SIGBUS for stack overflows), and the
        // watched signals are blocked: the default action must apply at once.
        libc::signal(signal, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Only a signal whose default action is not to terminate gets here, and no such signal
    // can have ended the child; report it as a shell would.
    std::process::exit(128 + signal)
}

/// Kills our process group, ourselves included.
fn kill_group(me: pid_t) -> ! {
    // SAFETY: kill has no memory-safety preconditions. `me` leads our group (checked at start
    // before anything can call this), so this reaches our group and no other.
    unsafe { libc::kill(-me, libc::SIGKILL) };
    // SIGKILL to ourselves is delivered before kill returns; this is not reached.
    std::process::exit(128 + libc::SIGKILL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(OsString::from))
    }

    #[test]
    fn parses_the_command_line() {
        assert_eq!(
            args(&["42", "--", "sh", "-c", "exit 3"]).unwrap(),
            Args {
                report_fd: None,
                parent: 42,
                program: "sh".into(),
                args: vec!["-c".into(), "exit 3".into()],
            }
        );
        let a = args(&["--report-fd", "7", "42", "--", "true"]).unwrap();
        assert_eq!((a.report_fd, a.parent, a.args.len()), (Some(7), 42, 0));
        // Arguments after the program are the program's, whatever they look like.
        let a = args(&["1", "--", "prog", "--", "--report-fd"]).unwrap();
        assert_eq!(a.args, ["--", "--report-fd"]);
    }

    #[test]
    fn refuses_nonsense() {
        for (line, why) in [
            (&[][..], "parent pid is missing"),
            (&["42"][..], "`--` must follow"),
            (&["42", "sh"][..], "`--` must follow"),
            (&["42", "--"][..], "program is missing"),
            (&["0", "--", "true"][..], "is not a pid"),
            (&["x", "--", "true"][..], "is not a pid"),
            (&["--report-fd"][..], "needs a value"),
            (&["--report-fd", "1", "4", "--", "true"][..], "above 2"),
        ] {
            let err = args(line).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }
}
