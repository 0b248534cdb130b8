//! # aloha-core
//!
//! The domain of Aloha-rs, with no I/O: everything here is a function of its inputs (time is a
//! parameter), so every decision is unit-tested without sockets, files or sleeps.
//!
//! ## Layout
//! - [`state`]: [`AppState`] and its legal transitions.
//! - [`app`]: what clients submit ([`SubmitRequest`]), what the master keeps ([`App`]), and the one
//!   function that changes an app's state ([`App::transition`]) or handles its loss ([`App::lose`]).
//! - [`worker`]: worker records and [`Liveness`], the heartbeat timeout detector.
//! - [`cluster`]: [`cluster::Cluster`], the master's rules as one pure state machine (submit,
//!   kill, register, report, place, expiry, retention) over persistent maps, with the placement
//!   indexes.
//! - [`schedule`]: the FIFO, resource-based placement policy ([`schedule::place`]), the
//!   reference the cluster's incremental placement is tested against.
//! - [`report`]: applying a worker's statement about an app ([`report::apply`]).
//! - [`namespace`]: namespaces, their quotas and weights, and the arithmetic of fair shares.
//! - [`event`]: the numbered events listeners and the event stream receive.
//! - [`api`]: the JSON shapes the REST API serves.
//! - [`schedules`]: schedules ([`schedules::Schedule`]), their requests and overlap and
//!   misfire policies; the rules that fire them are the cluster's.
//! - [`timetable`]: when a schedule fires ([`timetable::Timetable`]): `every` periods and cron
//!   expressions on a time zone's wall clock, with daylight saving rules and a stable jitter.

pub mod api;
pub mod app;
pub mod cluster;
pub mod event;
pub mod namespace;
pub mod report;
pub mod schedule;
pub mod schedules;
pub mod state;
pub mod timetable;
pub mod worker;

pub use app::{
    App, AppDescription, AppId, HistoryEntry, Spec, SubmitError, SubmitRequest, TransitionError,
};
pub use event::{Event, EventBody};
pub use state::AppState;
pub use worker::{Liveness, WorkerId, WorkerRecord, WorkerState};
