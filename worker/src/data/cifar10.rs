//! The official CIFAR-10 binary layout (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each exactly 10 000 records
//! of 3 073 bytes: one label byte (0–9), then 1 024 red, 1 024 green and 1 024 blue bytes, each
//! plane row-major. That is already NCHW, so records are copied as they are.
//!
//! Sizes are checked exactly: a truncated download is far more common than a legitimately
//! different file, and silently training on part of it would corrupt a sweep's results.
//! Only as many training files as `train_limit` needs are read.

use std::path::{Path, PathBuf};

use super::{DataError, HostSplit, IMAGE_BYTES, apply_limit};

pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const RECORDS_PER_FILE: usize = 10_000;
pub const FILE_BYTES: u64 = (RECORD_BYTES * RECORDS_PER_FILE) as u64;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
/// The directory name inside the official archive.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// The directory holding the `.bin` files: `path` itself, or `path/cifar-10-batches-bin`.
pub fn resolve_dir(path: &Path) -> Result<PathBuf, DataError> {
    resolve_archive_dir(path, &[TRAIN_FILES[0], TEST_FILE], ARCHIVE_DIR)
}

/// `path` when it holds one of `files`, else `path/archive_dir` when that is a directory (the
/// official archive unpacked inside it), else `path` (so that the error names the first file
/// it lacks).
pub(super) fn resolve_archive_dir(
    path: &Path,
    files: &[&str],
    archive_dir: &str,
) -> Result<PathBuf, DataError> {
    if !path.is_dir() {
        return Err(DataError::not_a_dir(path));
    }
    let nested = path.join(archive_dir);
    if !files.iter().any(|f| path.join(f).exists()) && nested.is_dir() {
        return Ok(nested);
    }
    Ok(path.to_path_buf())
}

/// Loads `train_limit` training and `eval_limit` test images (0 = all).
pub fn load(
    path: &Path,
    train_limit: u32,
    eval_limit: u32,
) -> Result<(HostSplit, HostSplit), DataError> {
    let dir = resolve_dir(path)?;
    let train_wanted = apply_limit(TRAIN_FILES.len() * RECORDS_PER_FILE, train_limit);
    let mut train = HostSplit::default();
    for name in TRAIN_FILES {
        let remaining = train_wanted - train.len();
        if remaining == 0 {
            break;
        }
        read_file(&dir.join(name), remaining, &mut train)?;
    }
    let mut test = HostSplit::default();
    read_file(
        &dir.join(TEST_FILE),
        apply_limit(RECORDS_PER_FILE, eval_limit),
        &mut test,
    )?;
    Ok((train, test))
}

/// Appends the first `take` records of one batch file to `out`.
fn read_file(path: &Path, take: usize, out: &mut HostSplit) -> Result<(), DataError> {
    read_records(
        path,
        RecordLayout {
            labels_before: 0,
            records: RECORDS_PER_FILE,
            classes: 10,
        },
        take,
        out,
    )
}

/// How the records of a CIFAR binary file are laid out: label bytes, then 3 072 pixel bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordLayout {
    /// Label bytes before the one used (CIFAR-100's coarse label comes before its fine one).
    pub labels_before: usize,
    /// Records in the file (its size is checked exactly).
    pub records: usize,
    pub classes: u8,
}

impl RecordLayout {
    fn record_bytes(self) -> usize {
        self.labels_before + 1 + IMAGE_BYTES
    }

    pub(super) fn file_bytes(self) -> u64 {
        (self.record_bytes() * self.records) as u64
    }
}

/// Appends the first `take` records of the file at `path`, laid out as `layout` says, to `out`.
pub(super) fn read_records(
    path: &Path,
    layout: RecordLayout,
    take: usize,
    out: &mut HostSplit,
) -> Result<(), DataError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::FileMissing {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let expected = layout.file_bytes();
    let found = std::fs::metadata(path).map_err(io)?.len();
    if found != expected {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.len() as u64 != expected {
        // The file changed between stat and read.
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected,
            found: bytes.len() as u64,
        });
    }
    let take = take.min(layout.records);
    out.images.reserve(take * IMAGE_BYTES);
    out.labels.reserve(take);
    for (record, chunk) in bytes
        .chunks_exact(layout.record_bytes())
        .take(take)
        .enumerate()
    {
        let (labels, pixels) = chunk.split_at(layout.labels_before + 1);
        let label = labels[layout.labels_before];
        if label >= layout.classes {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
                classes: layout.classes,
            });
        }
        out.labels.push(i64::from(label));
        out.images.extend_from_slice(pixels);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use tch::Device;

    /// A full-size batch file whose record `i` has label `i % 10` and pixel bytes
    /// `R = (i + salt) % 251`, `G = 100`, `B = 200 + p % 7` with `p` the index in the plane.
    fn fabricate(path: &Path, salt: usize) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(FILE_BYTES as usize);
        for i in 0..RECORDS_PER_FILE {
            bytes.push((i % 10) as u8);
            bytes.extend(std::iter::repeat_n(((i + salt) % 251) as u8, 1024));
            bytes.extend(std::iter::repeat_n(100u8, 1024));
            bytes.extend((0..1024).map(|p| 200 + (p % 7) as u8));
        }
        std::fs::write(path, bytes)
    }

    #[test]
    fn reads_the_official_layout() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join(ARCHIVE_DIR);
        std::fs::create_dir(&dir)?;
        fabricate(&dir.join("data_batch_1.bin"), 0)?;
        fabricate(&dir.join(TEST_FILE), 7)?;

        // The parent works as well as the directory itself; only data_batch_1 is needed.
        let (train, test) = load(root.path(), 25, 12)?;
        assert_eq!(train.len(), 25);
        assert_eq!(test.len(), 12);
        assert_eq!(train.labels[13], 3);
        let image = |split: &HostSplit, i: usize| {
            split.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES].to_vec()
        };
        let img = image(&train, 13);
        assert!(img[..1024].iter().all(|&v| v == 13), "red plane first");
        assert!(img[1024..2048].iter().all(|&v| v == 100), "then green");
        assert_eq!(img[2048 + 9], 202, "then blue, row-major");
        assert_eq!(image(&test, 4)[0], 11);

        // As tensors: pixel (c=2, y=0, x=9) of training image 13.
        let ds = Dataset::from_host(train, test, "fixture".into(), Device::Cpu)?;
        assert_eq!(ds.train_x.size(), vec![25, 3, 32, 32]);
        assert_eq!(
            i64::try_from(ds.train_x.f_get(13)?.f_get(2)?.f_get(0)?.f_get(9)?)?,
            202
        );
        assert_eq!(
            i64::try_from(ds.train_x.f_get(13)?.f_get(0)?.f_get(31)?.f_get(31)?)?,
            13
        );
        assert_eq!(i64::try_from(ds.train_y.f_get(13)?)?, 3);

        let (direct, _) = load(&dir, 3, 1)?;
        assert_eq!(direct.labels, vec![0, 1, 2]);
        Ok(())
    }

    #[test]
    fn names_the_missing_file_and_wrong_sizes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fabricate(&dir.path().join("data_batch_1.bin"), 0)?;
        fabricate(&dir.path().join(TEST_FILE), 0)?;

        // 15 000 training images need data_batch_2.bin.
        let err = load(dir.path(), 15_000, 10).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("data_batch_2.bin"), "{err}");
        assert!(err.contains("missing"), "{err}");

        // A truncated test file.
        let test = dir.path().join(TEST_FILE);
        let bytes = std::fs::read(&test)?;
        std::fs::write(&test, &bytes[..1000])?;
        let err = load(dir.path(), 10, 10).err();
        assert!(matches!(
            err,
            Some(DataError::WrongSize { found: 1000, .. })
        ));
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("test_batch.bin"), "{err}");
        assert!(err.contains("expected 30730000 bytes, found 1000"), "{err}");

        let err = load(&dir.path().join("nope"), 10, 10).err();
        assert!(matches!(err, Some(DataError::DirMissing { .. })));
        // Issue 18: a device or a file said "does not exist".
        let err = load(Path::new("/dev/zero"), 10, 10).err();
        assert!(
            matches!(err, Some(DataError::NotADirectory { .. })),
            "{err:?}"
        );
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/dev/zero is not a directory"), "{err}");
        Ok(())
    }
}
