//! Model files to the coordinator: before a sweep is submitted, every file it names
//! (`torchscript = …`, `weights = …`, found beside the sweep file and hashed by
//! `sweep::load_plan`) is streamed with `UploadModelFile` in 1 MiB chunks, read from disk as
//! the stream goes (a 150 MB WideResNet never sits in memory whole). The coordinator skips a
//! file it already has (same SHA-256) after the first chunk.

use std::io::Read as _;

use advsweep_coordinator::sweep::model_files::LocalModelFile;
use advsweep_proto::v1 as pb;

use super::connection::{Client, rpc_error};

const CHUNK_BYTES: usize = 1 << 20;

/// Uploads each of `files`; says on stderr what was sent and what the coordinator had.
pub async fn upload_model_files(
    client: &mut Client,
    files: &[LocalModelFile],
) -> anyhow::Result<()> {
    for local in files {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ModelFileChunk>(4);
        let path = local.path.clone();
        let file = local.file.clone();
        // Reads on a blocking thread; stops when the call ends (the receiver is dropped).
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            let mut first = true;
            loop {
                let mut data = vec![0u8; CHUNK_BYTES];
                let mut filled = 0;
                while filled < CHUNK_BYTES {
                    let n = f.read(&mut data[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                data.truncate(filled);
                if filled == 0 && !first {
                    return Ok(());
                }
                let chunk = pb::ModelFileChunk {
                    sha256: if first {
                        file.sha256.clone()
                    } else {
                        String::new()
                    },
                    bytes: if first { file.bytes } else { 0 },
                    data,
                };
                first = false;
                if tx.blocking_send(chunk).is_err() || filled < CHUNK_BYTES {
                    return Ok(());
                }
            }
        });
        let ack = client
            .upload_model_file(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| rpc_error("UploadModelFile", s));
        let read = reader.await;
        let ack = ack
            .map_err(|e| e.context(format!("uploading model file `{}`", local.written)))?
            .into_inner();
        if let Ok(Err(e)) = read {
            anyhow::bail!("reading model file {}: {e}", local.path.display());
        }
        errln!(
            "advsweep: model file `{}` ({:.1} MB, sha256 {}…) {}",
            local.written,
            local.file.bytes as f64 / 1e6,
            &ack.sha256[..12.min(ack.sha256.len())],
            if ack.already_stored {
                "already on the coordinator"
            } else {
                "uploaded"
            }
        );
    }
    Ok(())
}
