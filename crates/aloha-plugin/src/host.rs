//! The host side: finding, loading and driving plugin libraries (feature `host`).
//!
//! [`ApplicationPlugin::load`] opens one library and checks its ABI version; [`scan_dir`] does
//! that for a whole plugin directory. [`ApplicationPlugin::create`] makes an [`AppInstance`],
//! a safe handle whose methods call the plugin and whose `Drop` releases it.
//!
//! Listener plugins are loaded one by one from the paths the master is given:
//! [`ListenerPlugin::load`], then [`ListenerPlugin::create`] for a [`ListenerInstance`] that
//! events are delivered to.

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libloading::Library;

use crate::abi::{
    ApplicationPluginV1, CallStatus, CleanFn, CreateFn, FreeBufferFn, HostCallback, ReleaseFn,
    ShutdownFn, StartFn, ABI_VERSION_SYMBOL, APPLICATION_PLUGIN_SYMBOL, EVENT_DETAIL, EVENT_EXIT,
    LISTENER_PLUGIN_SYMBOL, STATUS_OK, STATUS_PANIC,
};
use crate::types::{DetailPayload, ExitState};
use crate::{AppContext, ABI_VERSION};

mod listener;

pub use crate::types::PluginEvent;
pub use listener::{ListenerInstance, ListenerPlugin};

/// Longest accepted plugin kind (or listener name), in bytes.
pub const MAX_KIND_LEN: usize = 256;

/// Why a plugin library could not be used. Every message starts with the library's path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The dynamic loader refused the file (not a shared object, wrong architecture, missing
    /// dependencies, unresolved symbols).
    #[error("{}: cannot load library: {error}", .path.display())]
    Open {
        /// The library.
        path: PathBuf,
        /// The loader's error (already part of the message, so not also a `source`).
        error: libloading::Error,
    },
    /// The library loads but exports no `aloha_plugin_abi_version`: it is not an Aloha plugin.
    #[error("{}: not an Aloha plugin (no `{ABI_VERSION_SYMBOL}` symbol)", .path.display())]
    NotAPlugin {
        /// The library.
        path: PathBuf,
    },
    /// The plugin was built against another version of the plugin ABI.
    #[error(
        "{}: plugin ABI version {found} does not match this host's ABI version {expected}; \
         rebuild the plugin against this Aloha release",
        .path.display()
    )]
    AbiMismatch {
        /// The library.
        path: PathBuf,
        /// The version the plugin was built with.
        found: u32,
        /// The version this host speaks ([`ABI_VERSION`]).
        expected: u32,
    },
    /// The library is an Aloha plugin but exports no `aloha_listener_plugin`, so it cannot be
    /// used as the listener it was configured as (it may be an Application plugin).
    #[error(
        "{}: not an Aloha listener plugin (no `{LISTENER_PLUGIN_SYMBOL}` symbol)",
        .path.display()
    )]
    NotAListener {
        /// The library.
        path: PathBuf,
    },
    /// The plugin's table is unusable (null, no kind or name, a missing function).
    #[error("{}: invalid plugin table: {reason}", .path.display())]
    InvalidTable {
        /// The library.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file, or the directory holding it, could be changed by someone other than this
    /// process's user or root: writable by group or others, or owned by another user. Loading
    /// it would run their code in this process.
    #[error("{}: refused: {reason}", .path.display())]
    Untrusted {
        /// The library (or directory) refused.
        path: PathBuf,
        /// Which check failed.
        reason: String,
    },
    /// Another library loaded earlier in the same scan provides the same kind.
    #[error("{}: kind {kind:?} is already provided by {}", .path.display(), .first.display())]
    DuplicateKind {
        /// The library refused.
        path: PathBuf,
        /// The kind both provide.
        kind: String,
        /// The library that provides it and was kept.
        first: PathBuf,
    },
}

/// The table's functions, copied out once it was checked: none is null.
#[derive(Clone, Copy)]
struct Vtable {
    create: CreateFn,
    start: StartFn,
    shutdown: ShutdownFn,
    clean: CleanFn,
    release: ReleaseFn,
    free_buffer: FreeBufferFn,
}

/// A loaded Application plugin: a factory of [`AppInstance`]s of one kind.
pub struct ApplicationPlugin {
    kind: String,
    path: PathBuf,
    vtable: Vtable,
    /// Keeps the library loaded while this or any of its instances exists; `None` for a plugin
    /// linked into the host.
    library: Option<Arc<Library>>,
}

impl ApplicationPlugin {
    /// Opens the library at `path` and checks it.
    ///
    /// Returns `Ok(None)` for a valid Aloha plugin that is not an Application plugin (it exports
    /// `aloha_plugin_abi_version` but no `aloha_application_plugin`, e.g. a listener plugin),
    /// [`LoadError::NotAPlugin`] for a library that is no Aloha plugin at all, and
    /// [`LoadError::AbiMismatch`] for a plugin built against another ABI version.
    ///
    /// Libraries are opened with `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE`: unresolved symbols fail
    /// here rather than later, two plugins' symbols never mix, and a library is never unmapped,
    /// so a plugin thread that outlives its instances (a monitor still reaping a process) cannot
    /// run on freed code. Replacing a plugin therefore needs a worker restart.
    ///
    /// Loading a library runs its initializers: only point this at trusted files.
    pub fn load(path: &Path) -> Result<Option<ApplicationPlugin>, LoadError> {
        let path = path.to_path_buf();
        let library = open_plugin(&path)?;
        // SAFETY: by the ABI (whose version `open_plugin` checked), this symbol is an
        // `extern "C" fn() -> *const ApplicationPluginV1`.
        let table = unsafe {
            match library.get::<unsafe extern "C" fn() -> *const ApplicationPluginV1>(
                APPLICATION_PLUGIN_SYMBOL.as_bytes(),
            ) {
                Ok(entry) => entry(),
                Err(_) => return Ok(None),
            }
        };
        // SAFETY: the table comes from the library we keep loaded in the result.
        unsafe { Self::from_table(table, path, Some(Arc::new(library))) }.map(Some)
    }

    /// Wraps a plugin linked into the host (built as an `rlib` and called directly), e.g.
    /// `ApplicationPlugin::from_static(&*aloha_plugin_process::aloha_application_plugin())`.
    /// Its [`path`](Self::path) is `<built-in>`.
    ///
    /// # Safety
    /// `table` must be a valid table of this ABI: made by
    /// [`ApplicationPluginV1::for_application`] or [`declare_application!`](crate::declare_application),
    /// or hand-written to obey the ABI's contract.
    pub unsafe fn from_static(
        table: &'static ApplicationPluginV1,
    ) -> Result<ApplicationPlugin, LoadError> {
        // SAFETY: forwarded from the caller; the table is static, so nothing must be kept alive.
        unsafe { Self::from_table(table, PathBuf::from("<built-in>"), None) }
    }

    /// # Safety
    /// `table` is null or points at a table that stays valid while `library` is loaded.
    unsafe fn from_table(
        table: *const ApplicationPluginV1,
        path: PathBuf,
        library: Option<Arc<Library>>,
    ) -> Result<ApplicationPlugin, LoadError> {
        // SAFETY: forwarded from the caller's contract.
        let table = unsafe { checked_table(table, APPLICATION_PLUGIN_SYMBOL, &path) }?;
        let invalid = |reason: &str| LoadError::InvalidTable {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        // SAFETY: the table promises `kind_len` readable static bytes at `kind_ptr`.
        let kind = unsafe { table_name(table.kind_ptr, table.kind_len, "plugin kind") }
            .map_err(|reason| invalid(&reason))?;
        let missing = |name: &str| invalid(&format!("the table has no `{name}` function"));
        let vtable = Vtable {
            create: table.create.ok_or_else(|| missing("create"))?,
            start: table.start.ok_or_else(|| missing("start"))?,
            shutdown: table.shutdown.ok_or_else(|| missing("shutdown"))?,
            clean: table.clean.ok_or_else(|| missing("clean"))?,
            release: table.release.ok_or_else(|| missing("release"))?,
            free_buffer: table.free_buffer.ok_or_else(|| missing("free_buffer"))?,
        };
        Ok(ApplicationPlugin {
            kind,
            path,
            vtable,
            library,
        })
    }

    /// The kind of apps this plugin runs.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The library the plugin was loaded from (`<built-in>` for [`from_static`](Self::from_static)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an instance for one attempt of an app. The plugin validates `ctx` (its spec in
    /// particular) here; an `Err` is the plugin's explanation of why the app cannot run.
    ///
    /// `on_event` receives the instance's events: details, then at most one exit, which is
    /// always the last (a second exit, and anything after the first, is dropped here even if
    /// the plugin sends it). It runs on a plugin thread (or on the thread calling
    /// [`AppInstance::start`] or [`AppInstance::shutdown`]), one event at a time, until the
    /// instance is dropped: keep it short and non-blocking, e.g. send to a channel, and never
    /// call back into the instance from it (that can deadlock the plugin). An exit state the
    /// plugin sends malformed arrives as a FAILED exit with code -1 saying so; a malformed detail
    /// is dropped.
    pub fn create(
        &self,
        ctx: &AppContext,
        on_event: impl Fn(PluginEvent) + Send + Sync + 'static,
    ) -> Result<AppInstance, CallError> {
        let json = serde_json::to_vec(ctx)
            .map_err(|e| CallError::host(format!("cannot encode the app context: {e}")))?;
        let host_ctx = Box::into_raw(Box::new(HostContext {
            on_event: Box::new(on_event),
            exited: AtomicBool::new(false),
        }));
        let callback = HostCallback {
            ctx: host_ctx.cast(),
            on_event: host_on_event,
        };
        let mut instance: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table was checked at load; the JSON and the out slot outlive the call.
        let status =
            unsafe { (self.vtable.create)(json.as_ptr(), json.len(), callback, &mut instance) };
        let result = take_status(self.vtable.free_buffer, status);
        match result {
            Ok(()) if !instance.is_null() => Ok(AppInstance {
                instance,
                host_ctx,
                vtable: self.vtable,
                kind: self.kind.clone(),
                _library: self.library.clone(),
            }),
            Ok(()) => {
                // A plugin that breaks the contract this way may still hold the callback, so the
                // context is leaked rather than freed under it.
                Err(CallError::host(format!(
                    "plugin {:?} reported success from create but returned no instance",
                    self.kind
                )))
            }
            Err(message) => {
                // SAFETY: create failed, so by the ABI the plugin kept nothing of the callback;
                // the box is ours and freed exactly once.
                drop(unsafe { Box::from_raw(host_ctx) });
                Err(message)
            }
        }
    }
}

impl fmt::Debug for ApplicationPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplicationPlugin")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One app attempt inside a plugin. Dropping it releases the plugin instance; after that no
/// event of it reaches the host.
///
/// Its methods may be called from any thread, also concurrently (the plugin serializes them);
/// they block, briefly, so call them from a blocking context, not from an async task directly.
pub struct AppInstance {
    instance: *mut c_void,
    host_ctx: *mut HostContext,
    vtable: Vtable,
    kind: String,
    /// Dropped after `Drop::drop` has released the instance: the code must outlive the call.
    _library: Option<Arc<Library>>,
}

// SAFETY: the ABI requires plugins to accept calls on an instance from any thread, concurrently
// (the Rust glue serializes them behind a mutex), and the host context is `Send + Sync`.
unsafe impl Send for AppInstance {}
// SAFETY: as above; every method takes `&self` and hands the plugin only the instance pointer.
unsafe impl Sync for AppInstance {}

impl AppInstance {
    /// The kind of the plugin that runs it.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Starts the app. Returns as soon as it started; its end arrives as [`PluginEvent::Exit`],
    /// possibly before this returns (an app that ends at once). An `Err` means it did not start,
    /// and no exit will follow.
    pub fn start(&self) -> Result<(), CallError> {
        // SAFETY: a live instance of this table.
        let status = unsafe { (self.vtable.start)(self.instance) };
        take_status(self.vtable.free_buffer, status)
    }

    /// Asks the app to stop, for `reason`. Returns promptly; the plugin escalates in the
    /// background and reports the end as an exit (normally KILLED). Idempotent; a no-op before
    /// `start` or after the exit.
    pub fn shutdown(&self, reason: Option<&str>) -> Result<(), CallError> {
        let (ptr, len) = match reason {
            Some(r) => (r.as_ptr(), r.len()),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: a live instance of this table; the reason outlives the call.
        let status = unsafe { (self.vtable.shutdown)(self.instance, ptr, len) };
        take_status(self.vtable.free_buffer, status)
    }

    /// Removes what the app left behind (for a process: whatever of its group survives).
    pub fn clean(&self) -> Result<(), CallError> {
        // SAFETY: a live instance of this table.
        let status = unsafe { (self.vtable.clean)(self.instance) };
        take_status(self.vtable.free_buffer, status)
    }
}

impl Drop for AppInstance {
    fn drop(&mut self) {
        // SAFETY: the instance is live and released exactly once, here. When release returns,
        // the plugin no longer uses the callback, so the context can go; the library (a field)
        // is dropped only after this function.
        unsafe {
            (self.vtable.release)(self.instance);
            drop(Box::from_raw(self.host_ctx));
        }
    }
}

impl fmt::Debug for AppInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppInstance")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Loads every `*.so` file directly in `dir` (not recursively), in file-name order.
///
/// Returns the Application plugins and one line per library that could not be used,
/// `"<path>: <error>"`. Libraries that are not Aloha plugins at all (no
/// `aloha_plugin_abi_version`) and Aloha plugins of another sort (no `aloha_application_plugin`)
/// are skipped without a word; a second library providing an already loaded kind is reported
/// and not used.
pub fn scan_dir(dir: &Path) -> (Vec<ApplicationPlugin>, Vec<String>) {
    let mut plugins: Vec<ApplicationPlugin> = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(format!(
                "{}: cannot read plugin directory: {e}",
                dir.display()
            ));
            return (plugins, errors);
        }
    };
    // One clear error for a directory anyone else can write to, rather than one per file.
    if let Err(e) = trusted_entry(dir) {
        errors.push(format!(
            "{}: refused as a plugin directory: {e}",
            dir.display()
        ));
        return (plugins, errors);
    }
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => errors.push(format!(
                "{}: cannot read plugin directory: {e}",
                dir.display()
            )),
        }
    }
    // `is_file` follows symlinks, so a link to a library counts and a directory named x.so not.
    paths.retain(|p| p.extension().is_some_and(|ext| ext == "so") && p.is_file());
    paths.sort();
    for path in paths {
        match ApplicationPlugin::load(&path) {
            Ok(Some(plugin)) => match plugins.iter().find(|p| p.kind == plugin.kind) {
                Some(first) => errors.push(
                    LoadError::DuplicateKind {
                        path,
                        kind: plugin.kind.clone(),
                        first: first.path.clone(),
                    }
                    .to_string(),
                ),
                None => plugins.push(plugin),
            },
            Ok(None) | Err(LoadError::NotAPlugin { .. }) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    (plugins, errors)
}

/// Checks that only this process's user (or root) can change what `path` loads: the file (its
/// symbolic links resolved), the directory it is in, and the directory of the link itself must
/// each be owned by this user or root and not be writable by group or others. Anything else
/// could be swapped for someone else's code, which loading runs in this process.
pub fn check_trusted(path: &Path) -> Result<(), LoadError> {
    let refuse = |reason: String| LoadError::Untrusted {
        path: path.to_path_buf(),
        reason,
    };
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        // Nothing there yet: loading reports the loader's own error, unless someone else could
        // put a file there before it does.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match path.parent().map(std::fs::canonicalize) {
                Some(Ok(dir)) => trusted_entry(&dir).map_err(|reason| {
                    refuse(format!("its directory {} is {reason}", dir.display()))
                }),
                _ => Ok(()),
            };
        }
        Err(e) => return Err(refuse(format!("cannot resolve it: {e}"))),
    };
    let mut checked: Vec<PathBuf> = vec![real.clone()];
    checked.extend(real.parent().map(Path::to_path_buf));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| refuse(format!("cannot resolve {}: {e}", dir.display())))?;
        if !checked.contains(&dir) {
            checked.push(dir);
        }
    }
    for p in &checked {
        trusted_entry(p).map_err(|reason| {
            if p == &real {
                refuse(reason)
            } else {
                refuse(format!("its directory {} is {reason}", p.display()))
            }
        })?;
    }
    Ok(())
}

/// One file or directory: owned by this user or root, not writable by group or others.
fn trusted_entry(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).map_err(|e| format!("unreadable: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && md.uid() != 0 {
        return Err(format!(
            "owned by uid {}, not by this user (uid {me}) or root",
            md.uid()
        ));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {mode:04o}); chmod go-w it"
        ));
    }
    Ok(())
}

/// Opens the library at `path` (refused unless [`check_trusted`]) and checks that it is an Aloha
/// plugin of this ABI version.
fn open_plugin(path: &Path) -> Result<Library, LoadError> {
    check_trusted(path)?;
    let library = open(path).map_err(|error| LoadError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    // SAFETY: by the ABI, this symbol is an `extern "C" fn() -> u32`; the symbol and the library
    // stay alive across the call.
    let found = unsafe {
        let version = library
            .get::<unsafe extern "C" fn() -> u32>(ABI_VERSION_SYMBOL.as_bytes())
            .map_err(|_| LoadError::NotAPlugin {
                path: path.to_path_buf(),
            })?;
        version()
    };
    if found != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: path.to_path_buf(),
            found,
            expected: ABI_VERSION,
        });
    }
    Ok(library)
}

/// Reads and checks the name a table gives itself (a kind, a listener name); `what` names it in
/// the error.
///
/// # Safety
/// `ptr` is null or points at `len` bytes that stay readable while the library is loaded.
unsafe fn table_name(ptr: *const u8, len: usize, what: &str) -> Result<String, String> {
    if ptr.is_null() || len == 0 {
        return Err(format!("the {what} is empty"));
    }
    if len > MAX_KIND_LEN {
        return Err(format!("the {what} is longer than {MAX_KIND_LEN} bytes"));
    }
    // SAFETY: per the contract.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    let name = std::str::from_utf8(bytes)
        .map_err(|_| format!("the {what} is not UTF-8"))?
        .to_owned();
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(format!(
            "the {what} {name:?} has surrounding blanks or control characters"
        ));
    }
    Ok(name)
}

fn open(path: &Path) -> Result<Library, libloading::Error> {
    // A name without a slash would make the loader search the system library path instead.
    let path = if path.parent().is_none_or(|p| p.as_os_str().is_empty()) {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: loading runs the library's initializers; plugins are trusted code by
        // deployment (they come from the operator's plugin directory).
        unsafe { UnixLibrary::open(Some(&path), RTLD_NOW | RTLD_LOCAL | libc::RTLD_NODELETE) }
            .map(Library::from)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { Library::new(&path) }
    }
}

/// Checks a table a plugin's symbol returned: not null and of this ABI version (read alone
/// first: it is the first field of every version's table, while the rest may have another
/// layout). Returns a copy of the table.
///
/// # Safety
/// `table` is null or points at a table that starts with its `u32` ABI version and, when that
/// version is ours, is a valid `T` (for as long as the library stays loaded).
pub(crate) unsafe fn checked_table<T: Copy>(
    table: *const T,
    symbol: &str,
    path: &Path,
) -> Result<T, LoadError> {
    if table.is_null() {
        return Err(LoadError::InvalidTable {
            path: path.to_path_buf(),
            reason: format!("`{symbol}` returned null"),
        });
    }
    // SAFETY: non-null, and every table of every version starts with a u32.
    let found = unsafe { table.cast::<u32>().read() };
    if found != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: path.to_path_buf(),
            found,
            expected: ABI_VERSION,
        });
    }
    // SAFETY: a table of our version (caller's contract).
    Ok(unsafe { *table })
}

/// A plugin call that failed: its message, and whether the plugin panicked (caught at the
/// boundary) rather than returning an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The plugin panicked.
    pub panicked: bool,
    /// What the plugin said (for panics: "plugin panicked: <message>").
    pub message: String,
}

impl CallError {
    fn host(message: String) -> Self {
        CallError {
            panicked: false,
            message,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

impl PartialEq<&str> for CallError {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.message
    }
}

/// Turns a call's status into a result, giving the error buffer back to the plugin.
fn take_status(free_buffer: FreeBufferFn, status: CallStatus) -> Result<(), CallError> {
    let message = if status.error.ptr.is_null() {
        None
    } else {
        // SAFETY: the plugin hands us `len` readable bytes, ours until we give them back.
        let bytes = unsafe { std::slice::from_raw_parts(status.error.ptr, status.error.len) };
        let message = String::from_utf8_lossy(bytes).into_owned();
        // SAFETY: given back once, to the library that made it.
        unsafe { free_buffer(status.error) };
        Some(message)
    };
    if status.code == STATUS_OK {
        Ok(())
    } else {
        Err(CallError {
            panicked: status.code == STATUS_PANIC,
            message: message.unwrap_or_else(|| {
                format!(
                    "plugin reported an error (status {}) without a message",
                    status.code
                )
            }),
        })
    }
}

/// What the host callback's `ctx` points at: one per instance.
struct HostContext {
    on_event: Box<dyn Fn(PluginEvent) + Send + Sync>,
    /// An exit was delivered: drop everything after it.
    exited: AtomicBool,
}

impl HostContext {
    fn deliver(&self, kind: u32, json: &[u8]) {
        let event = match kind {
            EVENT_EXIT => {
                if self.exited.swap(true, Ordering::SeqCst) {
                    return;
                }
                let state = serde_json::from_slice::<ExitState>(json).unwrap_or_else(|e| {
                    ExitState::failed(-1, format!("plugin sent malformed exit state: {e}"))
                });
                PluginEvent::Exit(state)
            }
            EVENT_DETAIL => {
                if self.exited.load(Ordering::SeqCst) {
                    return;
                }
                match serde_json::from_slice::<DetailPayload>(json) {
                    Ok(d) => PluginEvent::Detail {
                        key: d.key,
                        value: d.value,
                    },
                    Err(_) => return,
                }
            }
            // A kind from a later ABI use; this host does not know it.
            _ => return,
        };
        (self.on_event)(event);
    }
}

unsafe extern "C" fn host_on_event(
    ctx: *mut c_void,
    kind: u32,
    json_ptr: *const u8,
    json_len: usize,
) {
    // A panic in the host's closure must not unwind into the plugin (it would abort).
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostContext` this host made for the instance, alive until the
        // plugin's release has returned.
        let Some(host) = (unsafe { ctx.cast::<HostContext>().as_ref() }) else {
            return;
        };
        let json: &[u8] = if json_ptr.is_null() {
            &[]
        } else {
            // SAFETY: the plugin lends `json_len` readable bytes for the call.
            unsafe { std::slice::from_raw_parts(json_ptr, json_len) }
        };
        host.deliver(kind, json);
    }));
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn reason(r: Result<(), LoadError>) -> String {
        match r {
            Err(LoadError::Untrusted { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plugin_only_its_owner_can_change_is_trusted_and_anything_else_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let lib = dir.join("libx.so");
        std::fs::write(&lib, b"not really").unwrap();
        chmod(&lib, 0o644);
        check_trusted(&lib).unwrap();

        chmod(&lib, 0o666);
        assert!(reason(check_trusted(&lib)).contains("writable by group or others (mode 0666)"));
        chmod(&lib, 0o664);
        assert!(reason(check_trusted(&lib)).contains("mode 0664"));
        chmod(&lib, 0o755);
        check_trusted(&lib).unwrap();

        chmod(&dir, 0o777);
        let r = reason(check_trusted(&lib));
        assert!(
            r.contains("its directory") && r.contains("mode 0777"),
            "{r}"
        );
        // A directory scan says it once and loads nothing.
        let (plugins, errors) = scan_dir(&dir);
        assert!(plugins.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("refused as a plugin directory"),
            "{errors:?}"
        );
        chmod(&dir, 0o755);

        // A link from a trusted directory to a file in a world-writable one is refused too.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let target = open.join("liby.so");
        std::fs::write(&target, b"x").unwrap();
        chmod(&target, 0o644);
        let link = dir.join("liby.so");
        symlink(&target, &link).unwrap();
        assert!(reason(check_trusted(&link)).contains("its directory"));
    }

    #[test]
    fn a_plugin_owned_by_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Only root can give a file away; the CI runs as root.
            eprintln!("not root: cannot create a file owned by another user here");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("libz.so");
        std::fs::write(&lib, b"x").unwrap();
        std::os::unix::fs::chown(&lib, Some(4242), None).unwrap();
        assert!(reason(check_trusted(&lib)).contains("owned by uid 4242"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::PluginBuffer;
    use crate::{Application, ExitKind, ExitNotifier};
    use serde_json::json;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    fn collector() -> (
        impl Fn(PluginEvent) + Send + Sync + 'static,
        mpsc::Receiver<PluginEvent>,
    ) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (move |e| drop(tx.lock().unwrap().send(e)), rx)
    }

    fn ctx(spec: serde_json::Value) -> AppContext {
        AppContext::new(json!({"id": "app-1", "kind": "echo", "spec": spec}), "/tmp")
    }

    /// Exits with the code from its spec, on its own thread.
    struct Echo {
        code: i32,
        events: Option<ExitNotifier>,
    }

    impl Application for Echo {
        fn create(ctx: AppContext) -> Result<Self, String> {
            let code = ctx.spec()["code"]
                .as_i64()
                .ok_or("spec.code must be an integer")?;
            Ok(Echo {
                code: code as i32,
                events: None,
            })
        }
        fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
            if self.code == 99 {
                panic!("start blew up");
            }
            let code = self.code;
            events.detail("code", &code.to_string());
            self.events = Some(events.clone());
            std::thread::spawn(move || {
                events.exit(ExitState::finished(
                    code,
                    format!("exited with code {code}"),
                ))
            });
            Ok(())
        }
        fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
            if let Some(events) = &self.events {
                events.exit(ExitState::killed(143, format!("killed: {reason:?}")));
            }
            Ok(())
        }
    }

    static ECHO: ApplicationPluginV1 = ApplicationPluginV1::for_application::<Echo>("echo");

    fn echo() -> ApplicationPlugin {
        unsafe { ApplicationPlugin::from_static(&ECHO) }.unwrap()
    }

    #[test]
    fn a_static_plugin_runs_end_to_end() {
        let plugin = echo();
        assert_eq!(plugin.kind(), "echo");
        assert_eq!(plugin.path(), Path::new("<built-in>"));
        let (on_event, rx) = collector();
        let app = plugin.create(&ctx(json!({"code": 0})), on_event).unwrap();
        assert_eq!(app.kind(), "echo");
        app.start().unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            first,
            PluginEvent::Detail {
                key: "code".into(),
                value: "0".into()
            }
        );
        let exit = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            exit,
            PluginEvent::Exit(ExitState::finished(0, "exited with code 0"))
        );
        // A shutdown after the exit reaches the plugin, whose second exit is dropped.
        app.shutdown(Some("late")).unwrap();
        app.clean().unwrap();
        drop(app);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn create_and_start_errors_reach_the_host() {
        let plugin = echo();
        let (on_event, _rx) = collector();
        let err = plugin
            .create(&ctx(json!({"code": "x"})), on_event)
            .unwrap_err();
        assert_eq!(err, "spec.code must be an integer");
        assert!(!err.panicked, "a returned error is not a panic");
        let (on_event, _rx) = collector();
        let app = plugin.create(&ctx(json!({"code": 99})), on_event).unwrap();
        let err = app.start().unwrap_err();
        assert_eq!(err, "plugin panicked: start blew up");
        assert!(err.panicked, "a caught panic is marked as one");
    }

    #[test]
    fn the_instance_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AppInstance>();
        assert_send_sync::<ApplicationPlugin>();
        let plugin = echo();
        let (on_event, rx) = collector();
        let app = Arc::new(plugin.create(&ctx(json!({"code": 4})), on_event).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let app = app.clone();
                std::thread::spawn(move || app.shutdown(Some("stop")).unwrap())
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Not started, so nothing was reported.
        assert!(rx.try_recv().is_err());
    }

    // A hand-written plugin that breaks the rules, as a foreign plugin might.

    /// Everything the raw plugin and the host closure did, in order.
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

    unsafe extern "C" fn raw_create(
        _: *const u8,
        _: usize,
        host: HostCallback,
        out: *mut *mut c_void,
    ) -> CallStatus {
        unsafe { *out = Box::into_raw(Box::new(host)).cast() };
        CallStatus::ok()
    }

    unsafe extern "C" fn raw_start(instance: *mut c_void) -> CallStatus {
        let host = unsafe { *instance.cast::<HostCallback>() };
        let send = |kind: u32, json: &[u8]| unsafe {
            (host.on_event)(host.ctx, kind, json.as_ptr(), json.len())
        };
        send(EVENT_DETAIL, b"not a detail");
        send(EVENT_DETAIL, br#"{"key":"k","value":"v"}"#);
        send(42, b"{}");
        send(EVENT_EXIT, br#"{"code": "zero"}"#);
        send(EVENT_EXIT, br#"{"code": 0, "kind": "FINISHED"}"#);
        send(EVENT_DETAIL, br#"{"key":"after","value":"exit"}"#);
        CallStatus::ok()
    }

    unsafe extern "C" fn raw_shutdown(_: *mut c_void, _: *const u8, _: usize) -> CallStatus {
        CallStatus {
            code: 7,
            error: PluginBuffer::null(),
        }
    }

    unsafe extern "C" fn raw_clean(_: *mut c_void) -> CallStatus {
        CallStatus::error("")
    }

    unsafe extern "C" fn raw_release(instance: *mut c_void) {
        drop(unsafe { Box::from_raw(instance.cast::<HostCallback>()) });
        LOG.lock().unwrap().push("released".into());
    }

    unsafe extern "C" fn raw_free(buffer: PluginBuffer) {
        drop(unsafe { buffer.into_vec() });
    }

    const RAW_KIND: &str = "raw";

    static RAW: ApplicationPluginV1 = ApplicationPluginV1 {
        abi_version: ABI_VERSION,
        kind_ptr: RAW_KIND.as_ptr(),
        kind_len: RAW_KIND.len(),
        create: Some(raw_create),
        start: Some(raw_start),
        shutdown: Some(raw_shutdown),
        clean: Some(raw_clean),
        release: Some(raw_release),
        free_buffer: Some(raw_free),
    };

    /// Logs when the host's closure (and so the host context) is freed.
    struct DropLog;
    impl Drop for DropLog {
        fn drop(&mut self) {
            LOG.lock().unwrap().push("host context freed".into());
        }
    }

    #[test]
    fn the_host_sanitizes_what_a_plugin_sends() {
        let plugin = unsafe { ApplicationPlugin::from_static(&RAW) }.unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let guard = DropLog;
        let app = plugin
            .create(&ctx(json!({})), move |e| {
                let _keep = &guard;
                tx.lock().unwrap().send(e).unwrap();
            })
            .unwrap();
        app.start().unwrap();
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            PluginEvent::Detail {
                key: "k".into(),
                value: "v".into()
            }
        );
        let PluginEvent::Exit(exit) = &events[1] else {
            panic!("expected an exit, got {:?}", events[1]);
        };
        assert_eq!((exit.kind, exit.code), (ExitKind::Failed, -1));
        assert!(
            exit.message
                .starts_with("plugin sent malformed exit state: "),
            "{}",
            exit.message
        );

        assert_eq!(
            app.shutdown(None).unwrap_err(),
            "plugin reported an error (status 7) without a message"
        );
        assert_eq!(app.clean().unwrap_err(), "unspecified error");

        drop(app);
        let log = LOG.lock().unwrap();
        assert_eq!(*log, ["released", "host context freed"]);
    }

    #[test]
    fn bad_tables_are_refused() {
        static WRONG_VERSION: ApplicationPluginV1 = ApplicationPluginV1 {
            abi_version: ABI_VERSION + 1,
            ..RAW
        };
        let err = unsafe { ApplicationPlugin::from_static(&WRONG_VERSION) }.unwrap_err();
        assert!(
            matches!(err, LoadError::AbiMismatch { found, expected, .. } if found == ABI_VERSION + 1 && expected == ABI_VERSION)
        );
        assert_eq!(
            err.to_string(),
            format!(
                "<built-in>: plugin ABI version {} does not match this host's ABI version {}; \
                 rebuild the plugin against this Aloha release",
                ABI_VERSION + 1,
                ABI_VERSION
            )
        );

        static NO_START: ApplicationPluginV1 = ApplicationPluginV1 { start: None, ..RAW };
        let err = unsafe { ApplicationPlugin::from_static(&NO_START) }.unwrap_err();
        assert_eq!(
            err.to_string(),
            "<built-in>: invalid plugin table: the table has no `start` function"
        );

        static NO_KIND: ApplicationPluginV1 = ApplicationPluginV1 { kind_len: 0, ..RAW };
        let err = unsafe { ApplicationPlugin::from_static(&NO_KIND) }.unwrap_err();
        assert!(
            err.to_string().ends_with("the plugin kind is empty"),
            "{err}"
        );

        const BLANK: &str = " raw";
        static BLANK_KIND: ApplicationPluginV1 = ApplicationPluginV1 {
            kind_ptr: BLANK.as_ptr(),
            kind_len: BLANK.len(),
            ..RAW
        };
        assert!(unsafe { ApplicationPlugin::from_static(&BLANK_KIND) }.is_err());

        let err = unsafe { ApplicationPlugin::from_table(std::ptr::null(), "x.so".into(), None) }
            .unwrap_err();
        assert!(matches!(err, LoadError::InvalidTable { .. }), "{err}");
    }

    #[test]
    fn scan_dir_reports_an_unreadable_directory() {
        let (plugins, errors) = scan_dir(Path::new("/nonexistent/aloha/plugins"));
        assert!(plugins.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("/nonexistent/aloha/plugins: cannot read plugin directory: "),
            "{errors:?}"
        );
    }

    #[test]
    fn load_reports_a_missing_file_with_its_path() {
        let err = ApplicationPlugin::load(Path::new("/nonexistent/libx.so")).unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }));
        assert!(err
            .to_string()
            .starts_with("/nonexistent/libx.so: cannot load library"));
    }
}
