//! The advsweep coordinator: sweep files, grid expansion, durable state and the gRPC services,
//! plus the `advsweep` command line that drives them.
//!
//! Architecture invariant: this crate never links libtorch (tch). Prost types appear only in
//! [`grpc`] and [`cli`]'s client calls; everything else speaks `advsweep_core`.

pub mod cli;
pub mod grpc;
pub mod metrics;
pub mod store;
pub mod sweep;
pub mod telemetry;

/// Reports live in their own crate (`advsweep-report`); the store's sanity warnings use it as
/// `crate::report`.
pub use advsweep_report as report;
