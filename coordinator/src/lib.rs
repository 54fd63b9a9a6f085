//! The advsweep coordinator server library: sweep files, grid expansion, durable state, the gRPC
//! services and the server loop ([`serve`]). The `advsweep` command line that drives it is
//! `advsweep-cli` (coordinator/cli/); reports are `advsweep-report` (coordinator/report/).
//!
//! Architecture invariant: this crate never links libtorch (tch). Prost types appear only in
//! [`grpc`]; everything else speaks `advsweep_core`.

pub mod artifacts;
pub mod grpc;
pub mod metrics;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod web;

/// Reports live in their own crate (`advsweep-report`); the scheduler's sanity warnings use it
/// as `crate::report`.
pub use advsweep_report as report;
