//! The worker's cache of model files (a researcher's TorchScript modules and weights), one file
//! per SHA-256 under one directory, so a file is downloaded once per worker machine however
//! many runs and slots use it. A file enters the cache only whole and verified: it is written
//! to a temporary name while hashed and renamed into place when its hash and size match
//! ([`ModelFileCache::admit`]); a file in place is trusted by name and size.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use advsweep_core::ModelFile;
use sha2::{Digest, Sha256};

use crate::error::Permanent;

/// Where the worker keeps model files.
#[derive(Debug, Clone)]
pub struct ModelFileCache {
    root: PathBuf,
}

impl ModelFileCache {
    pub fn new(root: impl Into<PathBuf>) -> ModelFileCache {
        ModelFileCache { root: root.into() }
    }

    /// `$XDG_CACHE_HOME/advsweep/models`, else `~/.cache/advsweep/models`, else a folder in
    /// the system's temporary directory.
    pub fn default_root() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("advsweep").join("models")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `file` lives once cached (its SHA-256 is a checked hex string: no path tricks).
    pub fn path(&self, file: &ModelFile) -> PathBuf {
        self.root.join(&file.sha256)
    }

    /// Whether `file` is in the cache (by name and size).
    pub fn has(&self, file: &ModelFile) -> bool {
        std::fs::metadata(self.path(file)).is_ok_and(|m| m.is_file() && m.len() == file.bytes)
    }

    /// A writer for `file`'s bytes; [`Admission::finish`] verifies and puts them in place.
    pub fn admit(&self, file: &ModelFile) -> anyhow::Result<Admission> {
        std::fs::create_dir_all(&self.root).map_err(|e| {
            anyhow::anyhow!("cannot create the model cache {}: {e}", self.root.display())
        })?;
        let temp = tempfile::NamedTempFile::new_in(&self.root).map_err(|e| {
            anyhow::anyhow!(
                "cannot write in the model cache {}: {e}",
                self.root.display()
            )
        })?;
        Ok(Admission {
            temp,
            hasher: Sha256::new(),
            written: 0,
            file: file.clone(),
            target: self.path(file),
        })
    }
}

/// A model file being written into the cache.
pub struct Admission {
    temp: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    file: ModelFile,
    target: PathBuf,
}

impl Admission {
    /// Appends `data`; refuses more bytes than the file declared.
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.written += data.len() as u64;
        if self.written > self.file.bytes {
            return Err(Permanent(format!(
                "model file {} is longer than its declared {} bytes",
                self.file.sha256, self.file.bytes
            ))
            .into());
        }
        self.hasher.update(data);
        self.temp.write_all(data)?;
        Ok(())
    }

    /// Checks size and SHA-256, then renames the file into place.
    pub fn finish(self) -> anyhow::Result<PathBuf> {
        let actual: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if self.written != self.file.bytes || actual != self.file.sha256 {
            return Err(Permanent(format!(
                "model file {} arrived as {} bytes with SHA-256 {actual}, expected {} bytes: \
                 not stored",
                self.file.sha256, self.written, self.file.bytes
            ))
            .into());
        }
        self.temp.as_file().sync_all()?;
        self.temp
            .persist(&self.target)
            .map_err(|e| anyhow::anyhow!("storing {}: {}", self.target.display(), e.error))?;
        Ok(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advsweep_core::ModelFormat;

    fn file(bytes: &[u8]) -> ModelFile {
        ModelFile {
            format: ModelFormat::TorchScript,
            sha256: Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            bytes: bytes.len() as u64,
            normalize: None,
        }
    }

    #[test]
    fn only_whole_verified_files_enter_the_cache() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = ModelFileCache::new(dir.path().join("models"));
        let good = file(b"a module");
        assert!(!cache.has(&good));
        let mut a = cache.admit(&good)?;
        a.write(b"a mod")?;
        a.write(b"ule")?;
        assert_eq!(a.finish()?, cache.path(&good));
        assert!(cache.has(&good));

        let mut damaged = cache.admit(&file(b"another module"))?;
        damaged.write(b"another m0dule")?;
        let e = damaged.finish().expect_err("hash mismatch");
        assert!(
            !crate::error::is_retryable(&e) && e.to_string().contains("SHA-256"),
            "{e}"
        );
        assert!(!cache.has(&file(b"another module")));

        let mut long = cache.admit(&good)?;
        assert!(long.write(b"a module and more").is_err());
        drop(long);
        // Nothing but the one good file is left (temporary files are removed).
        assert_eq!(std::fs::read_dir(cache.root())?.count(), 1);
        Ok(())
    }
}
