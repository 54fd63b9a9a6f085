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

/// Transport-level failures worth another try: the coordinator is down, restarting, overloaded
/// or too slow, or the call was cut off. What the worker and the load bench retry.
pub fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
    )
}
