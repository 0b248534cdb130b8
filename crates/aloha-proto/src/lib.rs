//! gRPC types for the master <-> worker protocol, generated from `proto/aloha/v1/aloha.proto`.
//!
//! Nothing here is hand-written except this module tree and [`auth`] (the join token every call
//! carries): conversions to domain types live in the crates that own those types.

pub mod auth;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("aloha.v1");
}

pub use v1::*;
