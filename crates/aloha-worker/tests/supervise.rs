//! `aloha-supervise`, the built binary, supervising real processes: what it passes on, what it
//! reports, and what it kills when its parent dies.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SUPERVISE: &str = env!("CARGO_BIN_EXE_aloha-supervise");

/// Long enough for a loaded CI machine and for the container's init to reap killed orphans.
const DEADLINE: Duration = Duration::from_secs(20);

fn this_pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// `aloha-supervise <our pid> -- <command...>`, leading its own process group.
fn supervise(command: &[&str]) -> Command {
    let mut c = Command::new(SUPERVISE);
    c.arg(this_pid().to_string())
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .process_group(0);
    c
}

fn run(command: &[&str]) -> ExitStatus {
    supervise(command).status().expect("run aloha-supervise")
}

/// Polls `condition` until it holds; panics with `what` at the deadline.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether any process is in group `pgid`, zombies included.
fn group_exists(pgid: libc::pid_t) -> bool {
    assert!(pgid > 1);
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "kill(-{pgid}, 0)");
    false
}

/// The command names of the live (non-zombie) members of group `pgid`, from /proc.
fn group_members(pgid: libc::pid_t) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        // Processes may vanish while we look.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() >= 3 && rest[0] != "Z" && rest[2].parse() == Ok(pgid) {
            members.push(stat[open + 1..close].to_owned());
        }
    }
    members.sort();
    members
}

/// Kills process group `.0` if the test fails while it may still run: a failed test must not
/// leave sleeps behind (or hold the test's output open).
struct KillOnPanic(libc::pid_t);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: plain kill(2); the group was seen alive, so its id is not reused yet.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
}

#[test]
fn the_exit_code_is_passed_on() {
    assert_eq!(run(&["true"]).code(), Some(0));
    assert_eq!(run(&["sh", "-c", "exit 3"]).code(), Some(3));
    assert_eq!(run(&["sh", "-c", "exit 255"]).code(), Some(255));
}

#[test]
fn death_by_signal_is_passed_on() {
    for (script, signal) in [
        ("kill -SEGV $$", libc::SIGSEGV),
        ("kill -9 $$", libc::SIGKILL),
        // One of the signals the supervisor blocks for itself.
        ("kill -TERM $$", libc::SIGTERM),
        ("kill -HUP $$", libc::SIGHUP),
    ] {
        let status = run(&["sh", "-c", script]);
        assert_eq!(status.signal(), Some(signal), "{script}: {status}");
        assert!(
            !status.core_dumped(),
            "{script}: the supervisor dumped core"
        );
    }
}

#[test]
fn sigterm_to_the_group_is_the_programs_to_handle() {
    // The program turns SIGTERM into a clean exit; the supervisor, which got it too, must not
    // die by it.
    let mut child = supervise(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let pgid = child.id() as libc::pid_t;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: plain kill(2) on the group of our own child, which is not reaped yet.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Makes `c` start as if its parent ran under `nohup` with more bad habits: SIGHUP, SIGQUIT,
/// SIGUSR2 and a real-time signal ignored, SIGTERM blocked.
fn with_a_dirty_signal_state(c: &mut Command) {
    let rt = libc::SIGRTMIN() + 1;
    // SAFETY: signal, sigemptyset, sigaddset and sigprocmask are async-signal-safe; `set` is
    // initialized before use. std has reset the mask already, so this is what the exec sees.
    unsafe {
        c.pre_exec(move || {
            for signal in [libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR2, rt] {
                libc::signal(signal, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

#[test]
fn the_program_starts_with_default_signals_and_none_blocked() {
    let mut c = supervise(&[
        "sh",
        "-c",
        "grep -E '^Sig(Blk|Ign):' /proc/self/status; echo \"pgid=$(cut -d' ' -f5 /proc/$$/stat) ppid=$PPID\"",
    ]);
    with_a_dirty_signal_state(&mut c);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // Whatever the worker inherited is not the app's: nothing ignored, nothing blocked, as
    // under a service manager.
    // Signals 32 and 33 are glibc's own, out of reach of signal(2) (systemd cannot reset them
    // either); cargo, for one, starts its tests with one of them ignored.
    let catchable = (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX());
    let catchable = catchable.fold(0u64, |bits, signal| bits | 1 << (signal - 1));
    for field in ["SigBlk", "SigIgn"] {
        let bits = text
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(":\t"))
            .unwrap();
        let bits = u64::from_str_radix(bits, 16).unwrap();
        assert_eq!(bits & catchable, 0, "{field}: {text}");
    }
    // The program runs in the group its parent, the supervisor, leads.
    let pgid_line = text.lines().last().unwrap();
    let (pgid, ppid) = pgid_line
        .strip_prefix("pgid=")
        .and_then(|l| l.split_once(" ppid="))
        .unwrap();
    assert_eq!(pgid, ppid, "{text}");
}

#[test]
fn a_program_sent_sighup_dies_by_it_even_under_nohup() {
    let mut c = supervise(&["sh", "-c", "kill -HUP $$; echo survived"]);
    with_a_dirty_signal_state(&mut c);
    let out = c.output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGHUP), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{out:?}");
}

/// A close-on-exec pipe, as the plugins make it.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just opened for us alone.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs `aloha-supervise --report-fd <w> <us> -- <command...>` and returns what it reported (up
/// to end of file), the child, still running or not, and the pipe's name in `/proc/*/fd`.
fn run_reporting(command: &[&str]) -> (String, std::process::Child, String) {
    run_reporting_on(false, command)
}

/// [`run_reporting`]; with `on_stdin`, as the worker's plugins start it: `--report-fd 0`, the
/// pipe handed over as stdin, with no code between fork and exec.
fn run_reporting_on(on_stdin: bool, command: &[&str]) -> (String, std::process::Child, String) {
    let (read, write) = pipe();
    let fd = write.as_raw_fd();
    let name = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut c = Command::new(SUPERVISE);
    c.arg("--report-fd")
        .arg(if on_stdin { "0".into() } else { fd.to_string() })
        .arg(this_pid().to_string())
        .arg("--")
        .args(command)
        .stdout(Stdio::piped())
        .process_group(0);
    let mut ours = Some(write);
    if on_stdin {
        c.stdin(Stdio::from(ours.take().expect("the write end")));
    } else {
        c.stdin(Stdio::null());
        // SAFETY: fcntl is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = c.spawn().unwrap();
    // Our write ends (the command's copy for the child's stdin, or `ours`) close here: end of
    // file then means the supervisor is done with the pipe.
    drop(c);
    drop(ours);
    let mut report = String::new();
    std::fs::File::from(read)
        .read_to_string(&mut report)
        .unwrap();
    (report, child, name)
}

#[test]
fn a_program_that_cannot_run_is_reported_on_the_pipe() {
    let (report, mut child, _) = run_reporting(&["/nonexistent/aloha-program", "x"]);
    assert_eq!(report, "No such file or directory (os error 2)");
    assert_eq!(child.wait().unwrap().code(), Some(127));

    let dir = tempfile::tempdir().unwrap();
    let (report, mut child, _) = run_reporting(&[dir.path().to_str().unwrap()]);
    assert_eq!(report, "Permission denied (os error 13)");
    assert_eq!(child.wait().unwrap().code(), Some(127));
}

#[test]
fn a_running_program_is_reported_by_closing_the_pipe() {
    let (report, mut child, pipe) = run_reporting(&[
        "sh",
        "-c",
        "for fd in /proc/self/fd/*; do readlink $fd; done; exit 5",
    ]);
    assert_eq!(report, "", "end of file without a word: the program runs");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(5));
    assert!(pipe.starts_with("pipe:"), "{pipe}");
    assert!(!out.contains(&pipe), "the report pipe {pipe} leaked: {out}");
}

/// `--report-fd 0`, as the worker's plugins start it: the pipe is the supervisor's stdin, handed
/// over without any code between fork and exec (so std can use `posix_spawn`).
#[test]
fn a_report_pipe_on_stdin_is_moved_away_and_the_program_reads_dev_null() {
    let (report, mut child, pipe) = run_reporting_on(
        true,
        &[
            "sh",
            "-c",
            "readlink /proc/self/fd/0; for fd in /proc/self/fd/*; do readlink $fd; done; exit 3",
        ],
    );
    assert_eq!(report, "", "end of file without a word: the program runs");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_eq!(out.lines().next(), Some("/dev/null"), "{out}");
    assert!(pipe.starts_with("pipe:"), "{pipe}");
    assert!(!out.contains(&pipe), "the report pipe {pipe} leaked: {out}");

    // A program that cannot run is told on the same pipe.
    let (report, mut child, _) = run_reporting_on(true, &["/nonexistent/aloha-program"]);
    assert_eq!(report, "No such file or directory (os error 2)");
    assert_eq!(child.wait().unwrap().code(), Some(127));
}

#[test]
fn the_whole_group_dies_with_the_parent() {
    // The parent (a shell standing in for the worker) starts the supervisor, prints its pid, and
    // exits when we close its stdin. The app leaves two sleeps in the group, as in the bug.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" $$ -- sh -c 'sleep 601 & sleep 602; wait' & echo $!; read _; exit 0"#)
        .arg(SUPERVISE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pgid: libc::pid_t = line.trim().parse().expect("the supervisor's pid");
    let _cleanup = KillOnPanic(pgid);
    wait_until("both sleeps run under the supervisor", || {
        group_members(pgid) == ["aloha-supervise", "sh", "sleep", "sleep"]
    });
    drop(parent.stdin.take());
    assert!(parent.wait().unwrap().success());
    // Nobody sweeps the group but the supervisor, woken by its death signal.
    wait_until("the group is gone", || !group_exists(pgid));
}

#[test]
fn a_parent_that_is_gone_already_means_no_start() {
    // Pid 1 is nobody's parent here: the supervisor must not run the program.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let status = Command::new(SUPERVISE)
        .args(["1", "--", "touch"])
        .arg(&marker)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .output()
        .unwrap();
    assert_eq!(status.status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stderr).contains("its parent is not pid 1"));
    assert!(!marker.exists());
}

#[test]
fn a_bad_command_line_is_refused_with_the_usage() {
    let out = Command::new(SUPERVISE)
        .args(["12", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`--` must follow") && err.contains("usage:"),
        "{err}"
    );
}
