//! The raw C ABI: the `#[repr(C)]` types and symbol names both sides agree on. The crate docs
//! give the rules (versioning, ownership, threading); this module only spells out the layout.
//!
//! Plugin authors never touch these directly: [`declare_application!`](crate::declare_application)
//! and [`declare_listener!`](crate::declare_listener) build the tables, and `host` wraps them in
//! safe types.

use std::ffi::c_void;

/// The symbol every Aloha plugin library exports: `extern "C" fn() -> u32` returning the
/// [`ABI_VERSION`](crate::ABI_VERSION) it was built with. A library without it is not an Aloha
/// plugin.
pub const ABI_VERSION_SYMBOL: &str = "aloha_plugin_abi_version";

/// The symbol of an Application plugin: `extern "C" fn() -> *const ApplicationPluginV1`,
/// returning a table that lives as long as the library is loaded.
pub const APPLICATION_PLUGIN_SYMBOL: &str = "aloha_application_plugin";

/// The symbol of a listener plugin: `extern "C" fn() -> *const ListenerPluginV1`, returning a
/// table that lives as long as the library is loaded. A library may export it instead of, or
/// beside, [`APPLICATION_PLUGIN_SYMBOL`]; a host looking for the one ignores the other.
pub const LISTENER_PLUGIN_SYMBOL: &str = "aloha_listener_plugin";

/// The `type` of an event that a listener host delivers through
/// [`ListenerPluginV1::on_app_state_changed`]. Every other type goes to `on_other_event`.
pub const EVENT_TYPE_APP_STATE_CHANGED: &str = "app_state_changed";
/// The `type` of an event that a listener host delivers through
/// [`ListenerPluginV1::on_app_relaunched`].
pub const EVENT_TYPE_APP_RELAUNCHED: &str = "app_relaunched";

/// [`CallStatus::code`] of a call that succeeded.
pub const STATUS_OK: u32 = 0;
/// [`CallStatus::code`] of a call that failed; [`CallStatus::error`] holds the message.
pub const STATUS_ERROR: u32 = 1;
/// [`CallStatus::code`] of a call whose plugin code panicked (caught at the boundary);
/// [`CallStatus::error`] holds the panic message. Hosts treat it as a failure of the app, not
/// as a refusal of its spec.
pub const STATUS_PANIC: u32 = 2;

/// [`HostCallback::on_event`] `kind` of an exit: the payload is an [`ExitState`](crate::ExitState)
/// as JSON.
pub const EVENT_EXIT: u32 = 0;
/// [`HostCallback::on_event`] `kind` of a detail: the payload is `{"key": "..", "value": ".."}`.
pub const EVENT_DETAIL: u32 = 1;

/// Bytes allocated by the plugin and handed to the host, which must give them back through
/// [`ApplicationPluginV1::free_buffer`] exactly once (never `free`, never the host's allocator).
/// A null `ptr` means "no buffer" and needs no freeing.
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuffer {
    /// Start of the bytes; null for no buffer.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl PluginBuffer {
    /// No buffer.
    pub const fn null() -> Self {
        PluginBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    /// Hands `bytes` over to the receiver; it must come back through the plugin's `free_buffer`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let boxed: Box<[u8]> = bytes.into_boxed_slice();
        let len = boxed.len();
        PluginBuffer {
            ptr: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }

    /// Takes back a buffer made by [`PluginBuffer::from_vec`] in this same library.
    ///
    /// # Safety
    /// `self` must come from `from_vec` in the same library (same allocator) and not have been
    /// reclaimed before.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: per the contract, ptr/len are exactly what Box::into_raw gave for a Box<[u8]>.
        let boxed =
            unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) };
        boxed.into_vec()
    }
}

/// The outcome of a fallible plugin call.
#[repr(C)]
#[derive(Debug)]
pub struct CallStatus {
    /// [`STATUS_OK`], [`STATUS_ERROR`] or [`STATUS_PANIC`]; anything else is treated as an error.
    pub code: u32,
    /// On error, the UTF-8 message (owned by the host now, freed through `free_buffer`); null on
    /// success.
    pub error: PluginBuffer,
}

impl CallStatus {
    /// Success.
    pub const fn ok() -> Self {
        CallStatus {
            code: STATUS_OK,
            error: PluginBuffer::null(),
        }
    }

    /// A caught panic with `message`.
    pub fn panic(message: &str) -> Self {
        CallStatus {
            code: STATUS_PANIC,
            ..CallStatus::error(message)
        }
    }

    /// Failure with `message`.
    pub fn error(message: &str) -> Self {
        let message = if message.is_empty() {
            "unspecified error"
        } else {
            message
        };
        CallStatus {
            code: STATUS_ERROR,
            error: PluginBuffer::from_vec(message.as_bytes().to_vec()),
        }
    }
}

/// How a plugin reports events to the host. Built by the host for each instance and passed to
/// `create`; valid from the moment `start` is called until `release` returns, and never after.
///
/// `on_event(ctx, kind, json_ptr, json_len)` may be called from any thread, but never
/// concurrently for one instance; `kind` is [`EVENT_EXIT`] or [`EVENT_DETAIL`]; the JSON bytes
/// are borrowed for the duration of the call only. An exit is the last event of an instance.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostCallback {
    /// The host's state for this instance, passed back untouched.
    pub ctx: *mut c_void,
    /// The host function that receives events. Must not be null.
    pub on_event:
        unsafe extern "C" fn(ctx: *mut c_void, kind: u32, json_ptr: *const u8, json_len: usize),
}

/// `create(ctx_json_ptr, ctx_json_len, host, out_instance)`: builds an instance from an
/// [`AppContext`](crate::AppContext) as JSON. On success writes the instance pointer (never
/// null) to `*out_instance`; on error writes nothing and never uses `host`.
pub type CreateFn = unsafe extern "C" fn(
    ctx_json_ptr: *const u8,
    ctx_json_len: usize,
    host: HostCallback,
    out_instance: *mut *mut c_void,
) -> CallStatus;

/// `start(instance)`: starts the app and returns at once.
pub type StartFn = unsafe extern "C" fn(instance: *mut c_void) -> CallStatus;

/// `shutdown(instance, reason_ptr, reason_len)`: asks the app to stop; the reason is UTF-8, or
/// absent when `reason_ptr` is null. Returns promptly.
pub type ShutdownFn = unsafe extern "C" fn(
    instance: *mut c_void,
    reason_ptr: *const u8,
    reason_len: usize,
) -> CallStatus;

/// `clean(instance)`: removes what the app left behind (processes, temporary files).
pub type CleanFn = unsafe extern "C" fn(instance: *mut c_void) -> CallStatus;

/// `release(instance)`: destroys the instance. When it returns, the plugin has stopped using the
/// instance's [`HostCallback`] for good (an application instance; listener instances have none).
pub type ReleaseFn = unsafe extern "C" fn(instance: *mut c_void);

/// `free_buffer(buffer)`: gives back a [`PluginBuffer`] the plugin handed out.
pub type FreeBufferFn = unsafe extern "C" fn(buffer: PluginBuffer);

/// The table an Application plugin exports through [`APPLICATION_PLUGIN_SYMBOL`]. It is static:
/// it lives, unchanged, as long as the library is loaded.
///
/// `abi_version` is the first field in every ABI version, so a host can read it from a table of
/// any version and refuse a mismatch before looking at anything else. The function pointers are
/// `Option`s only so that a host can refuse a table with a null entry instead of calling it;
/// a valid table has all of them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ApplicationPluginV1 {
    /// The [`ABI_VERSION`](crate::ABI_VERSION) the table was built for.
    pub abi_version: u32,
    /// The kind of apps this plugin runs (`"process"`), UTF-8, not NUL-terminated, static.
    pub kind_ptr: *const u8,
    /// Length of the kind in bytes.
    pub kind_len: usize,
    /// See [`CreateFn`].
    pub create: Option<CreateFn>,
    /// See [`StartFn`].
    pub start: Option<StartFn>,
    /// See [`ShutdownFn`].
    pub shutdown: Option<ShutdownFn>,
    /// See [`CleanFn`].
    pub clean: Option<CleanFn>,
    /// See [`ReleaseFn`].
    pub release: Option<ReleaseFn>,
    /// See [`FreeBufferFn`].
    pub free_buffer: Option<FreeBufferFn>,
}

// SAFETY: the table is immutable and its `kind_ptr` points at static, immutable bytes, so sharing
// it between threads (it sits in a `static`) cannot race.
unsafe impl Sync for ApplicationPluginV1 {}
// SAFETY: as above; the pointers are to static data, valid on any thread.
unsafe impl Send for ApplicationPluginV1 {}

/// `create(config_json_ptr, config_json_len, out_instance)`: builds a listener instance from its
/// configuration (any JSON value, `{}` when the operator gave none). On success writes the
/// instance pointer (never null) to `*out_instance`; on error writes nothing.
pub type ListenerCreateFn = unsafe extern "C" fn(
    config_json_ptr: *const u8,
    config_json_len: usize,
    out_instance: *mut *mut c_void,
) -> CallStatus;

/// `on_...(instance, event_json_ptr, event_json_len)`: hands one event, as JSON, to a listener
/// instance and returns when the listener is done with it. An error means "not delivered": the
/// host may deliver the same event again later.
pub type ListenerEventFn = unsafe extern "C" fn(
    instance: *mut c_void,
    event_json_ptr: *const u8,
    event_json_len: usize,
) -> CallStatus;

/// The table a listener plugin exports through [`LISTENER_PLUGIN_SYMBOL`]: static, unchanged as
/// long as the library is loaded, and part of ABI version 1 like [`ApplicationPluginV1`].
///
/// The host calls `create` with the listener's configuration, then one of the three `on_*`
/// functions per event, chosen by the event's `type` ([`EVENT_TYPE_APP_STATE_CHANGED`],
/// [`EVENT_TYPE_APP_RELAUNCHED`], anything else to `on_other_event`), then `release`. The event
/// JSON is borrowed for the call. Calls on one instance never overlap (the host serializes them),
/// but may come from different threads.
///
/// As in every table, `abi_version` comes first and the function pointers are `Option`s only so
/// that a host can refuse a table with a null entry; a valid table has all of them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ListenerPluginV1 {
    /// The [`ABI_VERSION`](crate::ABI_VERSION) the table was built for.
    pub abi_version: u32,
    /// The listener's name (`"jsonl"`), UTF-8, not NUL-terminated, static. Hosts use it in logs
    /// and metrics.
    pub name_ptr: *const u8,
    /// Length of the name in bytes.
    pub name_len: usize,
    /// See [`ListenerCreateFn`].
    pub create: Option<ListenerCreateFn>,
    /// An app changed state. See [`ListenerEventFn`].
    pub on_app_state_changed: Option<ListenerEventFn>,
    /// An app's attempt was lost and the app was queued again. See [`ListenerEventFn`].
    pub on_app_relaunched: Option<ListenerEventFn>,
    /// Any other event (worker joined or lost, leadership change, and types added later). See
    /// [`ListenerEventFn`].
    pub on_other_event: Option<ListenerEventFn>,
    /// Destroys an instance. See [`ReleaseFn`].
    pub release: Option<ReleaseFn>,
    /// See [`FreeBufferFn`].
    pub free_buffer: Option<FreeBufferFn>,
}

// SAFETY: the table is immutable and its `name_ptr` points at static, immutable bytes, so sharing
// it between threads (it sits in a `static`) cannot race.
unsafe impl Sync for ListenerPluginV1 {}
// SAFETY: as above; the pointers are to static data, valid on any thread.
unsafe impl Send for ListenerPluginV1 {}
