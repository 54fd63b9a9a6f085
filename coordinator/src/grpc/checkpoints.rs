//! Checkpoint transfer: uploads are streamed to a temporary file while hashed, verified against
//! the SHA-256 the worker declared, fsynced and renamed into place before the store records
//! them; downloads re-verify the file before sending it, so a corrupted artifact is reported
//! (and dropped) instead of poisoning a resume.
//!
//! An upload is checked before any byte reaches the disk: the first chunk's lease (its run id is
//! a content id, so `<state-dir>/artifacts/<run_id>/` cannot point anywhere else), epoch and
//! SHA-256 are validated and the caller confirms the lease is live; then every chunk is bounded
//! ([`MAX_CHUNK_BYTES`], [`MAX_CHUNKS`], [`MAX_CHECKPOINT_BYTES`] in all).

use std::path::{Path, PathBuf};
use std::pin::Pin;

use advsweep_core::wire::MAX_EPOCHS;
use advsweep_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use super::validate::{invalid, lease_ref, require_sha256};
use crate::artifacts::TempUpload;
use crate::store::LeaseRef;

/// Largest checkpoint accepted (WideResNet-28-10 with optimizer state is ~300 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;
/// Chunk size for downloads.
pub const CHUNK_BYTES: usize = 1 << 20;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::CheckpointChunk, Status>> + Send>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest chunk accepted in an upload (workers send 1 MiB; the server's message limit is 8).
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Most chunks in one upload (a stream of empty chunks must end too).
pub const MAX_CHUNKS: u64 = 1 << 20;

/// The first chunk's header, validated: who uploads, which epoch, which hash.
pub struct UploadHeader {
    pub lease: LeaseRef,
    pub epoch: u32,
    pub sha256: String,
}

/// An upload whose header has been read and checked, and nothing written yet.
pub struct Upload {
    pub header: UploadHeader,
    first: pb::CheckpointChunk,
    stream: Streaming<pb::CheckpointChunk>,
}

fn check_chunk_size(index: u64, chunk: &pb::CheckpointChunk) -> Result<(), Status> {
    if chunk.data.len() > MAX_CHUNK_BYTES {
        return Err(invalid(format!(
            "chunk {index}: field `data` is {} bytes, more than {MAX_CHUNK_BYTES}",
            chunk.data.len()
        )));
    }
    Ok(())
}

/// Later chunks carry data only; a header field there is a confused or hostile client.
fn check_later_chunk(index: u64, chunk: &pb::CheckpointChunk) -> Result<(), Status> {
    if chunk.lease.is_some() || chunk.epoch != 0 || !chunk.sha256.is_empty() {
        return Err(invalid(format!(
            "chunk {index}: fields `lease`, `epoch` and `sha256` belong on the first chunk only"
        )));
    }
    check_chunk_size(index, chunk)
}

/// Reads and validates the first chunk (lease, epoch in 1..=MAX_EPOCHS, SHA-256). Touches no
/// file, so the caller can check the lease before anything is written.
pub async fn begin(mut stream: Streaming<pb::CheckpointChunk>) -> Result<Upload, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| invalid("empty checkpoint upload"))?;
    let lease = lease_ref(first.lease.clone()).map_err(|s| {
        invalid(format!(
            "the first chunk must carry a valid `lease`: {}",
            s.message()
        ))
    })?;
    let sha256 = require_sha256("sha256", &first.sha256)?;
    if !(1..=MAX_EPOCHS).contains(&first.epoch) {
        return Err(invalid(format!(
            "field `epoch` = {} must be in 1..={MAX_EPOCHS}",
            first.epoch
        )));
    }
    check_chunk_size(0, &first)?;
    Ok(Upload {
        header: UploadHeader {
            lease,
            epoch: first.epoch,
            sha256,
        },
        first,
        stream,
    })
}

/// Receives the rest of the stream into a fresh file under `dir` (the run's artifacts
/// directory, derived from a validated run id); returns (header, final path, bytes).
pub async fn receive(upload: Upload, dir: PathBuf) -> Result<(UploadHeader, PathBuf, u64), Status> {
    let Upload {
        header,
        first,
        mut stream,
    } = upload;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    let final_path = dir.join(format!(
        "epoch-{:05}-{}.ckpt",
        header.epoch,
        &header.sha256[..16]
    ));
    // Removed on every way out, the handler being dropped mid-stream included.
    let temp = TempUpload::new(&dir, &crate::store::random_id(""));
    let tmp_path = temp.path().to_owned();
    let sha256 = header.sha256.clone();
    let total = async {
        let mut file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", tmp_path.display())))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut index = 0u64;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if index > 0 {
                check_later_chunk(index, &c)?;
            }
            if index >= MAX_CHUNKS {
                return Err(invalid(format!(
                    "more than {MAX_CHUNKS} chunks in one upload"
                )));
            }
            total = total.saturating_add(c.data.len() as u64);
            if total > MAX_CHECKPOINT_BYTES {
                return Err(invalid(format!(
                    "checkpoint larger than {MAX_CHECKPOINT_BYTES} bytes"
                )));
            }
            hasher.update(&c.data);
            file.write_all(&c.data)
                .await
                .map_err(|e| Status::internal(format!("writing checkpoint: {e}")))?;
            index += 1;
            chunk = stream.message().await?;
        }
        if total == 0 {
            return Err(invalid("the checkpoint is empty (0 bytes)"));
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
    .await?;
    temp.keep();
    Ok((header, final_path, total))
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
