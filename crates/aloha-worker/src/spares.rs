//! Attempt directories made ahead of time, so that starting an app creates no file.
//!
//! An app start needs `<work-dir>/<app-id>/<attempt>/` with `description.json`, `stdout` and
//! `stderr` in it before the program runs: two directories and three files. On most disks a
//! creation costs tens of microseconds, but on some it costs far more (on the benchmark VM's
//! ext4, without a journal, every new inode is checked against recently deleted ones: 0.2 to 1
//! ms each, growing with the page cache), and they all sit between the launch and RUNNING.
//!
//! So a background thread keeps a few ready-made trees, `<work-dir>/.spare/<n>/1/` holding the
//! three (empty) files, and a launch takes one with a single `rename`: the whole tree becomes
//! `<app-id>` for a first attempt in a new app directory, or its `1/` becomes `<app-id>/<attempt>`
//! otherwise. `rename` moves directory entries and creates no inode. When none is ready, or the
//! rename fails (an attempt directory that exists already and is not empty), the launch makes
//! the directory itself, as it always did. The files are empty until the worker writes
//! `description.json` and the plugin appends to `stdout` and `stderr`.
//!
//! `.spare` is emptied when the worker starts (what a previous process left there was never
//! handed out) and is no app's directory: app ids never start with a dot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tracing::warn;

/// The files of every attempt directory, created empty.
pub const FILES: [&str; 3] = ["description.json", "stdout", "stderr"];

/// The directory the spare trees are kept in, inside the work dir.
pub const SPARE_DIR: &str = ".spare";

/// A pool of ready-made attempt directories (see the module documentation).
pub struct Spares {
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when a tree is taken (the maker has work) or the pool is stopped.
    taken: Condvar,
}

struct State {
    ready: Vec<PathBuf>,
    /// How many trees to keep ready; 0 stops the maker.
    target: usize,
    next: u64,
}

impl Spares {
    /// A pool in `work_dir` keeping `target` trees ready, made by a background thread. A pool
    /// whose directory cannot be made hands out nothing (a warning says why); launches then
    /// make their directories themselves.
    pub fn start(work_dir: &Path, target: usize) -> Arc<Spares> {
        let spares = Arc::new(Spares {
            dir: work_dir.join(SPARE_DIR),
            state: Mutex::new(State {
                ready: Vec::new(),
                target,
                next: 0,
            }),
            taken: Condvar::new(),
        });
        let maker = Arc::clone(&spares);
        let started = std::thread::Builder::new()
            .name("spare-dirs".into())
            .spawn(move || maker.make());
        if let Err(e) = started {
            warn!("cannot start the thread that prepares app directories: {e}");
        }
        spares
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a push, a pop or a counter: never half done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The maker thread: empties the pool's directory, then keeps `target` trees ready.
    fn make(&self) {
        if let Err(e) = empty_dir(&self.dir) {
            warn!(
                "app directories are made at launch: cannot prepare {}: {e}",
                self.dir.display()
            );
            return;
        }
        loop {
            let n = {
                let mut state = self.lock();
                while state.target > 0 && state.ready.len() >= state.target {
                    state = self.taken.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.target == 0 {
                    return;
                }
                state.next += 1;
                state.next
            };
            let tree = self.dir.join(n.to_string());
            match make_tree(&tree) {
                Ok(()) => self.lock().ready.push(tree),
                Err(e) => {
                    warn!(
                        "app directories are made at launch: cannot prepare {}: {e}",
                        tree.display()
                    );
                    return;
                }
            }
        }
    }

    /// Makes `app_dir` (`<work-dir>/<app-id>/<attempt>`) from a ready tree, with the empty
    /// [`FILES`] in it. False when none was ready or it could not be moved there: the caller
    /// then makes the directory itself.
    pub fn place(&self, app_dir: &Path) -> bool {
        let Some(tree) = self.lock().ready.pop() else {
            return false;
        };
        self.taken.notify_one();
        let placed = match (app_dir.parent(), app_dir.file_name()) {
            // A first attempt in a new app directory: the whole tree is the app directory.
            (Some(app), Some(attempt)) if attempt == "1" && !app.exists() => {
                std::fs::rename(&tree, app).is_ok()
            }
            (Some(app), Some(_)) => {
                let moved = std::fs::create_dir_all(app).is_ok()
                    && std::fs::rename(tree.join("1"), app_dir).is_ok();
                // Emptied by the move, or left whole: either way no longer a ready tree.
                let _ = std::fs::remove_dir(&tree).or_else(|_| std::fs::remove_dir_all(&tree));
                moved
            }
            _ => false,
        };
        if !placed {
            let _ = std::fs::remove_dir_all(&tree);
        }
        placed
    }

    /// Stops the maker thread (it ends once it finishes the tree it is making).
    pub fn stop(&self) {
        self.lock().target = 0;
        self.taken.notify_all();
    }

    /// How many trees are ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }
}

/// Creates `dir` if needed and removes everything in it.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `tree/1/` with the empty [`FILES`].
fn make_tree(tree: &Path) -> std::io::Result<()> {
    let attempt = tree.join("1");
    std::fs::create_dir_all(&attempt)?;
    for name in FILES {
        std::fs::File::create(attempt.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_ready(spares: &Spares, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while spares.ready() < n {
            assert!(Instant::now() < deadline, "{} trees ready", spares.ready());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_first_attempt_takes_a_whole_tree_and_the_pool_refills() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::start(work.path(), 2);
        wait_ready(&spares, 2);
        let app_dir = work.path().join("app-1").join("1");
        assert!(spares.place(&app_dir));
        assert_eq!(files_in(&app_dir), ["description.json", "stderr", "stdout"]);
        assert_eq!(files_in(&work.path().join("app-1")), ["1"]);
        wait_ready(&spares, 2);
        assert_eq!(files_in(&work.path().join(SPARE_DIR)).len(), 2);
        spares.stop();
    }

    #[test]
    fn a_later_attempt_goes_beside_the_earlier_one() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::start(work.path(), 1);
        wait_ready(&spares, 1);
        let first = work.path().join("app-1").join("1");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::write(first.join("stdout"), "first attempt\n").unwrap();
        let second = work.path().join("app-1").join("2");
        assert!(spares.place(&second));
        assert_eq!(files_in(&second), ["description.json", "stderr", "stdout"]);
        assert_eq!(
            std::fs::read_to_string(first.join("stdout")).unwrap(),
            "first attempt\n",
            "the earlier attempt is untouched"
        );
        // The emptied tree is gone; only the refill is left.
        wait_ready(&spares, 1);
        assert_eq!(files_in(&work.path().join(SPARE_DIR)).len(), 1);
        spares.stop();
    }

    #[test]
    fn an_attempt_directory_in_use_is_not_replaced() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::start(work.path(), 1);
        wait_ready(&spares, 1);
        let app_dir = work.path().join("app-1").join("1");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::write(app_dir.join("stdout"), "kept\n").unwrap();
        assert!(!spares.place(&app_dir), "the caller makes it itself");
        assert_eq!(files_in(&app_dir), ["stdout"]);
        assert_eq!(
            std::fs::read_to_string(app_dir.join("stdout")).unwrap(),
            "kept\n"
        );
        spares.stop();
    }

    #[test]
    fn what_an_earlier_worker_left_is_cleared() {
        let work = tempfile::tempdir().unwrap();
        let left = work.path().join(SPARE_DIR).join("7").join("1");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("stdout"), "from an earlier worker\n").unwrap();
        let spares = Spares::start(work.path(), 1);
        wait_ready(&spares, 1);
        assert_eq!(files_in(&work.path().join(SPARE_DIR)), ["1"]);
        spares.stop();
    }

    #[test]
    fn a_pool_that_cannot_make_its_directory_hands_out_nothing() {
        let work = tempfile::tempdir().unwrap();
        // A file where the pool's directory would go.
        std::fs::write(work.path().join(SPARE_DIR), "").unwrap();
        let spares = Spares::start(work.path(), 2);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(spares.ready(), 0);
        assert!(!spares.place(&work.path().join("app-1").join("1")));
    }
}
