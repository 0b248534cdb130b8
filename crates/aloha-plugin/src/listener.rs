//! The listener author's side: the [`EventListener`] trait and the `extern "C"` glue that
//! [`declare_listener!`](crate::declare_listener) exports.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::abi::{CallStatus, ListenerPluginV1};
use crate::export::{free_buffer, guarded};

/// A listener plugin: receives the master's events, one at a time, in sequence order. This is the
/// seed's `AlohaEventListener`.
///
/// Each event is the JSON the master stores and streams (`aloha_core::Event`): `seq` (contiguous,
/// increasing), `at` (RFC 3339), `type` and the type's fields, e.g.
/// `{"seq": 7, "at": "...", "type": "app_state_changed", "app_id": "app-...", "name": "...",
/// "kind": "process", "old_state": "RUNNING", "new_state": "FINISHED", "attempt": 1,
/// "worker_id": "w1", "message": null}`. Fields may be added without an ABI change; ignore the
/// ones you do not know.
///
/// The host calls `create` once, then for every event the method its `type` selects, then drops
/// the value (`release`). Calls never overlap but may come from different threads, which is why
/// the trait requires `Send`; they run on a thread of the listener's own, so blocking (a network
/// call, an fsync) delays only this listener. Return `Ok` only once the event is safely handled:
/// an `Err` makes the host deliver the same event again later, so delivery is at least once and
/// a listener may see an event twice (deduplicate by `seq` if it matters). A panic is caught and
/// reported as an error, never unwound into the host.
pub trait EventListener: Send + 'static {
    /// Builds the listener from its configuration (the operator's settings for it, `{}` if none).
    /// Validate it here: an `Err` stops the master from starting with a broken listener.
    fn create(config: Value) -> Result<Self, String>
    where
        Self: Sized;

    /// An app changed state (`type` `app_state_changed`), including its submission, whose
    /// `old_state` is null.
    fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String>;

    /// An app's attempt was lost and the app was queued for another one (`type`
    /// `app_relaunched`).
    fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String>;

    /// Any other event: a worker joined or was lost, the leadership changed, or a type added
    /// after this listener was written.
    fn on_other_event(&mut self, event: &Value) -> Result<(), String>;
}

impl ListenerPluginV1 {
    /// The table for listener type `L` named `name`. Used by
    /// [`declare_listener!`](crate::declare_listener); call it yourself only to build a table for
    /// a listener linked into the host (see `host::ListenerPlugin::from_static`).
    pub const fn for_listener<L: EventListener>(name: &'static str) -> Self {
        ListenerPluginV1 {
            abi_version: crate::ABI_VERSION,
            name_ptr: name.as_ptr(),
            name_len: name.len(),
            create: Some(create::<L>),
            on_app_state_changed: Some(on_app_state_changed::<L>),
            on_app_relaunched: Some(on_app_relaunched::<L>),
            on_other_event: Some(on_other_event::<L>),
            release: Some(release::<L>),
            free_buffer: Some(free_buffer),
        }
    }
}

/// What the instance pointer handed to the host points at. The host never overlaps calls, so the
/// mutex is never contended; it is there so that a host breaking that rule gets serialized calls
/// rather than undefined behaviour.
struct Instance<L> {
    listener: Mutex<L>,
}

/// # Safety
/// `ptr` is null or points at `len` bytes readable for `'a`.
unsafe fn borrowed<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() {
        &[]
    } else {
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

unsafe extern "C" fn create<L: EventListener>(
    config_json_ptr: *const u8,
    config_json_len: usize,
    out_instance: *mut *mut c_void,
) -> CallStatus {
    guarded(|| {
        if out_instance.is_null() {
            return Err("create called with a null out_instance".into());
        }
        // SAFETY: the host passes `config_json_len` readable bytes at `config_json_ptr`.
        let json = unsafe { borrowed(config_json_ptr, config_json_len) };
        let config: Value = serde_json::from_slice(json)
            .map_err(|e| format!("host sent a malformed listener configuration: {e}"))?;
        let listener = L::create(config)?;
        let instance = Box::new(Instance {
            listener: Mutex::new(listener),
        });
        // SAFETY: checked non-null above; the host provides a writable slot.
        unsafe { *out_instance = Box::into_raw(instance).cast() };
        Ok(())
    })
}

/// Parses the event and hands it to `handle` with the instance's listener, all under `guarded`.
///
/// # Safety
/// `instance` is null or a live pointer from `create::<L>`; `ptr` is null or points at `len`
/// readable bytes.
unsafe fn deliver<L: EventListener>(
    instance: *mut c_void,
    event_json_ptr: *const u8,
    event_json_len: usize,
    handle: fn(&mut L, &Value) -> Result<(), String>,
) -> CallStatus {
    guarded(|| {
        // SAFETY: per the contract, a non-null pointer is a live `Instance<L>`.
        let instance = unsafe { instance.cast::<Instance<L>>().as_ref() }
            .ok_or_else(|| "null instance".to_owned())?;
        // SAFETY: the host lends `event_json_len` readable bytes for the call.
        let json = unsafe { borrowed(event_json_ptr, event_json_len) };
        let event: Value = serde_json::from_slice(json)
            .map_err(|e| format!("host sent a malformed event: {e}"))?;
        handle(&mut lock_listener(instance), &event)
    })
}

fn lock_listener<L>(instance: &Instance<L>) -> MutexGuard<'_, L> {
    // A panic in an earlier call poisons the lock. Keep going: the host retries the event, and a
    // listener that cannot cope will keep answering errors, which the host reports.
    instance
        .listener
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

unsafe extern "C" fn on_app_state_changed<L: EventListener>(
    instance: *mut c_void,
    event_json_ptr: *const u8,
    event_json_len: usize,
) -> CallStatus {
    // SAFETY: forwarded from the host, which obeys the ABI.
    unsafe {
        deliver(
            instance,
            event_json_ptr,
            event_json_len,
            L::on_app_state_changed,
        )
    }
}

unsafe extern "C" fn on_app_relaunched<L: EventListener>(
    instance: *mut c_void,
    event_json_ptr: *const u8,
    event_json_len: usize,
) -> CallStatus {
    // SAFETY: forwarded from the host, which obeys the ABI.
    unsafe {
        deliver(
            instance,
            event_json_ptr,
            event_json_len,
            L::on_app_relaunched,
        )
    }
}

unsafe extern "C" fn on_other_event<L: EventListener>(
    instance: *mut c_void,
    event_json_ptr: *const u8,
    event_json_len: usize,
) -> CallStatus {
    // SAFETY: forwarded from the host, which obeys the ABI.
    unsafe { deliver(instance, event_json_ptr, event_json_len, L::on_other_event) }
}

unsafe extern "C" fn release<L: EventListener>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the host passes a pointer from `create::<L>` exactly once, after its last call.
    let instance = unsafe { Box::from_raw(instance.cast::<Instance<L>>()) };
    // There is no error channel here; the panic hook has already printed the message.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

/// Exports an [`EventListener`] type from a `cdylib` as an Aloha listener plugin.
///
/// ```text
/// aloha_plugin::declare_listener!(name = "jsonl", listener = JsonlListener);
/// ```
///
/// `name` is a non-empty string constant naming the listener (in the master's logs and metrics);
/// `listener` is a type implementing [`EventListener`]. The macro defines two
/// `#[no_mangle] extern "C"` functions in the calling crate:
///
/// - `aloha_plugin_abi_version() -> u32`, returning [`ABI_VERSION`](crate::ABI_VERSION);
/// - `aloha_listener_plugin() -> *const ListenerPluginV1`, returning a static table whose
///   functions wrap `listener`'s methods, each behind `catch_unwind`.
///
/// A library that is also an Application plugin exports the version symbol through
/// [`declare_application!`](crate::declare_application) already; it adds `beside_application` so
/// that this macro defines only the listener table (defining the symbol twice fails to link):
///
/// ```text
/// aloha_plugin::declare_application!(kind = "spark", app = SparkApp);
/// aloha_plugin::declare_listener!(name = "spark-history", listener = History, beside_application);
/// ```
///
/// Invoke it once per library, at module level. The crate must be built with
/// `crate-type = ["cdylib"]` (add `"rlib"` to also link it into tests or a host).
#[macro_export]
macro_rules! declare_listener {
    (name = $name:expr, listener = $listener:ty, beside_application $(,)?) => {
        const _: () = ::core::assert!(
            !<str>::is_empty($name),
            "declare_listener!: name must not be empty"
        );

        /// This library's Aloha listener plugin table.
        #[unsafe(no_mangle)]
        pub extern "C" fn aloha_listener_plugin() -> *const $crate::abi::ListenerPluginV1 {
            static PLUGIN: $crate::abi::ListenerPluginV1 =
                $crate::abi::ListenerPluginV1::for_listener::<$listener>($name);
            &PLUGIN
        }
    };
    (name = $name:expr, listener = $listener:ty $(,)?) => {
        $crate::declare_listener!(name = $name, listener = $listener, beside_application);

        /// The Aloha plugin ABI version this library was built with.
        #[unsafe(no_mangle)]
        pub extern "C" fn aloha_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{PluginBuffer, STATUS_OK};
    use serde_json::json;

    /// Records what it is given in a shared log, steered by its configuration: `tag` names it in
    /// the log (tests run in parallel), `fail_on` makes it refuse events of that type, `panic_on`
    /// makes it panic on them.
    struct Recorder {
        tag: String,
        fail_on: Option<String>,
        panic_on: Option<String>,
    }

    /// `(tag, method, event)`, in call order; `(tag, "drop", null)` when an instance is dropped.
    static LOG: Mutex<Vec<(String, &'static str, Value)>> = Mutex::new(Vec::new());

    impl Recorder {
        fn handle(&mut self, method: &'static str, event: &Value) -> Result<(), String> {
            let ty = event["type"].as_str().unwrap_or_default();
            if self.panic_on.as_deref() == Some(ty) {
                panic!("listener exploded on {ty}");
            }
            if self.fail_on.as_deref() == Some(ty) {
                return Err(format!("cannot handle {ty}"));
            }
            LOG.lock()
                .unwrap()
                .push((self.tag.clone(), method, event.clone()));
            Ok(())
        }
    }

    impl EventListener for Recorder {
        fn create(config: Value) -> Result<Self, String> {
            if config["panic"] == true {
                panic!("create exploded");
            }
            let tag = config["tag"]
                .as_str()
                .ok_or("config.tag must be a string")?
                .to_owned();
            let text = |key: &str| config[key].as_str().map(str::to_owned);
            Ok(Recorder {
                tag,
                fail_on: text("fail_on"),
                panic_on: text("panic_on"),
            })
        }
        fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
            self.handle("on_app_state_changed", event)
        }
        fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
            self.handle("on_app_relaunched", event)
        }
        fn on_other_event(&mut self, event: &Value) -> Result<(), String> {
            self.handle("on_other_event", event)
        }
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            LOG.lock()
                .unwrap()
                .push((self.tag.clone(), "drop", Value::Null));
        }
    }

    const TABLE: ListenerPluginV1 = ListenerPluginV1::for_listener::<Recorder>("recorder");

    fn log_of(tag: &str) -> Vec<(&'static str, Value)> {
        LOG.lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|(_, m, e)| (*m, e.clone()))
            .collect()
    }

    /// Takes a status apart as a host would, giving the buffer back through the table.
    fn status_result(status: CallStatus) -> Result<(), String> {
        if status.code == STATUS_OK {
            assert!(status.error.ptr.is_null());
            return Ok(());
        }
        let message =
            unsafe { std::slice::from_raw_parts(status.error.ptr, status.error.len) }.to_vec();
        unsafe { (TABLE.free_buffer.unwrap())(status.error) };
        Err(String::from_utf8(message).unwrap())
    }

    fn ffi_create(json: &[u8]) -> Result<*mut c_void, String> {
        let mut out = std::ptr::null_mut();
        let status = unsafe { (TABLE.create.unwrap())(json.as_ptr(), json.len(), &mut out) };
        status_result(status).map(|()| {
            assert!(!out.is_null());
            out
        })
    }

    fn config(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn call(
        f: Option<crate::abi::ListenerEventFn>,
        instance: *mut c_void,
        json: &[u8],
    ) -> Result<(), String> {
        status_result(unsafe { (f.unwrap())(instance, json.as_ptr(), json.len()) })
    }

    fn event(seq: u64, ty: &str) -> Value {
        json!({"seq": seq, "at": "2025-01-01T00:00:00Z", "type": ty, "app_id": "app-1"})
    }

    #[test]
    fn table_describes_itself() {
        assert_eq!(TABLE.abi_version, crate::ABI_VERSION);
        let name = unsafe { std::slice::from_raw_parts(TABLE.name_ptr, TABLE.name_len) };
        assert_eq!(name, b"recorder");
    }

    #[test]
    fn each_entry_point_reaches_its_method_and_release_drops_the_listener() {
        let tag = "dispatch";
        let instance = ffi_create(&config(json!({"tag": tag}))).unwrap();
        let sent = [
            (TABLE.on_app_state_changed, event(1, "app_state_changed")),
            (TABLE.on_app_relaunched, event(2, "app_relaunched")),
            (TABLE.on_other_event, event(3, "worker_joined")),
            // The table does not look at the type: the host chose the entry point.
            (TABLE.on_other_event, event(4, "app_state_changed")),
        ];
        for (f, e) in &sent {
            call(*f, instance, &serde_json::to_vec(e).unwrap()).unwrap();
        }
        unsafe { (TABLE.release.unwrap())(instance) };
        let expected: Vec<(&str, Value)> = vec![
            ("on_app_state_changed", sent[0].1.clone()),
            ("on_app_relaunched", sent[1].1.clone()),
            ("on_other_event", sent[2].1.clone()),
            ("on_other_event", sent[3].1.clone()),
            ("drop", Value::Null),
        ];
        assert_eq!(log_of(tag), expected);
    }

    #[test]
    fn configuration_errors_come_back_as_messages() {
        assert_eq!(
            ffi_create(&config(json!({"no": "tag"}))).unwrap_err(),
            "config.tag must be a string"
        );
        assert_eq!(
            ffi_create(&config(json!({"panic": true}))).unwrap_err(),
            "plugin panicked: create exploded"
        );
        let err = ffi_create(b"{not json").unwrap_err();
        assert!(
            err.starts_with("host sent a malformed listener configuration: "),
            "{err}"
        );
        let status = unsafe { (TABLE.create.unwrap())(b"{}".as_ptr(), 2, std::ptr::null_mut()) };
        assert_eq!(
            status_result(status).unwrap_err(),
            "create called with a null out_instance"
        );
    }

    #[test]
    fn errors_and_panics_in_handlers_come_back_as_messages_and_the_instance_lives_on() {
        let tag = "handler-errors";
        let instance = ffi_create(&config(
            json!({"tag": tag, "fail_on": "worker_lost", "panic_on": "app_relaunched"}),
        ))
        .unwrap();
        let bytes = |e: Value| serde_json::to_vec(&e).unwrap();

        assert_eq!(
            call(
                TABLE.on_other_event,
                instance,
                &bytes(event(1, "worker_lost"))
            ),
            Err("cannot handle worker_lost".into())
        );
        assert_eq!(
            call(
                TABLE.on_app_relaunched,
                instance,
                &bytes(event(2, "app_relaunched"))
            ),
            Err("plugin panicked: listener exploded on app_relaunched".into())
        );
        let err = call(TABLE.on_app_state_changed, instance, b"[1, 2").unwrap_err();
        assert!(err.starts_with("host sent a malformed event: "), "{err}");
        let err = call(
            TABLE.on_app_state_changed,
            std::ptr::null_mut(),
            &bytes(event(3, "app_state_changed")),
        )
        .unwrap_err();
        assert_eq!(err, "null instance");

        // After a panic (a poisoned lock inside) the same instance still takes events.
        call(
            TABLE.on_app_state_changed,
            instance,
            &bytes(event(4, "app_state_changed")),
        )
        .unwrap();
        unsafe { (TABLE.release.unwrap())(instance) };
        let log = log_of(tag);
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(
            log[0],
            ("on_app_state_changed", event(4, "app_state_changed"))
        );
        assert_eq!(log[1].0, "drop");
    }

    #[test]
    fn release_of_null_and_free_of_null_are_no_ops() {
        unsafe { (TABLE.release.unwrap())(std::ptr::null_mut()) };
        unsafe { (TABLE.free_buffer.unwrap())(PluginBuffer::null()) };
    }

    /// One library may export both tables: `declare_application!` brings the version symbol and
    /// `declare_listener!(.., beside_application)` adds only the listener table. This module
    /// compiling and linking (no duplicate symbol) is half the test.
    mod one_library_two_tables {
        use super::Recorder;
        use crate::{AppContext, Application, ExitNotifier};

        struct Noop;
        impl Application for Noop {
            fn create(_: AppContext) -> Result<Self, String> {
                Ok(Noop)
            }
            fn start(&mut self, _: ExitNotifier) -> Result<(), String> {
                Ok(())
            }
            fn shutdown(&mut self, _: Option<&str>) -> Result<(), String> {
                Ok(())
            }
        }

        crate::declare_application!(kind = "noop", app = Noop);
        crate::declare_listener!(name = "both", listener = Recorder, beside_application);

        #[test]
        fn both_symbols_answer() {
            assert_eq!(aloha_plugin_abi_version(), crate::ABI_VERSION);
            let app = unsafe { &*aloha_application_plugin() };
            let listener = unsafe { &*aloha_listener_plugin() };
            assert_eq!(app.abi_version, crate::ABI_VERSION);
            assert_eq!(listener.abi_version, crate::ABI_VERSION);
            let name = unsafe { std::slice::from_raw_parts(listener.name_ptr, listener.name_len) };
            assert_eq!(name, b"both");
            let kind = unsafe { std::slice::from_raw_parts(app.kind_ptr, app.kind_len) };
            assert_eq!(kind, b"noop");
        }
    }
}
