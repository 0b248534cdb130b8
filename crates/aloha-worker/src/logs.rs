//! An app attempt's `stdout` and `stderr`, served to the master: ranged reads and a follow
//! stream.
//!
//! The files are `<work_dir>/<app_id>/<attempt>/stdout|stderr`, written by the app (the process
//! plugin appends to them). Ids become paths, so they are checked strictly before any file is
//! touched: `app-<14 digits>-<digits>` and an attempt of 1 or more, nothing else.
//!
//! Following polls the file's size every [`POLL`]: one `stat` per follower and poll, for any
//! plugin on any file system (inotify would miss writes on network mounts and needs a thread).
//! A follow ends once the worker's record of the attempt is terminal, or gone (a newer attempt
//! replaced it, or it was forgotten after the master acknowledged its end), and everything up to
//! the end of the file was sent. The state is read *before* the file, so a read that saw the
//! attempt ended also saw every byte it wrote.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aloha_core::{AppId, AppState};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info};

use crate::worker::Worker;

/// Bytes read when the request names no limit.
pub const DEFAULT_LIMIT: u64 = 64 * 1024;
/// The most bytes one read returns; a larger limit is served as this.
pub const MAX_LIMIT: u64 = 1024 * 1024;
/// The most bytes one chunk of a follow stream holds.
pub const FOLLOW_CHUNK: u64 = 64 * 1024;
/// Concurrent follow streams a worker serves; the next is refused until one ends.
pub const MAX_FOLLOWERS: usize = 16;
/// How often a follower looks at its file and the attempt's state.
pub const POLL: Duration = Duration::from_millis(200);

/// Which of an attempt's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
}

impl LogStream {
    /// The file name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            other => Err(LogError::BadRequest(format!(
                "stream must be stdout or stderr (got {other:?})"
            ))),
        }
    }
}

/// A validated request for part of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// A well-formed app id (safe as a path component).
    pub app_id: String,
    /// 1 or more.
    pub attempt: u32,
    /// Which file.
    pub stream: LogStream,
    /// Where to start; `None`: `limit` bytes before the end.
    pub offset: Option<u64>,
    /// The most bytes to read, 1 to [`MAX_LIMIT`].
    pub limit: u64,
}

impl LogQuery {
    /// Checks a request's fields: a malformed id, attempt or stream is refused; `limit` 0
    /// means [`DEFAULT_LIMIT`] and is capped at [`MAX_LIMIT`].
    pub fn new(
        app_id: &str,
        attempt: u32,
        stream: &str,
        offset: Option<u64>,
        limit: u64,
    ) -> Result<LogQuery, LogError> {
        // `seq()` accepts exactly `app-<14 digits>-<digits>`: no dots, slashes or NULs.
        if AppId(app_id.to_string()).seq().is_none() {
            return Err(LogError::BadRequest(format!(
                "{app_id:?} is not an app id (app-<14 digits>-<digits>)"
            )));
        }
        if attempt == 0 {
            return Err(LogError::BadRequest("attempt must be 1 or more".into()));
        }
        let limit = match limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        Ok(LogQuery {
            app_id: app_id.to_string(),
            attempt,
            stream: stream.parse()?,
            offset,
            limit,
        })
    }
}

/// Part of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// Where `data` starts in the file.
    pub offset: u64,
    /// `offset + data.len()`.
    pub next_offset: u64,
    /// The file's size when read.
    pub size: u64,
    /// The attempt has ended here: the file will not grow.
    pub ended: bool,
}

/// Why a log cannot be served; mapped to a gRPC code in [`crate::rpc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// A malformed id, attempt or stream, or an offset past the end.
    BadRequest(String),
    /// No such attempt or file on this worker.
    NotFound(String),
    /// Too many followers already.
    Busy(String),
    /// The file could not be read.
    Io(String),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::BadRequest(m) | LogError::NotFound(m) | LogError::Busy(m) => f.write_str(m),
            LogError::Io(m) => write!(f, "cannot read the log: {m}"),
        }
    }
}

impl std::error::Error for LogError {}

/// What the log service needs to know of the worker's attempts.
pub trait Attempts: Send + Sync + 'static {
    /// The attempt's state while the worker keeps its record (see
    /// [`Worker::attempt_state`]).
    fn attempt_state(&self, app_id: &str, attempt: u32) -> Option<AppState>;
}

impl Attempts for Worker {
    fn attempt_state(&self, app_id: &str, attempt: u32) -> Option<AppState> {
        Worker::attempt_state(self, app_id, attempt)
    }
}

/// Serves the logs under one work dir.
pub struct Logs {
    worker_id: String,
    work_dir: PathBuf,
    attempts: Arc<dyn Attempts>,
    followers: Arc<Semaphore>,
    max_followers: usize,
}

impl Logs {
    /// The logs of the attempts under `work_dir`, with at most `max_followers` follow streams
    /// at a time.
    pub fn new(
        worker_id: String,
        work_dir: PathBuf,
        attempts: Arc<dyn Attempts>,
        max_followers: usize,
    ) -> Logs {
        Logs {
            worker_id,
            work_dir,
            attempts,
            followers: Arc::new(Semaphore::new(max_followers)),
            max_followers,
        }
    }

    /// The logs of `worker`'s attempts, with [`MAX_FOLLOWERS`].
    pub fn of(worker: Arc<Worker>) -> Logs {
        Logs::new(
            worker.id.clone(),
            worker.work_dir().to_path_buf(),
            worker,
            MAX_FOLLOWERS,
        )
    }

    fn attempt_dir(&self, q: &LogQuery) -> PathBuf {
        self.work_dir.join(&q.app_id).join(q.attempt.to_string())
    }

    /// A range of the log: from `q.offset`, or the last `q.limit` bytes.
    pub async fn read(&self, q: &LogQuery) -> Result<Chunk, LogError> {
        self.read_at(q, q.offset, q.limit, q.limit).await
    }

    /// At most `max` bytes from `start`, or when `None` from `tail` bytes before the end.
    async fn read_at(
        &self,
        q: &LogQuery,
        start: Option<u64>,
        tail: u64,
        max: u64,
    ) -> Result<Chunk, LogError> {
        // The state first: when it says ended, the read below sees everything written.
        let live = self
            .attempts
            .attempt_state(&q.app_id, q.attempt)
            .is_some_and(|s| !s.is_terminal());
        let dir = self.attempt_dir(q);
        let path = dir.join(q.stream.as_str());
        let read = tokio::task::spawn_blocking(move || read_range(&path, start, tail, max))
            .await
            .map_err(|e| LogError::Io(e.to_string()))?;
        match read {
            Ok((data, offset, size)) => Ok(Chunk {
                next_offset: offset + data.len() as u64,
                data,
                offset,
                size,
                ended: !live,
            }),
            Err(Missing::PastEnd { offset, size }) => Err(LogError::BadRequest(format!(
                "offset {offset} is past the end of {} ({size} bytes)",
                q.stream.as_str()
            ))),
            // Launched, and the app has not opened its file yet: an empty log so far.
            Err(Missing::File) if live => match start {
                Some(o) if o > 0 => Err(LogError::BadRequest(format!(
                    "offset {o} is past the end of {} (0 bytes)",
                    q.stream.as_str()
                ))),
                _ => Ok(Chunk::default()),
            },
            Err(Missing::File) => Err(LogError::NotFound(if dir.is_dir() {
                format!(
                    "attempt {} of {} on worker {} has no {} file",
                    q.attempt,
                    q.app_id,
                    self.worker_id,
                    q.stream.as_str()
                )
            } else {
                format!(
                    "worker {} has no attempt {} of {}",
                    self.worker_id, q.attempt, q.app_id
                )
            })),
            Err(Missing::Io(e)) => Err(LogError::Io(e)),
        }
    }

    /// The log from `q.offset` (or `q.limit` bytes before the end) on, in chunks as it grows,
    /// until the attempt has ended and everything was sent: first an empty chunk that says
    /// where the stream starts, then the data; the last chunk has `ended`. Errors
    /// at once when the log cannot be read or [`MAX_FOLLOWERS`] are already served; a stream
    /// ends early when the receiver is dropped.
    pub async fn follow(
        self: &Arc<Self>,
        q: LogQuery,
    ) -> Result<mpsc::Receiver<Result<Chunk, LogError>>, LogError> {
        let permit = self.followers.clone().try_acquire_owned().map_err(|_| {
            LogError::Busy(format!(
                "worker {} already serves {} log followers; try again later",
                self.worker_id, self.max_followers
            ))
        })?;
        // Checks the request and places the start.
        let first = self.read_at(&q, q.offset, q.limit, 0).await?;
        let (tx, rx) = mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(async move {
            info!(app_id = %q.app_id, attempt = q.attempt, stream = q.stream.as_str(),
                  offset = first.offset, "log follower started");
            let mut pos = first.offset;
            // First an empty chunk: where the stream starts and the size then, at once.
            let start = Chunk {
                ended: false,
                ..first
            };
            let sent = tx.send(Ok(start)).await.is_ok()
                && loop {
                    let chunk = match this.read_at(&q, Some(pos), 0, FOLLOW_CHUNK).await {
                        Ok(c) => c,
                        // It ended without ever opening its file.
                        Err(LogError::NotFound(_)) => Chunk {
                            offset: pos,
                            next_offset: pos,
                            ended: true,
                            ..Chunk::default()
                        },
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            break false;
                        }
                    };
                    let last = chunk.ended && chunk.next_offset >= chunk.size;
                    if !chunk.data.is_empty() || last {
                        pos = chunk.next_offset;
                        let chunk = Chunk {
                            ended: last,
                            ..chunk
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            break false;
                        }
                        if last {
                            break true;
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = tx.closed() => break false,
                    }
                };
            debug!(app_id = %q.app_id, attempt = q.attempt, complete = sent, "log follower ended");
            // The place is free before the receiver sees the end.
            drop(permit);
            drop(tx);
        });
        Ok(rx)
    }
}

/// Why [`read_range`] read nothing.
enum Missing {
    File,
    PastEnd { offset: u64, size: u64 },
    Io(String),
}

/// At most `max` bytes of the file at `path` from `start` (or `tail` bytes before its end),
/// with where they start and the file's size. Never reads past the size it saw, so the answer
/// is consistent while the file grows.
fn read_range(
    path: &std::path::Path,
    start: Option<u64>,
    tail: u64,
    max: u64,
) -> Result<(Vec<u8>, u64, u64), Missing> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Missing::File),
        Err(e) => return Err(Missing::Io(format!("{}: {e}", path.display()))),
    };
    let io = |e: std::io::Error| Missing::Io(format!("{}: {e}", path.display()));
    let size = f.metadata().map_err(io)?.len();
    let offset = start.unwrap_or(size.saturating_sub(tail));
    if offset > size {
        return Err(Missing::PastEnd { offset, size });
    }
    let len = max.min(size - offset);
    let mut data = Vec::with_capacity(len as usize);
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.take(len).read_to_end(&mut data).map_err(io)?;
    Ok((data, offset, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Mutex;

    const APP: &str = "app-20250101000000-0001";

    /// An app table the tests set by hand.
    #[derive(Default)]
    struct Table(Mutex<HashMap<(String, u32), AppState>>);

    impl Table {
        fn set(&self, attempt: u32, state: AppState) {
            self.0
                .lock()
                .unwrap()
                .insert((APP.to_string(), attempt), state);
        }
    }

    impl Attempts for Table {
        fn attempt_state(&self, app_id: &str, attempt: u32) -> Option<AppState> {
            self.0
                .lock()
                .unwrap()
                .get(&(app_id.to_string(), attempt))
                .copied()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        table: Arc<Table>,
        logs: Arc<Logs>,
    }

    fn fixture(max_followers: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(Table::default());
        let logs = Arc::new(Logs::new(
            "w1".into(),
            dir.path().to_path_buf(),
            table.clone(),
            max_followers,
        ));
        Fixture { dir, table, logs }
    }

    impl Fixture {
        fn append(&self, attempt: u32, stream: &str, data: &[u8]) {
            let d = self.dir.path().join(APP).join(attempt.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(stream))
                .unwrap()
                .write_all(data)
                .unwrap();
        }
    }

    fn q(offset: Option<u64>, limit: u64) -> LogQuery {
        LogQuery::new(APP, 1, "stdout", offset, limit).unwrap()
    }

    #[test]
    fn queries_refuse_anything_but_well_formed_ids_attempts_and_streams() {
        for bad in [
            "../etc",
            "app-2025-1",
            "app-20250101000000-",
            "app-20250101000000-1/..",
            "app-2025010100000x-1",
            "",
        ] {
            assert!(
                matches!(
                    LogQuery::new(bad, 1, "stdout", None, 0),
                    Err(LogError::BadRequest(_))
                ),
                "{bad:?}"
            );
        }
        assert!(LogQuery::new(APP, 0, "stdout", None, 0).is_err());
        assert!(LogQuery::new(APP, 1, "stdin", None, 0).is_err());
        assert!(LogQuery::new(APP, 1, "../stdout", None, 0).is_err());
        let q = LogQuery::new(APP, 2, "stderr", Some(5), 0).unwrap();
        assert_eq!((q.stream, q.limit), (LogStream::Stderr, DEFAULT_LIMIT));
        assert_eq!(q.offset, Some(5));
        let q = LogQuery::new(APP, 2, "stderr", None, 10 * MAX_LIMIT).unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
    }

    #[tokio::test]
    async fn reads_serve_ranges_and_the_tail() {
        let f = fixture(1);
        f.append(1, "stdout", b"0123456789");
        let c = f.logs.read(&q(Some(2), 3)).await.unwrap();
        assert_eq!(c.data, b"234");
        assert_eq!((c.offset, c.next_offset, c.size, c.ended), (2, 5, 10, true));
        let c = f.logs.read(&q(None, 4)).await.unwrap();
        assert_eq!((c.data.as_slice(), c.offset), (&b"6789"[..], 6));
        let c = f.logs.read(&q(None, 100)).await.unwrap();
        assert_eq!((c.data.len(), c.offset), (10, 0));
        let c = f.logs.read(&q(Some(10), 4)).await.unwrap();
        assert_eq!((c.data.len(), c.next_offset), (0, 10));
        assert!(matches!(
            f.logs.read(&q(Some(11), 4)).await,
            Err(LogError::BadRequest(m)) if m.contains("past the end")
        ));
        f.table.set(1, AppState::Running);
        assert!(!f.logs.read(&q(None, 4)).await.unwrap().ended);
    }

    #[tokio::test]
    async fn missing_files_are_not_found_unless_the_attempt_runs() {
        let f = fixture(1);
        let err = f.logs.read(&q(None, 0)).await.unwrap_err();
        assert_eq!(
            err,
            LogError::NotFound(format!("worker w1 has no attempt 1 of {APP}"))
        );
        f.append(1, "stdout", b"x");
        let stderr = LogQuery::new(APP, 1, "stderr", None, 0).unwrap();
        let err = f.logs.read(&stderr).await.unwrap_err();
        assert_eq!(
            err,
            LogError::NotFound(format!(
                "attempt 1 of {APP} on worker w1 has no stderr file"
            ))
        );
        f.table.set(1, AppState::Launching);
        let c = f.logs.read(&stderr).await.unwrap();
        assert_eq!((c.size, c.ended), (0, false));
    }

    #[tokio::test]
    async fn a_follower_gets_the_log_as_it_grows_and_ends_after_the_attempt() {
        let f = fixture(1);
        f.table.set(1, AppState::Running);
        f.append(1, "stdout", b"old\n");
        let mut rx = f.logs.follow(q(None, 0)).await.unwrap();
        let c = rx.recv().await.unwrap().unwrap();
        assert_eq!((c.data.len(), c.offset, c.size), (0, 0, 4));
        let c = rx.recv().await.unwrap().unwrap();
        assert_eq!((c.data.as_slice(), c.ended), (&b"old\n"[..], false));
        // A second follower is one too many.
        assert!(matches!(
            f.logs.follow(q(None, 0)).await,
            Err(LogError::Busy(m)) if m.contains("worker w1 already serves 1 log followers")
        ));
        f.append(1, "stdout", b"new\n");
        let c = rx.recv().await.unwrap().unwrap();
        assert_eq!((c.data.as_slice(), c.offset), (&b"new\n"[..], 4));
        // Written just before the attempt ended: still sent, then the end.
        f.append(1, "stdout", b"last\n");
        f.table.set(1, AppState::Finished);
        let mut rest = Vec::new();
        let mut ended = false;
        while let Some(c) = rx.recv().await {
            let c = c.unwrap();
            rest.extend(c.data);
            ended = c.ended;
        }
        assert_eq!(rest, b"last\n");
        assert!(ended);
        // The permit came back.
        let mut again = f.logs.follow(q(Some(0), 0)).await.unwrap();
        assert!(again.recv().await.unwrap().unwrap().data.is_empty());
        let c = again.recv().await.unwrap().unwrap();
        assert_eq!((c.data.len(), c.ended), (13, true));
        assert!(again.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_follower_of_an_attempt_that_never_wrote_ends_empty() {
        let f = fixture(2);
        f.table.set(1, AppState::Launching);
        let mut rx = f.logs.follow(q(None, 0)).await.unwrap();
        f.table.set(1, AppState::Error);
        assert!(!rx.recv().await.unwrap().unwrap().ended);
        let c = rx.recv().await.unwrap().unwrap();
        assert!(c.data.is_empty() && c.ended);
        assert!(rx.recv().await.is_none());
    }
}
