//! Model files over the wire: a client uploads the files its sweep names (`UploadModelFile`),
//! workers download the file of a run they lease (`DownloadModelFile`).
//!
//! A file is stored once, under its SHA-256 (`<state-dir>/models/<sha256>`, [`Artifacts`]):
//! the first chunk declares the hash and the size, which are checked before anything is
//! written (a hash the coordinator has is acknowledged at once, the rest of the stream
//! unread); the bytes go to a temporary file while hashed, bounded by the declared size and
//! the coordinator's `max_model_file_bytes`, and are renamed into place only when hash and
//! size match. Downloads re-verify the stored file first, so a damaged copy is reported
//! (`DATA_LOSS`) rather than handed to a worker.

use std::sync::Arc;

use advsweep_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

use super::checkpoints::{MAX_CHUNK_BYTES, MAX_CHUNKS, OnCorrupt, stream_file, verify};
use super::validate::{invalid, require_sha256};
use crate::artifacts::{Artifacts, TempUpload};
use crate::metrics::Metrics;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the file with this hash and size is stored.
pub async fn stored(artifacts: &Artifacts, sha256: &str, bytes: u64) -> bool {
    tokio::fs::metadata(artifacts.model_file(sha256))
        .await
        .is_ok_and(|m| m.is_file() && m.len() == bytes)
}

/// Receives an upload into `artifacts`' model store, at most `max_bytes`.
pub async fn receive(
    artifacts: &Artifacts,
    mut stream: Streaming<pb::ModelFileChunk>,
    max_bytes: u64,
) -> Result<pb::ModelFileAck, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| invalid("empty model file upload"))?;
    let sha256 = require_sha256("sha256", &first.sha256)?;
    let declared = first.bytes;
    if declared == 0 || declared > max_bytes {
        return Err(invalid(format!(
            "field `bytes` = {declared}: a model file must be 1..={max_bytes} bytes \
             (the coordinator's max_model_file_bytes)"
        )));
    }
    if stored(artifacts, &sha256, declared).await {
        return Ok(pb::ModelFileAck {
            sha256,
            bytes: declared,
            already_stored: true,
        });
    }
    let dir = artifacts.models_dir().to_owned();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    // Removed on every way out, the handler being dropped mid-stream included.
    let temp = TempUpload::new(&dir, &crate::store::random_id(""));
    let mut file = tokio::fs::File::create(temp.path())
        .await
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", temp.path().display())))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut index = 0u64;
    let mut chunk = Some(first);
    while let Some(c) = chunk {
        if index > 0 && (!c.sha256.is_empty() || c.bytes != 0) {
            return Err(invalid(format!(
                "chunk {index}: fields `sha256` and `bytes` belong on the first chunk only"
            )));
        }
        if c.data.len() > MAX_CHUNK_BYTES || index >= MAX_CHUNKS {
            return Err(invalid(format!(
                "chunk {index}: more than {MAX_CHUNK_BYTES} bytes, or more than {MAX_CHUNKS} chunks"
            )));
        }
        total = total.saturating_add(c.data.len() as u64);
        if total > declared {
            return Err(invalid(format!(
                "the upload is longer than its declared {declared} bytes"
            )));
        }
        hasher.update(&c.data);
        file.write_all(&c.data)
            .await
            .map_err(|e| Status::internal(format!("writing model file: {e}")))?;
        index += 1;
        chunk = stream.message().await?;
    }
    let actual = hex(&hasher.finalize());
    if total != declared || actual != sha256 {
        return Err(Status::data_loss(format!(
            "model file arrived as {total} bytes with SHA-256 {actual}; declared {declared} bytes, \
             {sha256}: not stored"
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| Status::internal(format!("syncing model file: {e}")))?;
    let path = artifacts.model_file(&sha256);
    tokio::fs::rename(temp.path(), &path)
        .await
        .map_err(|e| Status::internal(format!("storing model file: {e}")))?;
    temp.keep();
    Ok(pb::ModelFileAck {
        sha256,
        bytes: total,
        already_stored: false,
    })
}

/// The stream of a stored, re-verified model file; `NOT_FOUND` when there is none.
pub async fn send(
    artifacts: &Artifacts,
    sha256: &str,
    slot: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
) -> Result<super::checkpoints::ChunkStreamOf<pb::ModelFileChunk>, Status> {
    let path = artifacts.model_file(sha256);
    let bytes = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m.len(),
        _ => {
            return Err(Status::not_found(format!(
                "the coordinator has no model file {sha256} (the client that submitted the sweep \
                 uploads it)"
            )));
        }
    };
    verify(&path, sha256).await?;
    let declared = sha256.to_owned();
    let on_corrupt: OnCorrupt = Box::new(|| Box::pin(async {}));
    Ok(stream_file(
        path,
        sha256.to_owned(),
        slot,
        metrics,
        on_corrupt,
        move |first, data| pb::ModelFileChunk {
            sha256: if first {
                declared.clone()
            } else {
                String::new()
            },
            bytes: if first { bytes } else { 0 },
            data,
        },
    ))
}
