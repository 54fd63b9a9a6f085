//! The official CIFAR-100 binary layout (<https://www.cs.toronto.edu/~kriz/cifar.html>,
//! "CIFAR-100 binary version").
//!
//! `train.bin` (50 000 records) and `test.bin` (10 000 records) of 3 074 bytes: a coarse label
//! byte (0–19, the superclass), a fine label byte (0–99, the class), then the 3 072 pixel bytes
//! laid out as CIFAR-10's. advsweep classifies the 100 fine classes. Sizes are checked exactly,
//! as for CIFAR-10 (a truncated download must not become a silently smaller data set).

use std::path::{Path, PathBuf};

use super::cifar10::{RecordLayout, read_records, resolve_archive_dir};
use super::{DataError, HostSplit, apply_limit};

/// Classes (the fine labels).
pub const CLASSES: u8 = 100;
pub const TRAIN_FILE: &str = "train.bin";
pub const TEST_FILE: &str = "test.bin";
pub const TRAIN_RECORDS: usize = 50_000;
pub const TEST_RECORDS: usize = 10_000;
/// The directory name inside the official archive.
pub const ARCHIVE_DIR: &str = "cifar-100-binary";

fn layout(records: usize) -> RecordLayout {
    RecordLayout {
        labels_before: 1,
        records,
        classes: CLASSES,
    }
}

/// The directory holding the `.bin` files: `path` itself, or `path/cifar-100-binary`.
pub fn resolve_dir(path: &Path) -> Result<PathBuf, DataError> {
    resolve_archive_dir(path, &[TRAIN_FILE, TEST_FILE], ARCHIVE_DIR)
}

/// Loads `train_limit` training and `eval_limit` test images (0 = all), fine labels.
pub fn load(
    path: &Path,
    train_limit: u32,
    eval_limit: u32,
) -> Result<(HostSplit, HostSplit), DataError> {
    let dir = resolve_dir(path)?;
    let mut train = HostSplit::default();
    read_records(
        &dir.join(TRAIN_FILE),
        layout(TRAIN_RECORDS),
        apply_limit(TRAIN_RECORDS, train_limit),
        &mut train,
    )?;
    let mut test = HostSplit::default();
    read_records(
        &dir.join(TEST_FILE),
        layout(TEST_RECORDS),
        apply_limit(TEST_RECORDS, eval_limit),
        &mut test,
    )?;
    Ok((train, test))
}

/// Test support: a full-size CIFAR-100 directory whose first `n` records of each file have fine
/// label `(i * 7) % 100`, coarse label `i % 20` and pixels `(i + p) % 256`; the rest are zero
/// bytes (a sparse file: fast to make).
#[cfg(test)]
pub(crate) fn fabricate(dir: &Path, n: usize) -> std::io::Result<()> {
    use std::io::Write as _;
    for (name, records) in [(TRAIN_FILE, TRAIN_RECORDS), (TEST_FILE, TEST_RECORDS)] {
        let mut f = std::fs::File::create(dir.join(name))?;
        let mut head = Vec::new();
        for i in 0..n.min(records) {
            head.push((i % 20) as u8);
            head.push(((i * 7) % 100) as u8);
            head.extend((0..3072).map(|p| ((i + p) % 256) as u8));
        }
        f.write_all(&head)?;
        f.set_len(layout(records).file_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_labels_and_pixels_are_read_and_sizes_checked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join(ARCHIVE_DIR);
        std::fs::create_dir(&nested)?;
        fabricate(&nested, 30)?;
        let (train, test) = load(dir.path(), 25, 0)?;
        assert_eq!((train.len(), test.len()), (25, TEST_RECORDS));
        assert_eq!(&train.labels[..4], &[0, 7, 14, 21]);
        assert_eq!(
            train.labels[15], 5,
            "fine label (15 * 7) % 100, not the coarse one"
        );
        assert_eq!(&train.images[3072..3075], &[1, 2, 3]);
        assert!(test.labels[30..].iter().all(|&l| l == 0));

        // A truncated file is named with both sizes; so is a label beyond 99.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(nested.join(TEST_FILE))?;
        f.set_len(1000)?;
        let e = load(dir.path(), 0, 0).expect_err("truncated");
        assert!(
            e.to_string()
                .contains("expected 30740000 bytes, found 1000"),
            "{e}"
        );
        let mut bytes = std::fs::read(nested.join(TRAIN_FILE))?;
        bytes[1] = 100;
        std::fs::write(nested.join(TRAIN_FILE), bytes)?;
        let e = load(dir.path(), 1, 1).expect_err("label 100");
        assert!(e.to_string().contains("label 100, expected 0..100"), "{e}");
        Ok(())
    }
}
