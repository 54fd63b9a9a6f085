//! Checkpoint bytes between the worker and the coordinator: upload in 1 MiB chunks with the
//! SHA-256 the coordinator verifies, download verified against the SHA-256 it declares.
//!
//! Separate from the lease's reporting because it is a byte-stream protocol of its own (the
//! only streaming RPCs the worker makes) with its own integrity check.

use advsweep_proto::v1 as pb;
use tonic::Status;

use super::retry::Client;
use crate::error::Permanent;
use crate::model_files::ModelFileCache;

/// Lower-case hex SHA-256 of `bytes`, as the coordinator spells it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Streams a checkpoint to the coordinator in 1 MiB chunks with its SHA-256.
pub(super) async fn upload_checkpoint(
    client: &Client,
    lease: &pb::LeaseRef,
    epoch: u32,
    bytes: Vec<u8>,
) -> Result<pb::CheckpointAck, Status> {
    let sha256 = sha256_hex(&bytes);
    let chunks: Vec<pb::CheckpointChunk> = bytes
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, data)| pb::CheckpointChunk {
            lease: (i == 0).then(|| lease.clone()),
            epoch: if i == 0 { epoch } else { 0 },
            sha256: if i == 0 {
                sha256.clone()
            } else {
                String::new()
            },
            data: data.to_vec(),
        })
        .collect();
    let mut client = client.clone();
    client
        .upload_checkpoint(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

/// Why a checkpoint could not be fetched.
#[derive(Debug)]
pub(super) enum DownloadError {
    /// The coordinator found its stored file corrupt (`DATA_LOSS`) and dropped the record: the
    /// run's next lease offers the newest intact checkpoint before it.
    StoredCorrupt(Status),
    /// Anything else: the call failed, or the bytes arrived damaged (the file itself is fine).
    Other(Status),
}

impl DownloadError {
    pub(super) fn status(&self) -> &Status {
        match self {
            DownloadError::StoredCorrupt(s) | DownloadError::Other(s) => s,
        }
    }
}

/// Fetches a checkpoint and verifies its SHA-256 before anything loads it.
pub(super) async fn download_checkpoint(
    client: &Client,
    lease: &pb::LeaseRef,
    checkpoint: &pb::CheckpointRef,
) -> Result<Vec<u8>, DownloadError> {
    let from_coordinator = |status: Status| {
        if status.code() == tonic::Code::DataLoss {
            DownloadError::StoredCorrupt(status)
        } else {
            DownloadError::Other(status)
        }
    };
    let mut client = client.clone();
    let mut stream = client
        .download_checkpoint(pb::DownloadCheckpointRequest {
            worker_id: lease.worker_id.clone(),
            run_id: lease.run_id.clone(),
            checkpoint_id: checkpoint.checkpoint_id.clone(),
        })
        .await
        .map_err(from_coordinator)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(from_coordinator)? {
        bytes.extend_from_slice(&chunk.data);
    }
    let actual = sha256_hex(&bytes);
    if actual != checkpoint.sha256 {
        return Err(DownloadError::Other(Status::data_loss(format!(
            "checkpoint {} arrived corrupted (SHA-256 {actual}, expected {})",
            checkpoint.checkpoint_id, checkpoint.sha256
        ))));
    }
    Ok(bytes)
}

/// Makes sure the model file a run names is in the worker's cache: downloaded once per hash
/// (the cache admits only whole, verified files, so slots racing for the same file each write
/// their own temporary copy and the last rename wins with identical bytes) and verified
/// against the SHA-256 and size the run declares. A file the coordinator does not have
/// (`NOT_FOUND`), finds corrupt (`DATA_LOSS`), or whose bytes do not match is [`Permanent`]:
/// every retry would fail the same way. A failed call (the coordinator unreachable) is not.
pub(super) async fn ensure_model_file(
    client: &Client,
    worker_id: &str,
    file: &advsweep_core::ModelFile,
    cache: &ModelFileCache,
) -> anyhow::Result<()> {
    if cache.has(file) {
        return Ok(());
    }
    let failed = |status: Status| -> anyhow::Error {
        let message = format!(
            "cannot fetch model file {} from the coordinator: {} ({:?})",
            file.sha256,
            status.message(),
            status.code()
        );
        if matches!(
            status.code(),
            tonic::Code::NotFound | tonic::Code::DataLoss | tonic::Code::InvalidArgument
        ) {
            Permanent(message).into()
        } else {
            anyhow::anyhow!(message)
        }
    };
    let mut client = client.clone();
    let mut stream = client
        .download_model_file(pb::DownloadModelFileRequest {
            worker_id: worker_id.to_owned(),
            sha256: file.sha256.clone(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    let mut admission = cache.admit(file)?;
    while let Some(chunk) = stream.message().await.map_err(failed)? {
        admission.write(&chunk.data)?;
    }
    let path = admission.finish()?;
    tracing::info!(sha256 = %file.sha256, bytes = file.bytes, path = %path.display(), "model file downloaded");
    Ok(())
}
