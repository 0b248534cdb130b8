//! # aloha-plugin
//!
//! The boundary between Aloha and its plugins: Application plugins, which the worker uses to run
//! apps, and listener plugins, which the master hands its events to. A plugin is a `cdylib` that
//! the daemon opens at run time (with `libloading`) and talks to through a small, versioned C
//! ABI, modelled on apache/datafusion's `datafusion-ffi`: `#[repr(C)]` tables of
//! `unsafe extern "C"` function pointers, an opaque instance pointer (the plugin's private data),
//! an explicit `release`, and a version function. Rich payloads cross as JSON bytes, never as
//! Rust types, so host and plugin may be built by different compilers; no Rust trait object, no
//! allocator and no async runtime is shared across the boundary.
//!
//! ## Layout
//! - [`Application`], [`ExitNotifier`] and [`declare_application!`]: what a plugin author
//!   writes and calls. The macro exports the C symbols and wraps every call in `catch_unwind`,
//!   so a panicking plugin reports an error (`"plugin panicked: <msg>"`) instead of aborting the
//!   worker.
//! - [`EventListener`] and [`declare_listener!`]: the same for a listener plugin.
//! - [`ExitState`], [`ExitKind`], [`AppContext`], [`PluginEvent`]: the JSON payloads.
//! - [`from_json`] and [`AppContext::spec_as`]: a spec or a configuration as the plugin's own
//!   `serde` type, with errors that name the field.
//! - [`testing`]: a plugin tested in-process (an [`AppContext`] around a spec and a temporary
//!   app directory, an [`ExitNotifier`] that collects what the app reports).
//! - [`abi`]: the raw `#[repr(C)]` types and symbol names.
//! - `host` (cargo feature `host`): loading libraries, scanning a plugin directory, the safe
//!   `AppInstance` handle the worker drives, and the `ListenerPlugin` / `ListenerInstance` pair
//!   the master delivers events through.
//!
//! ## The ABI
//! A plugin library exports, as `#[no_mangle] extern "C"`:
//!
//! - `aloha_plugin_abi_version() -> u32`: the [`ABI_VERSION`] it was built with. Every Aloha
//!   plugin has it; a library without it is not an Aloha plugin.
//! - `aloha_application_plugin() -> *const ApplicationPluginV1`: for Application plugins, a
//!   static table ([`abi::ApplicationPluginV1`]) holding the ABI version, the plugin's kind
//!   (`"process"`) and the functions `create`, `start`, `shutdown`, `clean`, `release` and
//!   `free_buffer`.
//! - `aloha_listener_plugin() -> *const ListenerPluginV1`: for listener plugins, a static table
//!   ([`abi::ListenerPluginV1`]) holding the ABI version, the listener's name (`"jsonl"`) and the
//!   functions `create`, `on_app_state_changed`, `on_app_relaunched`, `on_other_event`,
//!   `release` and `free_buffer`.
//!
//! A library may export either table or both (an Application plugin that also listens). Both
//! tables are part of ABI version 1. A worker scanning its plugin directory for Application
//! plugins skips, without error, a library that has the version symbol but no application table;
//! the master loads listeners by explicit path and refuses a library without a listener table.
//!
//! An application instance's life: the host calls `create` with the [`AppContext`] as JSON and a
//! [`abi::HostCallback`] (`ctx` + `on_event`), gets back an opaque instance pointer, then calls
//! `start` (at most once), any number of `shutdown` and `clean`, and finally `release`.
//! Fallible calls return a [`abi::CallStatus`]: a code and, on error, a UTF-8 message.
//!
//! A listener instance's life: the host calls `create` with the listener's configuration as JSON
//! (any value; `{}` when none was given) and gets back an opaque instance pointer, then hands it
//! events one at a time, in sequence order, each as the event's JSON (`aloha_core::Event`:
//! `seq`, `at`, `type` and the type's fields), through the function that the event's `type`
//! selects: `app_state_changed` → `on_app_state_changed`, `app_relaunched` →
//! `on_app_relaunched`, anything else → `on_other_event`. An error status means "not delivered":
//! the host retries that event later, so delivery is at least once. Finally, `release`.
//!
//! ## Versioning
//! [`ABI_VERSION`] is bumped on **any** change to the layout or meaning of the exported symbols,
//! the tables, the callback or the JSON payloads' required fields (adding an optional JSON field
//! is not a change). There is no compatibility range: the host refuses a plugin whose version
//! differs from its own, with an error naming both (`plugin ABI version 2 does not match this
//! host's ABI version 1; rebuild the plugin ...`). `abi_version` stays the first field of every
//! table of every version so that a host can always read it. New tables get new names
//! (`ApplicationPluginV2`). Version 1 is the version symbol plus both tables,
//! `ApplicationPluginV1` and `ListenerPluginV1` (with the event `type` names that pick a
//! listener function), so a change to either bumps the one version for all plugins.
//!
//! ## Ownership and threading
//! - **JSON in calls** (the context or configuration for `create`, the shutdown reason, a
//!   listener's event) is borrowed by the plugin for the duration of the call; it copies what it
//!   keeps.
//! - **Error messages** in a [`abi::CallStatus`] are allocated by the plugin; the host copies them
//!   and gives each buffer back exactly once through the plugin's own `free_buffer` (the two
//!   sides may use different allocators).
//! - **The instance** belongs to the plugin and is destroyed by `release`, called exactly once,
//!   after the host's last call on it. Calls on one instance may come from any host thread, even
//!   concurrently; the plugin serializes them (the glue behind [`declare_application!`] holds a
//!   mutex around the [`Application`]). Calls on a listener instance never overlap (the host
//!   serializes them, delivering from one thread per listener) but may come from any thread.
//! - **The host callback** belongs to the host. The plugin may call `on_event` from any thread,
//!   one call at a time, from the moment `start` is called until `release` returns, never after:
//!   `release` must not return while a call is in flight and must stop every later one (the
//!   [`ExitNotifier`] does this with a lock that `release` clears). If `create` fails, the
//!   plugin keeps nothing of the callback. Event payloads are borrowed for the call. The host's
//!   `on_event` must return promptly and must not call back into the instance.
//! - **Events**: `kind` 0 is an exit (an [`ExitState`] as JSON), reported at most once and last;
//!   `kind` 1 is a detail (`{"key": .., "value": ..}`), any number before the exit. The host
//!   ignores kinds it does not know and everything after the first exit.
//! - **Libraries** stay loaded for the life of the host process (the host opens them with
//!   `RTLD_NODELETE`), because a plugin's threads may outlive its last instance.
//!
//! ## Writing a plugin
//! ```no_run
//! use aloha_plugin::{AppContext, Application, ExitNotifier, ExitState};
//!
//! struct Sleeper { ms: u64 }
//!
//! impl Application for Sleeper {
//!     fn create(ctx: AppContext) -> Result<Self, String> {
//!         let ms = ctx.spec()["ms"].as_u64().ok_or("spec.ms must be a number")?;
//!         Ok(Sleeper { ms })
//!     }
//!     fn start(&mut self, events: ExitNotifier) -> Result<(), String> {
//!         let ms = self.ms;
//!         std::thread::spawn(move || {
//!             std::thread::sleep(std::time::Duration::from_millis(ms));
//!             events.exit(ExitState::finished(0, "slept"));
//!         });
//!         Ok(())
//!     }
//!     fn shutdown(&mut self, _reason: Option<&str>) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! aloha_plugin::declare_application!(kind = "sleeper", app = Sleeper);
//! ```
//!
//! ## Writing a listener
//! ```no_run
//! use aloha_plugin::EventListener;
//! use serde_json::Value;
//!
//! struct Printer { prefix: String }
//!
//! impl EventListener for Printer {
//!     fn create(config: Value) -> Result<Self, String> {
//!         let prefix = config["prefix"].as_str().unwrap_or("aloha").to_owned();
//!         Ok(Printer { prefix })
//!     }
//!     fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
//!         println!("{}: {} is {}", self.prefix, event["app_id"], event["new_state"]);
//!         Ok(())
//!     }
//!     fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
//!         println!("{}: {} relaunched", self.prefix, event["app_id"]);
//!         Ok(())
//!     }
//!     fn on_other_event(&mut self, _event: &Value) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! aloha_plugin::declare_listener!(name = "printer", listener = Printer);
//! ```

#![warn(missing_docs)]

pub mod abi;
mod export;
#[cfg(feature = "host")]
pub mod host;
mod json;
mod listener;
pub mod testing;
mod types;

pub use export::{Application, ExitNotifier};
pub use json::from_json;
pub use listener::EventListener;
pub use types::{AppContext, ExitKind, ExitState, PluginEvent};

/// The version of the plugin ABI this crate speaks. Bump it on any change to the layout or
/// meaning of the C ABI (see the crate docs); hosts refuse plugins built with another value.
/// Version 1 comprises both [`abi::ApplicationPluginV1`] and [`abi::ListenerPluginV1`].
pub const ABI_VERSION: u32 = 1;

/// `docs/plugin-guide.md`, whose Rust snippets `cargo test -p aloha-plugin --doc` compiles (and
/// runs, unless marked `no_run`), so that the guide cannot drift from this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/plugin-guide.md")]
mod plugin_guide {}
