//! gRPC types for the master <-> worker protocol, generated from `proto/aloha/v1/aloha.proto`.
//!
//! Nothing here is hand-written except this module tree: conversions to domain types live in the
//! crates that own those types.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("aloha.v1");
}

pub use v1::*;
