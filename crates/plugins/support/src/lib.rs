//! # aloha-plugin-support
//!
//! What the shipped Application plugins (`process`, `spark`, `flink`) share, so that each of them
//! is only what is particular to its kind. A plain Rust library linked into each plugin's
//! `cdylib`: nothing here crosses the plugin ABI.
//!
//! ## Layout
//! - [`group`]: a command run in its own process group, under the worker's supervisor
//!   (`aloha-supervise`, which kills the group if the worker dies) or as the group's leader,
//!   forked by a long-lived monitor thread with `PR_SET_PDEATHSIG` (it dies with the worker),
//!   stopped as a whole (SIGTERM, a grace period, SIGKILL), swept when its leader exits, the
//!   leader's pid written to a file.
//! - [`output`]: the app's `stdout`/`stderr` files: opening them, following them line by line as
//!   they grow, and quoting their last lines in a failure message.
//! - [`spec`]: the checks every spec parser makes (unknown fields, environment, the worker's
//!   `[plugins.<kind>]` values, the kill grace period), with one wording for every kind.
//! - [`http`]: a small blocking HTTP client for the REST APIs the `spark` and `flink` plugins
//!   watch.

#![warn(missing_docs)]

pub mod group;
pub mod http;
pub mod output;
pub mod spec;

pub use group::{Launch, ProcessExit, ProcessGroup};
