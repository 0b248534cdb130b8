//! An app's output files: opening them, following them as they grow, and quoting their end.
//!
//! Plugins send a child's stdout and stderr straight to files in the app directory (the child
//! never blocks on a pipe the plugin forgot to drain, and the operator finds the logs there), and
//! read them back from those files: [`Follower`] to spot a line as it appears (an application
//! id), [`tail_lines`] to quote the end in a failure message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The most a line may grow before it is cut and handed on as it is.
const MAX_LINE: usize = 64 * 1024;

/// The most [`tail_lines`] reads from the end of a file.
const TAIL_BYTES: u64 = 64 * 1024;

/// The longest a quoted line gets in a message; longer ones are cut with `…`.
const MAX_QUOTED_LINE: usize = 400;

/// Opens `<dir>/<name>` for appending, creating it.
pub fn open_log(dir: &Path, name: &str) -> Result<File, String> {
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// The current length of `path`, 0 if it does not exist.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads the lines appended to a file, as it grows. Start it at the file's length before the
/// process that writes it starts (see [`Follower::from_end`]), so that an earlier attempt's
/// output is not read as this one's.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Follows `path` from `offset`.
    pub fn new(path: impl Into<PathBuf>, offset: u64) -> Follower {
        Follower {
            path: path.into(),
            offset,
            partial: Vec::new(),
        }
    }

    /// Follows `path` from its current end (from the start if it does not exist yet).
    pub fn from_end(path: impl Into<PathBuf>) -> Follower {
        let path = path.into();
        let offset = file_len(&path);
        Follower::new(path, offset)
    }

    /// The complete lines written since the last call (without their `\n`; invalid UTF-8
    /// replaced). A line longer than 64 KiB comes in pieces. A file that cannot be read (yet)
    /// has no new lines.
    pub fn read_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let Ok(mut file) = File::open(&self.path) else {
            return lines;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return lines;
        }
        let mut buf = Vec::new();
        // Bounded per call so that a flood of output cannot take all memory at once.
        let Ok(n) = file.by_ref().take(4 * 1024 * 1024).read_to_end(&mut buf) else {
            return lines;
        };
        self.offset += n as u64;
        for &byte in &buf {
            if byte == b'\n' {
                lines.push(take_line(&mut self.partial));
            } else {
                self.partial.push(byte);
                if self.partial.len() >= MAX_LINE {
                    lines.push(take_line(&mut self.partial));
                }
            }
        }
        lines
    }

    /// Like [`read_lines`](Follower::read_lines), plus the last line even without its `\n`:
    /// for when the writer is gone.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = self.read_lines();
        if !self.partial.is_empty() {
            lines.push(take_line(&mut self.partial));
        }
        lines
    }
}

fn take_line(partial: &mut Vec<u8>) -> String {
    let line = String::from_utf8_lossy(partial)
        .trim_end_matches('\r')
        .to_owned();
    partial.clear();
    line
}

/// The last `n` lines of `path` (reading at most its last 64 KiB), without those `skip` says to
/// leave out; empty if the file cannot be read.
pub fn tail_lines(path: &Path, n: usize, skip: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line is probably cut in the middle.
        lines.remove(0);
    }
    let kept: Vec<String> = lines
        .into_iter()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !skip(l))
        .map(quote_line)
        .collect();
    kept[kept.len().saturating_sub(n)..].to_vec()
}

fn quote_line(line: &str) -> String {
    if line.len() <= MAX_QUOTED_LINE {
        return line.to_owned();
    }
    let mut end = MAX_QUOTED_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Whether `line` is a routine log line of a JVM tool (Spark's `26/11/21 16:36:51 INFO
/// SparkContext: ...`, Flink's `2026-11-21 16:48:42,673 INFO  org.apache...`): a date, a time,
/// then INFO, DEBUG or TRACE. Such lines bury the error a failure message should quote.
pub fn is_routine_log_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(date), Some(time), Some(level)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let looks_like_date = date.len() >= 8
        && date.starts_with(|c: char| c.is_ascii_digit())
        && (date.contains('/') || date.contains('-'));
    let looks_like_time = time.starts_with(|c: char| c.is_ascii_digit()) && time.contains(':');
    looks_like_date && looks_like_time && matches!(level, "INFO" | "DEBUG" | "TRACE")
}

/// The last lines of an app's `stderr` and `stdout` files in `dir`, for a failure message:
/// `"\n--- last lines of stderr ---\n..."` for each that has any, routine log lines left out
/// (see [`is_routine_log_line`]); empty if both are empty.
pub fn output_tail(dir: &Path, stderr_lines: usize, stdout_lines: usize) -> String {
    let mut out = String::new();
    for (name, n) in [("stderr", stderr_lines), ("stdout", stdout_lines)] {
        let lines = tail_lines(&dir.join(name), n, is_routine_log_line);
        if !lines.is_empty() {
            out.push_str(&format!("\n--- last lines of {name} ---\n"));
            out.push_str(&lines.join("\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_follower_hands_out_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "from an earlier attempt\n").unwrap();
        let mut f = Follower::from_end(&path);
        assert!(f.read_lines().is_empty());
        let mut file = open_log(dir.path(), "out").unwrap();
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(f.read_lines(), ["one"]);
        file.write_all(b"o\r\nthree").unwrap();
        assert_eq!(f.read_lines(), ["two"]);
        assert!(f.read_lines().is_empty());
        assert_eq!(f.finish(), ["three"]);
        assert!(f.finish().is_empty());
    }

    #[test]
    fn a_follower_of_a_missing_file_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later");
        let mut f = Follower::from_end(&path);
        assert!(f.read_lines().is_empty());
        std::fs::write(&path, "hello\n").unwrap();
        assert_eq!(f.read_lines(), ["hello"]);
    }

    #[test]
    fn very_long_lines_come_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut f = Follower::from_end(&path);
        std::fs::write(&path, "x".repeat(MAX_LINE + 10) + "\n").unwrap();
        let lines = f.read_lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1].len(), 10);
    }

    #[test]
    fn tail_keeps_the_last_lines_without_the_skipped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("err");
        assert!(tail_lines(&path, 5, |_| false).is_empty());
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            tail_lines(&path, 3, |_| false),
            ["line 28", "line 29", "line 30"]
        );
        assert_eq!(
            tail_lines(&path, 2, |l| l.ends_with('0')),
            ["line 28", "line 29"]
        );
        std::fs::write(&path, "a".repeat(1000)).unwrap();
        let quoted = &tail_lines(&path, 1, |_| false)[0];
        assert!(quoted.ends_with('…') && quoted.len() < 500, "{quoted}");
    }

    #[test]
    fn tail_of_a_big_file_reads_only_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail_lines(&path, 1, |_| false), ["line 19999"]);
        let all = tail_lines(&path, usize::MAX, |_| false);
        assert!(all.len() < 10_000);
        assert!(all[0].starts_with("line "), "no cut first line: {}", all[0]);
    }

    #[test]
    fn routine_jvm_log_lines_are_recognised() {
        for line in [
            "26/11/21 16:36:51 INFO SparkContext: Running Spark version 4.0.1",
            "2026-11-21 16:48:42,673 INFO  org.apache.flink.runtime.Foo [] - hi",
            "2026-11-21 16:48:42,673 DEBUG x",
        ] {
            assert!(is_routine_log_line(line), "{line}");
        }
        for line in [
            "26/11/21 16:36:51 WARN NativeCodeLoader: Unable to load",
            "26/11/21 16:36:51 ERROR SparkContext: boom",
            "Traceback (most recent call last):",
            "INFO something without a date",
            "  File \"x.py\", line 3, in <module> INFO",
            "",
        ] {
            assert!(!is_routine_log_line(line), "{line}");
        }
    }

    #[test]
    fn output_tail_quotes_both_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(output_tail(dir.path(), 5, 5), "");
        std::fs::write(
            dir.path().join("stderr"),
            "26/11/21 16:36:51 INFO X: noise\nError: bad thing\n26/11/21 16:36:52 INFO Y: bye\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("stdout"), "printed\n").unwrap();
        assert_eq!(
            output_tail(dir.path(), 5, 5),
            "\n--- last lines of stderr ---\nError: bad thing\n--- last lines of stdout ---\nprinted"
        );
    }
}
