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
use std::sync::Arc;
use std::sync::atomic::Ordering;

use advsweep_core::wire::MAX_EPOCHS;
use advsweep_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::validate::{invalid, lease_ref, require_sha256};
use crate::artifacts::TempUpload;
use crate::metrics::Metrics;
use crate::store::LeaseRef;

/// Largest checkpoint accepted (WideResNet-28-10 with optimizer state is ~300 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;
/// Chunk size for downloads.
pub const CHUNK_BYTES: usize = 1 << 20;

pub type ChunkStream = ChunkStreamOf<pb::CheckpointChunk>;
/// A download's stream of chunk messages `T`.
pub type ChunkStreamOf<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

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

/// Downloads in flight at once by default (`max_checkpoint_downloads`).
pub const DEFAULT_MAX_DOWNLOADS: usize = 32;
/// Chunks a download's reader task may hold beyond what the client has taken: with the one it
/// is sending, a download pins at most `READ_AHEAD_CHUNKS + 1` chunks of the coordinator's
/// memory (plus the HTTP/2 flow-control window the client granted), however slowly it reads.
pub const READ_AHEAD_CHUNKS: usize = 2;
/// A download whose client takes no chunk for this long is ended (and its slot freed): a
/// caller that opens downloads and never reads cannot keep the slots forever.
pub const DOWNLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// The cap on concurrent downloads and what they have read: shared by every download of one
/// service.
#[derive(Debug)]
pub struct Downloads {
    slots: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl Downloads {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Downloads {
        let limit = limit.max(1);
        Downloads {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
        }
    }

    /// A slot for one download, or `RESOURCE_EXHAUSTED` (a worker retries it) when all are taken.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            self.metrics
                .checkpoint_downloads_refused
                .fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted(format!(
                "{} checkpoint downloads are in flight (max_checkpoint_downloads); retry shortly",
                self.limit
            ))
        })
    }
}

async fn read_chunk(file: &mut tokio::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    let mut taken = (&mut *file).take(CHUNK_BYTES as u64);
    taken.read_to_end(buf).await
}

/// Verifies a stored checkpoint against its SHA-256, reading it a chunk at a time (memory stays
/// one chunk whatever the file's size); `Err(DataLoss)` when its bytes no longer match.
pub async fn verify(path: &Path, sha256: &str) -> Result<(), Status> {
    let unreadable = |e: std::io::Error| {
        Status::data_loss(format!("checkpoint {} unreadable: {e}", path.display()))
    };
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    while read_chunk(&mut file, &mut buf).await.map_err(unreadable)? > 0 {
        hasher.update(&buf);
    }
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        return Err(Status::data_loss(format!(
            "checkpoint {} is corrupt: SHA-256 {actual}, stored {sha256}",
            path.display()
        )));
    }
    Ok(())
}

/// What a download stream reports when its file turns out corrupt mid-stream (it changed after
/// [`verify`]): the caller drops the record so the run resumes from an earlier checkpoint.
pub type OnCorrupt =
    Box<dyn FnOnce() -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// Streams a verified checkpoint from disk in [`CHUNK_BYTES`] chunks: a reader task feeds a
/// channel of [`READ_AHEAD_CHUNKS`], so a client that reads slowly (or not at all) holds at most
/// that much of the file in memory. The bytes are hashed again as they go; a mismatch at the
/// end (the file changed since [`verify`]) ends the stream with `DATA_LOSS` and calls
/// `on_corrupt`. The download's `slot` is held by the returned stream and freed when the client
/// goes away or the stream ends.
pub fn stream(
    path: PathBuf,
    epoch: u32,
    sha256: String,
    slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    on_corrupt: OnCorrupt,
) -> ChunkStream {
    let declared = sha256.clone();
    stream_file(
        path,
        sha256,
        slot,
        metrics,
        on_corrupt,
        move |first, data| pb::CheckpointChunk {
            lease: None,
            epoch: if first { epoch } else { 0 },
            sha256: if first {
                declared.clone()
            } else {
                String::new()
            },
            data,
        },
    )
}

/// [`stream`] for any file and chunk message: `make_chunk(first, data)` builds each message
/// (the first carries the header).
pub fn stream_file<T: Send + 'static>(
    path: PathBuf,
    sha256: String,
    slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    on_corrupt: OnCorrupt,
    make_chunk: impl Fn(bool, Vec<u8>) -> T + Send + 'static,
) -> ChunkStreamOf<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
    tokio::spawn(async move {
        let send = |item| async {
            // Blocks while the channel is full: the client has not taken the chunks before.
            matches!(
                tokio::time::timeout(DOWNLOAD_STALL, tx.send(item)).await,
                Ok(Ok(()))
            )
        };
        let failed = |e: std::io::Error| {
            Status::data_loss(format!("file {} unreadable: {e}", path.display()))
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) => {
                send(Err(failed(e))).await;
                return;
            }
        };
        let mut hasher = Sha256::new();
        let mut first = true;
        loop {
            let mut data = Vec::with_capacity(CHUNK_BYTES);
            match read_chunk(&mut file, &mut data).await {
                Ok(0) if !first => break,
                Ok(n) => {
                    metrics
                        .checkpoint_bytes_streamed
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    send(Err(failed(e))).await;
                    return;
                }
            }
            hasher.update(&data);
            let empty = data.is_empty();
            let chunk = make_chunk(first, data);
            first = false;
            if !send(Ok(chunk)).await {
                return; // the client went away, or stalled past DOWNLOAD_STALL
            }
            if empty {
                break;
            }
        }
        let actual = hex(&hasher.finalize());
        if actual != sha256 {
            on_corrupt().await;
            send(Err(Status::data_loss(format!(
                "file {} changed while it was sent: SHA-256 {actual}, stored {sha256}",
                path.display()
            ))))
            .await;
        }
    });
    Box::pin(Download {
        chunks: ReceiverStream::new(rx),
        _slot: slot,
    })
}

/// A download's chunks and the slot it occupies (freed when the stream is dropped).
struct Download<T> {
    chunks: ReceiverStream<Result<T, Status>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> Stream for Download<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.chunks).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    fn write_file(dir: &Path, bytes: &[u8]) -> (PathBuf, String) {
        let path = dir.join("epoch-00001.ckpt");
        std::fs::write(&path, bytes).expect("writes");
        (path, hex(&Sha256::digest(bytes)))
    }

    fn no_drop() -> OnCorrupt {
        Box::new(|| Box::pin(async {}))
    }

    /// A download nobody reads holds at most `READ_AHEAD_CHUNKS + 1` chunks read from disk,
    /// whatever the file's size; read to the end, it delivers the file intact.
    #[tokio::test]
    async fn an_unread_download_reads_only_a_few_chunks_ahead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes: Vec<u8> = (0..24 * CHUNK_BYTES + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let (path, sha) = write_file(dir.path(), &bytes);
        verify(&path, &sha).await.expect("intact");
        let metrics = Arc::new(Metrics::default());
        let downloads = Downloads::new(4, Arc::clone(&metrics));
        let slot = downloads.slot().expect("a free slot");
        let mut s = stream(path, 1, sha.clone(), slot, Arc::clone(&metrics), no_drop());
        let ahead = (READ_AHEAD_CHUNKS + 1) * CHUNK_BYTES;
        let streamed = || metrics.checkpoint_bytes_streamed.load(Ordering::Relaxed) as usize;
        // The reader fills the channel and then waits: it reaches the bound and stops there.
        let start = std::time::Instant::now();
        while streamed() < ahead && start.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            streamed(),
            ahead,
            "read {} bytes ahead of an idle client",
            streamed()
        );

        let mut got = Vec::new();
        let mut first = true;
        while let Some(chunk) = s.next().await {
            let chunk = chunk.expect("a chunk");
            if first {
                assert_eq!((chunk.epoch, chunk.sha256.as_str()), (1, sha.as_str()));
                first = false;
            }
            got.extend_from_slice(&chunk.data);
        }
        assert!(got == bytes, "the file arrives intact");
    }

    #[tokio::test]
    async fn the_slot_after_the_last_is_refused_until_one_is_freed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, sha) = write_file(dir.path(), b"weights");
        let metrics = Arc::new(Metrics::default());
        let downloads = Downloads::new(3, Arc::clone(&metrics));
        let mut held: Vec<_> = (0..3)
            .map(|_| {
                let slot = downloads.slot().expect("a free slot");
                stream(
                    path.clone(),
                    1,
                    sha.clone(),
                    slot,
                    Arc::clone(&metrics),
                    no_drop(),
                )
            })
            .collect();
        let refused = downloads.slot().expect_err("all slots taken");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(advsweep_proto::is_transient(&refused), "workers retry it");
        assert_eq!(
            metrics.checkpoint_downloads_refused.load(Ordering::Relaxed),
            1
        );
        held.pop();
        let _freed = downloads.slot().expect("a dropped download frees its slot");
    }

    #[tokio::test]
    async fn a_file_changed_after_verification_ends_in_data_loss_and_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, sha) = write_file(dir.path(), &vec![7u8; 3 * CHUNK_BYTES]);
        verify(&path, &sha).await.expect("intact");
        std::fs::write(&path, vec![8u8; 3 * CHUNK_BYTES]).expect("corrupts");
        assert_eq!(
            verify(&path, &sha).await.expect_err("corrupt").code(),
            tonic::Code::DataLoss
        );
        let metrics = Arc::new(Metrics::default());
        let slot = Downloads::new(1, Arc::clone(&metrics))
            .slot()
            .expect("slot");
        let (told_tx, told_rx) = tokio::sync::oneshot::channel();
        let on_corrupt: OnCorrupt = Box::new(move || {
            Box::pin(async move {
                let _ = told_tx.send(());
            })
        });
        let items: Vec<_> = stream(path, 1, sha, slot, metrics, on_corrupt)
            .collect()
            .await;
        let last = items
            .last()
            .expect("items")
            .as_ref()
            .expect_err("ends in an error");
        assert_eq!(last.code(), tonic::Code::DataLoss, "{last}");
        told_rx.await.expect("the corrupt record is dropped");
    }
}
