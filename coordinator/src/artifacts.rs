//! Checkpoint bytes on disk, beside the SQLite state that records them: where they live
//! (`<state-dir>/artifacts/<run_id>/`, a [`RunId`] being a checked content id), how an upload is
//! written (a temporary file, renamed into place once verified), and what is cleaned up.
//!
//! An upload's handler can stop between any two awaits — the client hangs up or its deadline
//! passes mid-stream, and tonic drops the future — so its temporary file is removed by a drop
//! guard ([`TempUpload`]) rather than by code after the await that never runs. A coordinator
//! killed mid-upload leaves its temporary file behind; [`Artifacts::sweep_stale_uploads`]
//! removes those at start-up.

use std::path::{Path, PathBuf};

use advsweep_core::RunId;

/// Temporary upload files start with this (dot files: never mistaken for a checkpoint).
pub const UPLOAD_PREFIX: &str = ".upload-";

/// The artifact directories of one state directory: checkpoints by run, model files by hash.
#[derive(Debug, Clone)]
pub struct Artifacts {
    root: PathBuf,
    models: PathBuf,
}

impl Artifacts {
    pub fn new(state_dir: &Path) -> Artifacts {
        Artifacts {
            root: state_dir.join("artifacts"),
            models: state_dir.join("models"),
        }
    }

    /// Where model files live: `<state-dir>/models/<sha256>`.
    pub fn models_dir(&self) -> &Path {
        &self.models
    }

    /// Where the model file with SHA-256 `sha256` (a checked hex string) lives.
    pub fn model_file(&self, sha256: &str) -> PathBuf {
        self.models.join(sha256)
    }

    /// Where the checkpoint files of `run_id` live.
    pub fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.root.join(run_id.as_str())
    }

    /// Removes the temporary files of uploads that never finished (a coordinator killed
    /// mid-upload); returns how many. Checkpoints themselves are left alone. Call it at
    /// start-up, before any upload can be in flight.
    pub fn sweep_stale_uploads(&self) -> std::io::Result<usize> {
        let runs = match std::fs::read_dir(&self.root) {
            Ok(runs) => runs,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return remove_uploads(&self.models);
            }
            Err(e) => return Err(e),
        };
        let mut removed = remove_uploads(&self.models)?;
        for run in runs {
            let run = run?;
            if run.file_type()?.is_dir() {
                removed += remove_uploads(&run.path())?;
            }
        }
        Ok(removed)
    }
}

/// Removes the temporary upload files directly in `dir` (none if it does not exist).
fn remove_uploads(dir: &Path) -> std::io::Result<usize> {
    let files = match std::fs::read_dir(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for file in files {
        let file = file?;
        if file
            .file_name()
            .to_string_lossy()
            .starts_with(UPLOAD_PREFIX)
            && file.file_type()?.is_file()
        {
            std::fs::remove_file(file.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The temporary file of one upload in `dir`: removed when dropped, unless [`keep`]
/// (`TempUpload::keep`) was called after it was renamed into place.
#[derive(Debug)]
pub struct TempUpload {
    path: PathBuf,
    kept: bool,
}

impl TempUpload {
    /// A fresh, unique name in `dir` (nothing is created yet).
    pub fn new(dir: &Path, unique: &str) -> TempUpload {
        TempUpload {
            path: dir.join(format!("{UPLOAD_PREFIX}{unique}")),
            kept: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed into place: nothing to remove.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.kept {
            // Synchronous on purpose: a drop cannot await, and unlinking one file is quick.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_upload_leaves_no_file_and_a_kept_one_stays() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let dropped = TempUpload::new(dir.path(), "a");
        std::fs::write(dropped.path(), b"partial")?;
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists());

        let kept = TempUpload::new(dir.path(), "b");
        std::fs::write(kept.path(), b"whole")?;
        let final_path = dir.path().join("epoch-00001.ckpt");
        std::fs::rename(kept.path(), &final_path)?;
        kept.keep();
        assert!(final_path.exists());
        Ok(())
    }

    #[test]
    fn the_start_up_sweep_removes_only_unfinished_uploads() -> std::io::Result<()> {
        let state = tempfile::tempdir()?;
        let artifacts = Artifacts::new(state.path());
        assert_eq!(artifacts.sweep_stale_uploads()?, 0, "no artifacts yet");
        let run = artifacts.run_dir(&RunId::new("r-0123456789abcdef").expect("a run id"));
        std::fs::create_dir_all(&run)?;
        std::fs::write(run.join(".upload-x1"), b"partial")?;
        std::fs::write(run.join(".upload-x2"), b"partial")?;
        std::fs::write(run.join("epoch-00001-0123456789abcdef.ckpt"), b"whole")?;
        assert_eq!(artifacts.sweep_stale_uploads()?, 2);
        let left: Vec<_> = std::fs::read_dir(&run)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(left, ["epoch-00001-0123456789abcdef.ckpt"]);
        Ok(())
    }
}
