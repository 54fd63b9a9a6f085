//! The model files a sweep file names (`torchscript = "…"`, `weights = "…"` in a
//! `[models.NAME]` table), by content.
//!
//! A path in a sweep file means something only on the machine that has the file: the client
//! resolves it (relative to the sweep file), hashes it ([`hash_local`]) and uploads it; what
//! travels with the sweep is the map from the path as written to the file's SHA-256 and size
//! ([`ModelFiles`], `SubmitSweepRequest.model_files`), and expansion puts the hash in the model,
//! hence in the run's id: the same file is never trained or evaluated twice, a changed file is
//! a new run.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use advsweep_core::ModelFormat;
use advsweep_core::limits::MAX_MODEL_FILE_BYTES;
use sha2::{Digest, Sha256};

use super::SweepError;
use super::file::SweepFile;

/// A model file by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    pub bytes: u64,
}

/// The model files of a sweep, by the path as the sweep file writes it.
pub type ModelFiles = BTreeMap<String, FileRef>;

/// One file a preset names: the preset, the key (`torchscript`, `weights`), the path as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    pub preset: String,
    pub format: ModelFormat,
    pub written: String,
}

/// Every model file the file's `[models.*]` tables name (used by the grid or not: every preset
/// is validated), in table order.
pub fn named_files(file: &SweepFile) -> Vec<NamedFile> {
    let mut named = Vec::new();
    for (preset, m) in &file.models {
        for (format, path) in [
            (ModelFormat::TorchScript, &m.torchscript),
            (ModelFormat::Safetensors, &m.weights),
        ] {
            if let Some(written) = path {
                named.push(NamedFile {
                    preset: preset.clone(),
                    format,
                    written: written.clone(),
                });
            }
        }
    }
    named
}

/// A model file on this machine, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelFile {
    /// The path as the sweep file writes it.
    pub written: String,
    /// Where it is (relative paths taken from the sweep file's folder).
    pub path: PathBuf,
    pub file: FileRef,
}

/// Resolves (relative to `base`, the sweep file's folder), reads and hashes every model file
/// the sweep file names; a missing, unreadable or oversized file is an error naming its preset,
/// key and both paths. Each distinct path is read once.
pub fn hash_local(
    file: &SweepFile,
    base: &Path,
    origin: &str,
) -> Result<Vec<LocalModelFile>, SweepError> {
    let mut out: Vec<LocalModelFile> = Vec::new();
    for named in named_files(file) {
        if out.iter().any(|l| l.written == named.written) {
            continue;
        }
        let path = base.join(&named.written);
        let fail = |why: String| SweepError::Invalid {
            origin: origin.to_owned(),
            message: format!(
                "model `{}`: {} file `{}` ({}): {why}",
                named.preset,
                named.format.key(),
                named.written,
                path.display()
            ),
        };
        let file = hash_file(&path).map_err(fail)?;
        out.push(LocalModelFile {
            written: named.written,
            path,
            file,
        });
    }
    Ok(out)
}

/// The SHA-256 and size of the regular file at `path` (at most [`MAX_MODEL_FILE_BYTES`]).
pub fn hash_file(path: &Path) -> Result<FileRef, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("the file is empty".into());
    }
    if meta.len() > MAX_MODEL_FILE_BYTES {
        return Err(format!(
            "{} bytes, more than the limit of {MAX_MODEL_FILE_BYTES}",
            meta.len()
        ));
    }
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileRef {
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        bytes,
    })
}

/// Placeholder [`ModelFiles`] for every file `file` names (the SHA-256 of the path as written,
/// one byte): for checking a sweep file's grid where its model files are not (tests of the
/// shipped sweep files); the run ids are not the real ones.
pub fn stand_ins(file: &SweepFile) -> ModelFiles {
    named_files(file)
        .into_iter()
        .map(|n| {
            let sha256 = Sha256::digest(n.written.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (n.written, FileRef { sha256, bytes: 1 })
        })
        .collect()
}

/// The [`ModelFiles`] of local files.
pub fn refs(local: &[LocalModelFile]) -> ModelFiles {
    local
        .iter()
        .map(|l| (l.written.clone(), l.file.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_beside_the_sweep_file_and_hashed_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("m.pt"), b"abc").expect("written");
        let file = crate::sweep::parse_sweep(
            r#"
version = 1
name = "own"
[data]
source = "synthetic"
[grid]
models = ["a", "b"]
defenses = ["none"]
attacks = ["none"]
epsilons = [0.0]
[models.a]
torchscript = "m.pt"
[models.b]
torchscript = "m.pt"
normalize = { mean = [0.5], std = [0.5] }
"#,
            "own.toml",
        )
        .expect("parses");
        let local = hash_local(&file, dir.path(), "own.toml").expect("hashed");
        assert_eq!(local.len(), 1, "one path, read once");
        assert_eq!(
            local[0].file.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(local[0].file.bytes, 3);

        std::fs::remove_file(dir.path().join("m.pt")).expect("removed");
        let e = hash_local(&file, dir.path(), "own.toml").expect_err("missing");
        let text = e.to_string();
        assert!(
            text.contains("model `a`: torchscript file `m.pt`") && text.contains("m.pt)"),
            "{text}"
        );
    }
}
