//! advsweep worker: leases runs from the coordinator, trains and attacks models with libtorch
//! (through `tch`), and reports per-epoch metrics and per-cell results.
//!
//! Layout, one concept per module:
//! * [`agent`]: the gRPC loop (register, lease, heartbeat, report) — async, no libtorch;
//! * [`job`]: one run executed synchronously on a blocking thread — no gRPC;
//! * [`data`], [`models`], [`attacks`], [`train`] (with [`schedule`]), [`denoiser`],
//!   [`defended`], [`evaluate`]: the machine-learning parts;
//! * [`device`], [`rng`], [`error`], [`cli`]: plumbing;
//! * [`bench`](mod@bench): `advsweep-worker bench`, throughput of the code above on synthetic data.

pub mod agent;
pub mod attacks;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod defended;
pub mod denoiser;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod job;
pub mod model_files;
pub mod models;
pub mod optim;
pub mod precision;
pub mod report_batch;
pub mod rng;
pub mod schedule;
pub mod selfcheck;
pub mod train;
