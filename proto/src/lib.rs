//! The advsweep v1 wire contract.
//!
//! Only this crate and the gRPC glue modules of the coordinator and worker see prost types;
//! domain code converts at the edge.

/// Generated messages and services of package `advsweep.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("advsweep.v1");
}

/// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("advsweep_descriptor");
