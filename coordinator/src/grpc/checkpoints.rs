//! Checkpoint transfer: uploads are streamed to a temporary file while hashed, verified against
//! the SHA-256 the worker declared, fsynced and renamed into place before the store records
//! them; downloads re-verify the file before sending it, so a corrupted artifact is reported
//! (and dropped) instead of poisoning a resume.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use advsweep_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Status, Streaming};

/// Largest checkpoint accepted (WideResNet-28-10 with optimizer state is ~300 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;
/// Chunk size for downloads.
pub const CHUNK_BYTES: usize = 1 << 20;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first chunk's header: who uploads, which epoch, which hash.
pub struct UploadHeader {
    pub lease: pb::LeaseRef,
    pub epoch: u32,
    pub sha256: String,
}

/// Receives the stream into a fresh file under `dir`; returns (header, final path, bytes).
pub async fn receive(
    mut stream: Streaming<pb::CheckpointChunk>,
    dir_of: impl FnOnce(&str) -> PathBuf,
) -> Result<(UploadHeader, PathBuf, u64), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty checkpoint upload"))?;
    let lease = first
        .lease
        .clone()
        .ok_or_else(|| Status::invalid_argument("the first chunk must carry `lease`"))?;
    let sha256 = first.sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "field `sha256` must be 64 hex digits",
        ));
    }
    if first.epoch == 0 {
        return Err(Status::invalid_argument("field `epoch` must be at least 1"));
    }
    super::require_id("lease.run_id", &lease.run_id)?;
    let epoch = first.epoch;
    let dir = dir_of(&lease.run_id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    let final_path = dir.join(format!("epoch-{:05}-{}.ckpt", first.epoch, &sha256[..16]));
    let tmp_path = dir.join(format!(".upload-{}", crate::store::random_id("")));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", tmp_path.display())))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            total += c.data.len() as u64;
            if total > MAX_CHECKPOINT_BYTES {
                return Err(Status::invalid_argument(format!(
                    "checkpoint larger than {MAX_CHECKPOINT_BYTES} bytes"
                )));
            }
            hasher.update(&c.data);
            file.write_all(&c.data)
                .await
                .map_err(|e| Status::internal(format!("writing checkpoint: {e}")))?;
            chunk = stream.message().await?;
        }
        file.sync_all()
            .await
            .map_err(|e| Status::internal(format!("syncing checkpoint: {e}")))?;
        let actual = hex(&hasher.finalize());
        if actual != sha256 {
            return Err(Status::data_loss(format!(
                "checkpoint corrupted in transit: SHA-256 {actual}, declared {sha256}"
            )));
        }
        tokio::fs::rename(&tmp_path, &final_path)
            .await
            .map_err(|e| Status::internal(format!("storing checkpoint: {e}")))?;
        Ok(total)
    }
    .await;
    match result {
        Ok(total) => Ok((
            UploadHeader {
                lease,
                epoch,
                sha256,
            },
            final_path,
            total,
        )),
        Err(status) => {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            Err(status)
        }
    }
}

/// Reads and verifies a stored checkpoint; `Err(DataLoss)` when its bytes no longer match.
pub async fn read_verified(path: &Path, sha256: &str) -> Result<Vec<u8>, Status> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Status::data_loss(format!("checkpoint {} unreadable: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .await
        .map_err(|e| Status::data_loss(format!("checkpoint {} unreadable: {e}", path.display())))?;
    let actual = hex(&Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(Status::data_loss(format!(
            "checkpoint {} is corrupt: SHA-256 {actual}, stored {sha256}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Streams verified bytes in chunks.
pub fn send(bytes: Vec<u8>, epoch: u32, sha256: String) -> ChunkStream {
    let chunks: Vec<Result<pb::CheckpointChunk, Status>> = bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| {
            Ok(pb::CheckpointChunk {
                lease: None,
                epoch: if i == 0 { epoch } else { 0 },
                sha256: if i == 0 {
                    sha256.clone()
                } else {
                    String::new()
                },
                data: data.to_vec(),
            })
        })
        .collect();
    Box::pin(tokio_stream::iter(chunks))
}
