//! Listener plugins on the host side: [`ListenerPlugin`] wraps a checked
//! [`ListenerPluginV1`] table, [`ListenerInstance`] one listener made from it.

use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libloading::Library;

use super::{checked_table, open_plugin, table_name, take_status, LoadError};
use crate::abi::{
    FreeBufferFn, ListenerCreateFn, ListenerEventFn, ListenerPluginV1, ReleaseFn,
    EVENT_TYPE_APP_RELAUNCHED, EVENT_TYPE_APP_STATE_CHANGED, LISTENER_PLUGIN_SYMBOL,
};

/// The table's functions, copied out once it was checked: none is null.
#[derive(Clone, Copy)]
struct Vtable {
    create: ListenerCreateFn,
    on_app_state_changed: ListenerEventFn,
    on_app_relaunched: ListenerEventFn,
    on_other_event: ListenerEventFn,
    release: ReleaseFn,
    free_buffer: FreeBufferFn,
}

/// A loaded listener plugin: a factory of [`ListenerInstance`]s, one per configured listener.
pub struct ListenerPlugin {
    name: String,
    path: PathBuf,
    vtable: Vtable,
    /// Keeps the library loaded while this or any of its instances exists; `None` for a listener
    /// linked into the host.
    library: Option<Arc<Library>>,
}

impl ListenerPlugin {
    /// Opens the library at `path` and checks it, as
    /// [`ApplicationPlugin::load`](super::ApplicationPlugin::load) does (same flags, same
    /// [`LoadError::NotAPlugin`] and [`LoadError::AbiMismatch`]). A library that is an Aloha
    /// plugin but exports no `aloha_listener_plugin` is [`LoadError::NotAListener`]: the
    /// operator named it as a listener, so that is a configuration error, not something to skip.
    ///
    /// Loading a library runs its initializers: only point this at trusted files.
    pub fn load(path: &Path) -> Result<ListenerPlugin, LoadError> {
        let path = path.to_path_buf();
        let library = open_plugin(&path)?;
        // SAFETY: by the ABI (whose version `open_plugin` checked), this symbol is an
        // `extern "C" fn() -> *const ListenerPluginV1`.
        let table = unsafe {
            match library.get::<unsafe extern "C" fn() -> *const ListenerPluginV1>(
                LISTENER_PLUGIN_SYMBOL.as_bytes(),
            ) {
                Ok(entry) => entry(),
                Err(_) => return Err(LoadError::NotAListener { path }),
            }
        };
        // SAFETY: the table comes from the library we keep loaded in the result.
        unsafe { Self::from_table(table, path, Some(Arc::new(library))) }
    }

    /// Wraps a listener linked into the host (built as an `rlib` and called directly), e.g.
    /// `ListenerPlugin::from_static(&*aloha_listener_jsonl::aloha_listener_plugin())`. Its
    /// [`path`](Self::path) is `<built-in>`.
    ///
    /// # Safety
    /// `table` must be a valid table of this ABI: made by [`ListenerPluginV1::for_listener`] or
    /// [`declare_listener!`](crate::declare_listener), or hand-written to obey the ABI's contract.
    pub unsafe fn from_static(
        table: &'static ListenerPluginV1,
    ) -> Result<ListenerPlugin, LoadError> {
        // SAFETY: forwarded from the caller; the table is static, so nothing must be kept alive.
        unsafe { Self::from_table(table, PathBuf::from("<built-in>"), None) }
    }

    /// # Safety
    /// `table` is null or points at a table that stays valid while `library` is loaded.
    unsafe fn from_table(
        table: *const ListenerPluginV1,
        path: PathBuf,
        library: Option<Arc<Library>>,
    ) -> Result<ListenerPlugin, LoadError> {
        // SAFETY: forwarded from the caller's contract.
        let table = unsafe { checked_table(table, LISTENER_PLUGIN_SYMBOL, &path) }?;
        let invalid = |reason: &str| LoadError::InvalidTable {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        // SAFETY: the table promises `name_len` readable static bytes at `name_ptr`.
        let name = unsafe { table_name(table.name_ptr, table.name_len, "listener name") }
            .map_err(|reason| invalid(&reason))?;
        let missing = |name: &str| invalid(&format!("the table has no `{name}` function"));
        let vtable = Vtable {
            create: table.create.ok_or_else(|| missing("create"))?,
            on_app_state_changed: table
                .on_app_state_changed
                .ok_or_else(|| missing("on_app_state_changed"))?,
            on_app_relaunched: table
                .on_app_relaunched
                .ok_or_else(|| missing("on_app_relaunched"))?,
            on_other_event: table
                .on_other_event
                .ok_or_else(|| missing("on_other_event"))?,
            release: table.release.ok_or_else(|| missing("release"))?,
            free_buffer: table.free_buffer.ok_or_else(|| missing("free_buffer"))?,
        };
        Ok(ListenerPlugin {
            name,
            path,
            vtable,
            library,
        })
    }

    /// The listener's name, as the plugin gives it (`"jsonl"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The library the plugin was loaded from (`<built-in>` for [`from_static`](Self::from_static)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a listener with `config`, the operator's settings for it (pass `{}` for none). The
    /// plugin validates them here; an `Err` is its explanation of what is wrong.
    pub fn create(&self, config: &serde_json::Value) -> Result<ListenerInstance, String> {
        let json = serde_json::to_vec(config)
            .map_err(|e| format!("cannot encode the listener configuration: {e}"))?;
        let mut instance: *mut c_void = std::ptr::null_mut();
        // SAFETY: the table was checked at load; the JSON and the out slot outlive the call.
        let status = unsafe { (self.vtable.create)(json.as_ptr(), json.len(), &mut instance) };
        take_status(self.vtable.free_buffer, status).map_err(String::from)?;
        if instance.is_null() {
            return Err(format!(
                "listener plugin {:?} reported success from create but returned no instance",
                self.name
            ));
        }
        Ok(ListenerInstance {
            instance,
            vtable: self.vtable,
            name: self.name.clone(),
            _library: self.library.clone(),
        })
    }
}

impl fmt::Debug for ListenerPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerPlugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One listener inside a plugin. Dropping it releases the plugin instance.
///
/// It may move between threads but is used from one at a time ([`deliver`](Self::deliver) takes
/// `&mut self`), which is the ABI's "calls never overlap". `deliver` blocks for as long as the
/// listener takes (a webhook's retries, an fsync), so give each listener a thread of its own;
/// never call it from an async task directly.
pub struct ListenerInstance {
    instance: *mut c_void,
    vtable: Vtable,
    name: String,
    /// Dropped after `Drop::drop` has released the instance: the code must outlive the call.
    _library: Option<Arc<Library>>,
}

// SAFETY: the ABI lets a host call a listener instance from any thread as long as calls do not
// overlap, and `&mut self` on `deliver` (the only method that calls the plugin besides `Drop`)
// guarantees that. It is deliberately not `Sync`.
unsafe impl Send for ListenerInstance {}

impl ListenerInstance {
    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands one event to the listener and returns when it is done with it. `event_json` is the
    /// event as stored (`aloha_core::Event` serialized) and `event_type` its `type`, which picks
    /// the plugin function: `app_state_changed` → `on_app_state_changed`, `app_relaunched` →
    /// `on_app_relaunched`, anything else → `on_other_event`.
    ///
    /// An `Err` is the listener's message: the event was not handled, deliver it again later.
    pub fn deliver(&mut self, event_json: &str, event_type: &str) -> Result<(), String> {
        let f = match event_type {
            EVENT_TYPE_APP_STATE_CHANGED => self.vtable.on_app_state_changed,
            EVENT_TYPE_APP_RELAUNCHED => self.vtable.on_app_relaunched,
            _ => self.vtable.on_other_event,
        };
        // SAFETY: a live instance of this table; the JSON outlives the call; `&mut self` keeps
        // calls from overlapping.
        let status = unsafe { f(self.instance, event_json.as_ptr(), event_json.len()) };
        take_status(self.vtable.free_buffer, status).map_err(String::from)
    }
}

impl Drop for ListenerInstance {
    fn drop(&mut self) {
        // SAFETY: the instance is live and released exactly once, here; the library (a field)
        // is dropped only after this function.
        unsafe { (self.vtable.release)(self.instance) };
    }
}

impl fmt::Debug for ListenerInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerInstance")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{CallStatus, PluginBuffer};
    use crate::EventListener;
    use crate::ABI_VERSION;
    use serde_json::{json, Value};
    use std::sync::mpsc;
    use std::sync::Mutex;

    /// Sends `(method, event)` to the channel its configuration names (by index in `SINKS`, so
    /// tests running in parallel do not see each other's events).
    struct Forward {
        tx: mpsc::Sender<(&'static str, Value)>,
        refuse: Option<String>,
    }

    static SINKS: Mutex<Vec<mpsc::Sender<(&'static str, Value)>>> = Mutex::new(Vec::new());

    impl EventListener for Forward {
        fn create(config: Value) -> Result<Self, String> {
            let sink = config["sink"]
                .as_u64()
                .ok_or("config.sink must be a number")?;
            let tx = SINKS.lock().unwrap()[sink as usize].clone();
            Ok(Forward {
                tx,
                refuse: config["refuse"].as_str().map(str::to_owned),
            })
        }
        fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
            self.send("on_app_state_changed", event)
        }
        fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
            self.send("on_app_relaunched", event)
        }
        fn on_other_event(&mut self, event: &Value) -> Result<(), String> {
            if event["type"] == "boom" {
                panic!("boom at {}", event["seq"]);
            }
            self.send("on_other_event", event)
        }
    }

    impl Forward {
        fn send(&mut self, method: &'static str, event: &Value) -> Result<(), String> {
            if self.refuse.as_deref() == event["type"].as_str() {
                return Err(format!("refusing seq {}", event["seq"]));
            }
            self.tx.send((method, event.clone())).unwrap();
            Ok(())
        }
    }

    impl Drop for Forward {
        fn drop(&mut self) {
            let _ = self.tx.send(("drop", Value::Null));
        }
    }

    static FORWARD: ListenerPluginV1 = ListenerPluginV1::for_listener::<Forward>("forward");

    fn forward() -> ListenerPlugin {
        unsafe { ListenerPlugin::from_static(&FORWARD) }.unwrap()
    }

    fn sink() -> (u64, mpsc::Receiver<(&'static str, Value)>) {
        let (tx, rx) = mpsc::channel();
        let mut sinks = SINKS.lock().unwrap();
        sinks.push(tx);
        ((sinks.len() - 1) as u64, rx)
    }

    fn event(seq: u64, ty: &str) -> (String, Value) {
        let v = json!({"seq": seq, "at": "2025-01-01T00:00:00Z", "type": ty});
        (v.to_string(), v)
    }

    #[test]
    fn deliver_dispatches_by_type_and_drop_releases() {
        let plugin = forward();
        assert_eq!(plugin.name(), "forward");
        assert_eq!(plugin.path(), Path::new("<built-in>"));
        let (id, rx) = sink();
        let mut listener = plugin.create(&json!({"sink": id})).unwrap();
        assert_eq!(listener.name(), "forward");

        let types = [
            ("app_state_changed", "on_app_state_changed"),
            ("app_relaunched", "on_app_relaunched"),
            ("worker_joined", "on_other_event"),
            ("worker_lost", "on_other_event"),
            ("leader_changed", "on_other_event"),
            ("something_new", "on_other_event"),
        ];
        for (seq, (ty, _)) in types.iter().enumerate() {
            let (json, _) = event(seq as u64 + 1, ty);
            listener.deliver(&json, ty).unwrap();
        }
        // Moving the instance to another thread and delivering there works too (it is `Send`).
        let mut listener = std::thread::spawn(move || {
            let (json, _) = event(7, "app_state_changed");
            listener.deliver(&json, "app_state_changed").unwrap();
            listener
        })
        .join()
        .unwrap();
        // The host trusts `event_type`, not the JSON: the master passes both from one event.
        let (json, _) = event(8, "app_state_changed");
        listener.deliver(&json, "worker_joined").unwrap();
        drop(listener);

        let got: Vec<_> = rx.try_iter().collect();
        let mut expected: Vec<(&str, Value)> = types
            .iter()
            .enumerate()
            .map(|(seq, (ty, method))| (*method, event(seq as u64 + 1, ty).1))
            .collect();
        expected.push(("on_app_state_changed", event(7, "app_state_changed").1));
        expected.push(("on_other_event", event(8, "app_state_changed").1));
        expected.push(("drop", Value::Null));
        assert_eq!(got, expected);
    }

    #[test]
    fn errors_panics_and_bad_input_come_back_as_messages() {
        let plugin = forward();
        assert_eq!(
            plugin.create(&json!({})).unwrap_err(),
            "config.sink must be a number"
        );
        let (id, rx) = sink();
        let mut listener = plugin
            .create(&json!({"sink": id, "refuse": "worker_lost"}))
            .unwrap();
        let (json, _) = event(1, "worker_lost");
        assert_eq!(
            listener.deliver(&json, "worker_lost").unwrap_err(),
            "refusing seq 1"
        );
        let (json, _) = event(2, "boom");
        assert_eq!(
            listener.deliver(&json, "boom").unwrap_err(),
            "plugin panicked: boom at 2"
        );
        let err = listener
            .deliver("not json", "app_state_changed")
            .unwrap_err();
        assert!(err.starts_with("host sent a malformed event: "), "{err}");
        // Still usable after all that.
        let (json, v) = event(3, "app_relaunched");
        listener.deliver(&json, "app_relaunched").unwrap();
        assert_eq!(rx.try_recv().unwrap(), ("on_app_relaunched", v));
    }

    // A hand-written listener that breaks the rules, as a foreign plugin might.

    unsafe extern "C" fn raw_create(_: *const u8, _: usize, out: *mut *mut c_void) -> CallStatus {
        // Claims success but hands back no instance.
        unsafe { *out = std::ptr::null_mut() };
        CallStatus::ok()
    }
    unsafe extern "C" fn raw_event(_: *mut c_void, _: *const u8, _: usize) -> CallStatus {
        CallStatus {
            code: 9,
            error: PluginBuffer::null(),
        }
    }
    unsafe extern "C" fn raw_release(_: *mut c_void) {}
    unsafe extern "C" fn raw_free(buffer: PluginBuffer) {
        drop(unsafe { buffer.into_vec() });
    }

    const RAW_NAME: &str = "raw";
    static RAW: ListenerPluginV1 = ListenerPluginV1 {
        abi_version: ABI_VERSION,
        name_ptr: RAW_NAME.as_ptr(),
        name_len: RAW_NAME.len(),
        create: Some(raw_create),
        on_app_state_changed: Some(raw_event),
        on_app_relaunched: Some(raw_event),
        on_other_event: Some(raw_event),
        release: Some(raw_release),
        free_buffer: Some(raw_free),
    };

    #[test]
    fn a_null_instance_from_create_is_an_error() {
        let plugin = unsafe { ListenerPlugin::from_static(&RAW) }.unwrap();
        assert_eq!(
            plugin.create(&json!({})).unwrap_err(),
            "listener plugin \"raw\" reported success from create but returned no instance"
        );
    }

    #[test]
    fn a_status_without_message_is_still_an_error() {
        static RAW_OK: ListenerPluginV1 = ListenerPluginV1 {
            create: ListenerPluginV1::for_listener::<Forward>("x").create,
            ..RAW
        };
        let plugin = unsafe { ListenerPlugin::from_static(&RAW_OK) }.unwrap();
        let (id, _rx) = sink();
        let mut listener = plugin.create(&json!({"sink": id})).unwrap();
        assert_eq!(
            listener.deliver("{}", "app_state_changed").unwrap_err(),
            "plugin reported an error (status 9) without a message"
        );
        // `raw_release` is a no-op: the `Forward` leaks, which is fine in a test.
    }

    #[test]
    fn bad_tables_are_refused() {
        static WRONG_VERSION: ListenerPluginV1 = ListenerPluginV1 {
            abi_version: ABI_VERSION + 1,
            ..RAW
        };
        let err = unsafe { ListenerPlugin::from_static(&WRONG_VERSION) }.unwrap_err();
        assert!(
            matches!(err, LoadError::AbiMismatch { found, expected, .. } if found == ABI_VERSION + 1 && expected == ABI_VERSION),
            "{err}"
        );

        static NO_RELAUNCHED: ListenerPluginV1 = ListenerPluginV1 {
            on_app_relaunched: None,
            ..RAW
        };
        let err = unsafe { ListenerPlugin::from_static(&NO_RELAUNCHED) }.unwrap_err();
        assert_eq!(
            err.to_string(),
            "<built-in>: invalid plugin table: the table has no `on_app_relaunched` function"
        );

        static NO_NAME: ListenerPluginV1 = ListenerPluginV1 { name_len: 0, ..RAW };
        let err = unsafe { ListenerPlugin::from_static(&NO_NAME) }.unwrap_err();
        assert_eq!(
            err.to_string(),
            "<built-in>: invalid plugin table: the listener name is empty"
        );

        const CONTROL: &str = "ra\nw";
        static CONTROL_NAME: ListenerPluginV1 = ListenerPluginV1 {
            name_ptr: CONTROL.as_ptr(),
            name_len: CONTROL.len(),
            ..RAW
        };
        let err = unsafe { ListenerPlugin::from_static(&CONTROL_NAME) }.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("has surrounding blanks or control characters"),
            "{err}"
        );

        let err = unsafe { ListenerPlugin::from_table(std::ptr::null(), "x.so".into(), None) }
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.so: invalid plugin table: `aloha_listener_plugin` returned null"
        );
    }

    #[test]
    fn load_reports_a_missing_file_with_its_path() {
        let err = ListenerPlugin::load(Path::new("/nonexistent/libl.so")).unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("/nonexistent/libl.so: cannot load library"));
    }

    #[test]
    fn the_plugin_is_shareable_and_the_instance_sendable() {
        fn assert_send_sync<T: Send + Sync>() {}
        fn assert_send<T: Send>() {}
        assert_send_sync::<ListenerPlugin>();
        assert_send::<ListenerInstance>();
    }
}
