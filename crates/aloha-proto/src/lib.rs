//! gRPC types for the master <-> worker protocol, generated from `proto/aloha/v1/aloha.proto`.
//!
//! Nothing here is hand-written except this module tree, [`auth`] (the join token every call
//! carries) and [`tls`] (mutual TLS on every link): conversions to domain types live in the
//! crates that own those types.

pub mod auth;
pub mod streams;
pub mod tls;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("aloha.v1");
}

pub use v1::*;
