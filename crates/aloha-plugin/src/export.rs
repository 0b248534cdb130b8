//! The plugin author's side: the [`Application`] trait, the [`ExitNotifier`] it reports through,
//! and the `extern "C"` glue that [`declare_application!`](crate::declare_application) exports.

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::abi::{
    ApplicationPluginV1, CallStatus, HostCallback, PluginBuffer, EVENT_DETAIL, EVENT_EXIT,
};
use crate::types::{AppContext, DetailPayload, ExitState, PluginEvent};

/// An application plugin: runs one app (one attempt of it) on a worker. This is the seed's
/// `Application` trait; the seed's setters (`withDescription`, `withApplicationDir`,
/// `withAlohaConf`) became the [`AppContext`] handed to [`create`](Application::create), and its
/// `Promise[ExitState]` became the [`ExitNotifier`] handed to [`start`](Application::start).
///
/// The host calls, in order: `create`, then `start` (at most once), then any number of
/// `shutdown`s and `clean`s, then drops the value (`release`). Calls on one instance never
/// overlap (the glue serializes them), but they may come from different threads, which is why
/// the trait requires `Send`. None of them runs on an async runtime: block if you must, but
/// briefly. A panic in any of them is caught and reported as an error, never unwound into the host.
pub trait Application: Send + 'static {
    /// Builds the instance for `ctx`: validate the spec here, so that a bad submission fails
    /// before anything starts. An `Err` is shown to the user as the reason the app could not run.
    fn create(ctx: AppContext) -> Result<Self, String>
    where
        Self: Sized;

    /// Starts the app and returns at once: do not wait for it to finish. Later, from any thread,
    /// report exactly one [`ExitState`] through `events` (and any number of details before it).
    ///
    /// An `Err` means the app did not start; no exit needs to be reported then.
    fn start(&mut self, events: ExitNotifier) -> Result<(), String>;

    /// Asks the app to stop; `reason` says why (e.g. who killed it). Return promptly and escalate
    /// in the background (terminate, wait, kill); the app's end is still reported through the
    /// notifier, normally as [`ExitKind::Killed`](crate::ExitKind::Killed). Must be idempotent
    /// and must accept being called before `start` or after the app ended.
    fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String>;

    /// Removes what the app left behind (stray processes, temporary files). Called after the app
    /// ended or was shut down; may be called more than once.
    fn clean(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Where a plugin reports how its app is doing: exactly one [`ExitState`] with
/// [`exit`](ExitNotifier::exit), and any number of details with [`detail`](ExitNotifier::detail)
/// before that.
///
/// Clone it freely and move it to any thread. Only the first `exit` counts; later calls, and
/// details after an exit, are ignored. Once the host has released the instance every call is a
/// no-op: the host callback sits behind a lock that `release` clears, so a plugin thread that
/// outlives its instance can never call into freed host memory.
#[derive(Clone)]
pub struct ExitNotifier {
    shared: Arc<Mutex<NotifierState>>,
}

struct NotifierState {
    /// `None` once the instance was released.
    sink: Option<Sink>,
    /// An exit was delivered (or attempted); nothing more is sent.
    exited: bool,
}

enum Sink {
    Host(SendCallback),
    Local(Box<dyn Fn(PluginEvent) + Send + Sync>),
}

/// The host's callback, movable between threads.
struct SendCallback(HostCallback);

// SAFETY: the ABI requires the host's `on_event` to accept calls from any thread (the host-side
// context it points to is `Send + Sync`), and the notifier never calls it concurrently because
// every call happens with the notifier's lock held.
unsafe impl Send for SendCallback {}

impl ExitNotifier {
    /// A notifier that hands events to a Rust closure instead of a host. Meant for testing an
    /// [`Application`] in-process, without building and loading a library.
    pub fn from_fn(on_event: impl Fn(PluginEvent) + Send + Sync + 'static) -> Self {
        Self::with_sink(Sink::Local(Box::new(on_event)))
    }

    pub(crate) fn for_host(host: HostCallback) -> Self {
        Self::with_sink(Sink::Host(SendCallback(host)))
    }

    fn with_sink(sink: Sink) -> Self {
        ExitNotifier {
            shared: Arc::new(Mutex::new(NotifierState {
                sink: Some(sink),
                exited: false,
            })),
        }
    }

    /// Reports how the app ended. Only the first call counts.
    pub fn exit(&self, state: ExitState) {
        let mut guard = self.lock();
        if guard.exited {
            return;
        }
        guard.exited = true;
        match &guard.sink {
            None => {}
            Some(Sink::Local(f)) => f(PluginEvent::Exit(state)),
            Some(Sink::Host(cb)) => {
                // Serializing a struct of an integer, a unit enum and a string cannot fail.
                let json = serde_json::to_vec(&state).expect("an ExitState always serializes");
                send(&cb.0, EVENT_EXIT, &json);
            }
        }
    }

    /// Reports a detail about the app (e.g. `spark_app_id`); may be called many times, but only
    /// before the exit. A later value for the same key replaces the earlier one at the host.
    pub fn detail(&self, key: &str, value: &str) {
        let guard = self.lock();
        if guard.exited {
            return;
        }
        match &guard.sink {
            None => {}
            Some(Sink::Local(f)) => f(PluginEvent::Detail {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            Some(Sink::Host(cb)) => {
                let payload = DetailPayload {
                    key: key.to_owned(),
                    value: value.to_owned(),
                };
                // Two strings always serialize.
                let json = serde_json::to_vec(&payload).expect("a detail always serializes");
                send(&cb.0, EVENT_DETAIL, &json);
            }
        }
    }

    /// Whether an exit was reported already (by any clone).
    pub fn has_exited(&self) -> bool {
        self.lock().exited
    }

    /// Detaches the sink; every later call is a no-op. Blocks until an event being delivered
    /// right now has been delivered, so that when it returns the host callback is unused for good.
    pub(crate) fn close(&self) {
        self.lock().sink = None;
    }

    fn lock(&self) -> MutexGuard<'_, NotifierState> {
        // A panic in a `from_fn` closure poisons the lock; the state itself is still consistent
        // (the flag and the sink are only ever assigned whole), so keep going.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn send(cb: &HostCallback, kind: u32, json: &[u8]) {
    // SAFETY: the host keeps `ctx` valid until `release` returns, and `release` closes the
    // notifier (taking this same lock) before it returns, so we are still inside that window.
    unsafe { (cb.on_event)(cb.ctx, kind, json.as_ptr(), json.len()) }
}

impl fmt::Debug for ExitNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = self.lock();
        f.debug_struct("ExitNotifier")
            .field("attached", &guard.sink.is_some())
            .field("exited", &guard.exited)
            .finish()
    }
}

/// What the instance pointer handed to the host points at.
struct Instance<A> {
    app: Mutex<A>,
    notifier: ExitNotifier,
}

impl ApplicationPluginV1 {
    /// The table for application type `A` of kind `kind`. Used by
    /// [`declare_application!`](crate::declare_application); call it yourself only to build a
    /// table for a plugin linked into the host (see `host::ApplicationPlugin::from_static`).
    pub const fn for_application<A: Application>(kind: &'static str) -> Self {
        ApplicationPluginV1 {
            abi_version: crate::ABI_VERSION,
            kind_ptr: kind.as_ptr(),
            kind_len: kind.len(),
            create: Some(create::<A>),
            start: Some(start::<A>),
            shutdown: Some(shutdown::<A>),
            clean: Some(clean::<A>),
            release: Some(release::<A>),
            free_buffer: Some(free_buffer),
        }
    }
}

/// Runs `f`, turning an `Err` or a panic into an error status.
pub(crate) fn guarded(f: impl FnOnce() -> Result<(), String>) -> CallStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CallStatus::ok(),
        Ok(Err(message)) => CallStatus::error(&message),
        Err(payload) => CallStatus::panic(&format!(
            "plugin panicked: {}",
            panic_message(payload.as_ref())
        )),
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}

fn lock_app<A>(instance: &Instance<A>) -> MutexGuard<'_, A> {
    // A panic in an earlier call poisons the lock. Keep going anyway: after a failed start the
    // host still needs shutdown and clean to reach the app, or whatever it spawned leaks.
    instance.app.lock().unwrap_or_else(PoisonError::into_inner)
}

/// # Safety
/// `instance` must be null or a pointer from `create::<A>` not yet released.
unsafe fn instance_ref<'a, A>(instance: *mut c_void) -> Result<&'a Instance<A>, String> {
    // SAFETY: per the contract, a non-null pointer is a live `Instance<A>`.
    unsafe { instance.cast::<Instance<A>>().as_ref() }.ok_or_else(|| "null instance".to_owned())
}

unsafe extern "C" fn create<A: Application>(
    ctx_json_ptr: *const u8,
    ctx_json_len: usize,
    host: HostCallback,
    out_instance: *mut *mut c_void,
) -> CallStatus {
    guarded(|| {
        if out_instance.is_null() {
            return Err("create called with a null out_instance".into());
        }
        let json: &[u8] = if ctx_json_ptr.is_null() {
            &[]
        } else {
            // SAFETY: the host passes `ctx_json_len` readable bytes at `ctx_json_ptr`.
            unsafe { std::slice::from_raw_parts(ctx_json_ptr, ctx_json_len) }
        };
        let ctx: AppContext = serde_json::from_slice(json)
            .map_err(|e| format!("host sent a malformed app context: {e}"))?;
        let app = A::create(ctx)?;
        let instance = Box::new(Instance {
            app: Mutex::new(app),
            notifier: ExitNotifier::for_host(host),
        });
        // SAFETY: checked non-null above; the host provides a writable slot.
        unsafe { *out_instance = Box::into_raw(instance).cast() };
        Ok(())
    })
}

unsafe extern "C" fn start<A: Application>(instance: *mut c_void) -> CallStatus {
    guarded(|| {
        // SAFETY: the host passes a live instance from `create::<A>`.
        let instance = unsafe { instance_ref::<A>(instance) }?;
        let notifier = instance.notifier.clone();
        lock_app(instance).start(notifier)
    })
}

unsafe extern "C" fn shutdown<A: Application>(
    instance: *mut c_void,
    reason_ptr: *const u8,
    reason_len: usize,
) -> CallStatus {
    guarded(|| {
        // SAFETY: the host passes a live instance from `create::<A>`.
        let instance = unsafe { instance_ref::<A>(instance) }?;
        let reason = if reason_ptr.is_null() {
            None
        } else {
            // SAFETY: the host passes `reason_len` readable bytes at `reason_ptr`.
            let bytes = unsafe { std::slice::from_raw_parts(reason_ptr, reason_len) };
            Some(
                std::str::from_utf8(bytes)
                    .map_err(|e| format!("shutdown reason is not UTF-8: {e}"))?,
            )
        };
        lock_app(instance).shutdown(reason)
    })
}

unsafe extern "C" fn clean<A: Application>(instance: *mut c_void) -> CallStatus {
    guarded(|| {
        // SAFETY: the host passes a live instance from `create::<A>`.
        let instance = unsafe { instance_ref::<A>(instance) }?;
        lock_app(instance).clean()
    })
}

unsafe extern "C" fn release<A: Application>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the host passes a pointer from `create::<A>` exactly once, after its last call.
    let instance = unsafe { Box::from_raw(instance.cast::<Instance<A>>()) };
    // First cut the plugin's threads off the host callback (waiting out an event in flight), then
    // drop the app, whose own Drop may still try to report.
    instance.notifier.close();
    // There is no error channel here; the panic hook has already printed the message.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

pub(crate) unsafe extern "C" fn free_buffer(buffer: PluginBuffer) {
    // SAFETY: the host gives back, once, a buffer this library made with `PluginBuffer::from_vec`.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(unsafe { buffer.into_vec() })));
}

/// Exports an [`Application`] type from a `cdylib` as an Aloha plugin.
///
/// ```text
/// aloha_plugin::declare_application!(kind = "process", app = ProcessApp);
/// ```
///
/// `kind` is a non-empty string constant naming the kind of apps the plugin runs (what clients put
/// in `"kind"` when they submit); `app` is a type implementing [`Application`]. The macro defines
/// two `#[no_mangle] extern "C"` functions in the calling crate:
///
/// - `aloha_plugin_abi_version() -> u32`, returning [`ABI_VERSION`](crate::ABI_VERSION);
/// - `aloha_application_plugin() -> *const ApplicationPluginV1`, returning a static table whose
///   functions wrap `app`'s methods, each behind `catch_unwind`.
///
/// Invoke it once per library, at module level. The crate must be built with
/// `crate-type = ["cdylib"]` (add `"rlib"` to also link it into tests or a host). A library
/// that also exports a listener declares it with
/// [`declare_listener!(.., beside_application)`](crate::declare_listener), which leaves the
/// version symbol to this macro.
#[macro_export]
macro_rules! declare_application {
    (kind = $kind:expr, app = $app:ty $(,)?) => {
        const _: () = ::core::assert!(
            !<str>::is_empty($kind),
            "declare_application!: kind must not be empty"
        );

        /// The Aloha plugin ABI version this library was built with.
        #[unsafe(no_mangle)]
        pub extern "C" fn aloha_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// This library's Aloha Application plugin table.
        #[unsafe(no_mangle)]
        pub extern "C" fn aloha_application_plugin() -> *const $crate::abi::ApplicationPluginV1 {
            static PLUGIN: $crate::abi::ApplicationPluginV1 =
                $crate::abi::ApplicationPluginV1::for_application::<$app>($kind);
            &PLUGIN
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ExitKind;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Records what reaches the "host": (kind, json).
    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<(u32, String)>>,
    }

    unsafe extern "C" fn record(ctx: *mut c_void, kind: u32, ptr: *const u8, len: usize) {
        // SAFETY: tests pass a live `Recorder` as ctx and the notifier passes valid bytes.
        let recorder = unsafe { &*ctx.cast::<Recorder>() };
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        recorder
            .events
            .lock()
            .unwrap()
            .push((kind, String::from_utf8(bytes.to_vec()).unwrap()));
    }

    fn host_for(recorder: &Recorder) -> HostCallback {
        HostCallback {
            ctx: (recorder as *const Recorder).cast_mut().cast(),
            on_event: record,
        }
    }

    #[test]
    fn only_the_first_exit_counts_and_details_stop_after_it() {
        let recorder = Recorder::default();
        let notifier = ExitNotifier::for_host(host_for(&recorder));
        let clone = notifier.clone();
        notifier.detail("spark_app_id", "app-42");
        assert!(!clone.has_exited());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let n = notifier.clone();
                std::thread::spawn(move || n.exit(ExitState::failed(i, format!("from {i}"))))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        clone.exit(ExitState::finished(0, "late"));
        clone.detail("late", "ignored");
        assert!(notifier.has_exited());

        let events = recorder.events.lock().unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            (
                EVENT_DETAIL,
                r#"{"key":"spark_app_id","value":"app-42"}"#.to_owned()
            )
        );
        assert_eq!(events[1].0, EVENT_EXIT);
        let exit: ExitState = serde_json::from_str(&events[1].1).unwrap();
        assert_eq!(exit.kind, ExitKind::Failed);
        assert_eq!(exit.message, format!("from {}", exit.code));
    }

    #[test]
    fn a_closed_notifier_is_a_no_op() {
        let recorder = Recorder::default();
        let notifier = ExitNotifier::for_host(host_for(&recorder));
        notifier.close();
        notifier.detail("k", "v");
        notifier.exit(ExitState::finished(0, "too late"));
        assert!(recorder.events.lock().unwrap().is_empty());
    }

    #[test]
    fn from_fn_delivers_rust_events() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let notifier = ExitNotifier::from_fn(move |e| tx.lock().unwrap().send(e).unwrap());
        notifier.detail("a", "b");
        notifier.exit(ExitState::killed(143, "killed: test"));
        notifier.exit(ExitState::finished(0, "ignored"));
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            got,
            [
                PluginEvent::Detail {
                    key: "a".into(),
                    value: "b".into()
                },
                PluginEvent::Exit(ExitState::killed(143, "killed: test"))
            ]
        );
    }

    // An application whose behaviour the tests steer through its spec: `mode` picks what it
    // does, `tag` names it in the registries below (tests run in parallel, so each uses its own).
    struct TestApp {
        mode: String,
        tag: String,
    }

    /// Notifiers handed to `start`, by tag (the FFI glue owns the app, so it cannot hand them out).
    static STARTED: Mutex<Vec<(String, ExitNotifier)>> = Mutex::new(Vec::new());
    /// Tags of dropped apps.
    static DROPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    impl Application for TestApp {
        fn create(ctx: AppContext) -> Result<Self, String> {
            let mode = ctx.spec()["mode"].as_str().unwrap_or("ok").to_owned();
            let tag = ctx.spec()["tag"].as_str().unwrap_or("").to_owned();
            match mode.as_str() {
                "refuse" => Err("refused: bad spec".into()),
                "panic-create" => panic!("create exploded"),
                _ => Ok(TestApp { mode, tag }),
            }
        }
        fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
            match self.mode.as_str() {
                "panic-start" => panic!("boom"),
                "panic-start-string" => panic!("boom {}", 7),
                _ => {
                    STARTED.lock().unwrap().push((self.tag.clone(), events));
                    Ok(())
                }
            }
        }
        fn shutdown(&mut self, reason: Option<&str>) -> Result<(), String> {
            match reason {
                Some("fail") => Err("cannot stop".into()),
                Some(r) => Err(format!("echo {r}")),
                None => Ok(()),
            }
        }
    }

    impl Drop for TestApp {
        fn drop(&mut self) {
            DROPPED.lock().unwrap().push(self.tag.clone());
        }
    }

    const TABLE: ApplicationPluginV1 = ApplicationPluginV1::for_application::<TestApp>("test");

    fn ctx_json(mode: &str) -> Vec<u8> {
        ctx_json_tagged(mode, "")
    }

    fn ctx_json_tagged(mode: &str, tag: &str) -> Vec<u8> {
        serde_json::to_vec(&AppContext::new(
            serde_json::json!({"id": "app-1", "spec": {"mode": mode, "tag": tag}}),
            "/tmp",
        ))
        .unwrap()
    }

    /// Calls the table's create; Ok(instance) or Err(message).
    fn ffi_create(json: &[u8], host: HostCallback) -> Result<*mut c_void, String> {
        let mut out = std::ptr::null_mut();
        let status = unsafe { (TABLE.create.unwrap())(json.as_ptr(), json.len(), host, &mut out) };
        status_result(status).map(|()| out)
    }

    fn status_result(status: CallStatus) -> Result<(), String> {
        if status.code == crate::abi::STATUS_OK {
            assert!(status.error.ptr.is_null());
            return Ok(());
        }
        let mut message = Vec::new();
        // Take the buffer back through the table, as a host would.
        let copy = unsafe { std::slice::from_raw_parts(status.error.ptr, status.error.len) };
        message.extend_from_slice(copy);
        unsafe { (TABLE.free_buffer.unwrap())(status.error) };
        Err(String::from_utf8(message).unwrap())
    }

    #[test]
    fn table_describes_itself() {
        assert_eq!(TABLE.abi_version, crate::ABI_VERSION);
        let kind = unsafe { std::slice::from_raw_parts(TABLE.kind_ptr, TABLE.kind_len) };
        assert_eq!(kind, b"test");
    }

    #[test]
    fn errors_and_panics_come_back_as_messages() {
        let recorder = Recorder::default();
        let host = host_for(&recorder);
        assert_eq!(
            ffi_create(&ctx_json("refuse"), host).unwrap_err(),
            "refused: bad spec"
        );
        assert_eq!(
            ffi_create(&ctx_json("panic-create"), host).unwrap_err(),
            "plugin panicked: create exploded"
        );
        let err = ffi_create(b"{not json", host).unwrap_err();
        assert!(
            err.starts_with("host sent a malformed app context: "),
            "{err}"
        );

        for (mode, expected) in [
            ("panic-start", "plugin panicked: boom"),
            ("panic-start-string", "plugin panicked: boom 7"),
        ] {
            let instance = ffi_create(&ctx_json(mode), host).unwrap();
            let status = unsafe { (TABLE.start.unwrap())(instance) };
            assert_eq!(status_result(status).unwrap_err(), expected);
            // The instance stays usable after a panic.
            let reason = "fail";
            let status =
                unsafe { (TABLE.shutdown.unwrap())(instance, reason.as_ptr(), reason.len()) };
            assert_eq!(status_result(status).unwrap_err(), "cannot stop");
            let status = unsafe { (TABLE.shutdown.unwrap())(instance, std::ptr::null(), 0) };
            assert_eq!(status_result(status), Ok(()));
            let status = unsafe { (TABLE.clean.unwrap())(instance) };
            assert_eq!(status_result(status), Ok(()));
            unsafe { (TABLE.release.unwrap())(instance) };
        }
        let bad = [0xff_u8, 0xfe];
        let instance = ffi_create(&ctx_json("ok"), host).unwrap();
        let status = unsafe { (TABLE.shutdown.unwrap())(instance, bad.as_ptr(), bad.len()) };
        assert!(status_result(status)
            .unwrap_err()
            .starts_with("shutdown reason is not UTF-8"));
        let status = unsafe { (TABLE.start.unwrap())(std::ptr::null_mut()) };
        assert_eq!(status_result(status).unwrap_err(), "null instance");
        unsafe { (TABLE.release.unwrap())(instance) };
        assert!(recorder.events.lock().unwrap().is_empty());
    }

    #[test]
    fn release_drops_the_app_and_silences_its_notifier() {
        let tag = "release-silences";
        let recorder = Recorder::default();
        let instance = ffi_create(&ctx_json_tagged("ok", tag), host_for(&recorder)).unwrap();
        status_result(unsafe { (TABLE.start.unwrap())(instance) }).unwrap();
        let notifier = {
            let started = STARTED.lock().unwrap();
            let (_, n) = started.iter().find(|(t, _)| t == tag).expect("start ran");
            n.clone()
        };
        notifier.detail("before", "release");
        assert!(!DROPPED.lock().unwrap().iter().any(|t| t == tag));

        unsafe { (TABLE.release.unwrap())(instance) };
        assert!(
            DROPPED.lock().unwrap().iter().any(|t| t == tag),
            "release drops the app"
        );

        // A plugin thread that outlives the instance: its calls must not reach the host.
        std::thread::spawn(move || {
            notifier.detail("after", "release");
            notifier.exit(ExitState::finished(0, "after release"));
        })
        .join()
        .unwrap();
        let events = recorder.events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].1.contains("before"));
    }

    #[test]
    fn release_waits_for_an_event_in_flight() {
        // The host callback blocks until told to go on; release must not return before it does.
        struct Gate {
            entered: Mutex<mpsc::Sender<()>>,
            proceed: Mutex<mpsc::Receiver<()>>,
        }
        unsafe extern "C" fn gated(ctx: *mut c_void, _: u32, _: *const u8, _: usize) {
            let gate = unsafe { &*ctx.cast::<Gate>() };
            gate.entered.lock().unwrap().send(()).unwrap();
            gate.proceed.lock().unwrap().recv().unwrap();
        }
        let (entered_tx, entered_rx) = mpsc::channel();
        let (proceed_tx, proceed_rx) = mpsc::channel();
        let gate = Box::leak(Box::new(Gate {
            entered: Mutex::new(entered_tx),
            proceed: Mutex::new(proceed_rx),
        }));
        let notifier = ExitNotifier::for_host(HostCallback {
            ctx: (gate as *mut Gate).cast(),
            on_event: gated,
        });
        let sender = notifier.clone();
        let in_flight = std::thread::spawn(move || sender.exit(ExitState::finished(0, "")));
        entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();

        let (closed_tx, closed_rx) = mpsc::channel();
        let closer = std::thread::spawn(move || {
            notifier.close();
            closed_tx.send(()).unwrap();
        });
        assert!(
            closed_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "close returned while the host callback was still running"
        );
        proceed_tx.send(()).unwrap();
        closed_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        in_flight.join().unwrap();
        closer.join().unwrap();
    }
}
