//! Data sets, loaded once per run and kept on the device as `u8`.
//!
//! Why `u8` on the device: a CIFAR-sized training set is 150 MB as bytes but 600 MB as `f32`,
//! and host→device copies per batch would dominate small models on a GPU. Batches are gathered
//! by index on the device and converted to `f32 / 255` (inputs in [0, 1]; normalization lives
//! inside the models so that attack budgets are expressed in pixel space).
//!
//! Sources:
//! * [`cifar10`], [`cifar100`]: the official CIFAR-10 and CIFAR-100 binary files;
//! * [`synthetic`]: a deterministic, learnable stand-in generated from a seed, for tests and
//!   machines without the real data;
//! * [`image_folder`]: `train/<class>/*` and `test/<class>/*` PNG/JPEG folders.

pub mod cifar10;
pub mod cifar100;
pub mod image_folder;
pub mod synthetic;

use std::path::{Path, PathBuf};

use advsweep_core::{DataShard, DataSource, DataSpec};
use anyhow::Context as _;
use tch::{Device, Kind, Tensor};

/// Image geometry shared by every source: 3 × 32 × 32.
pub const CHANNELS: i64 = 3;
pub const HEIGHT: i64 = 32;
pub const WIDTH: i64 = 32;
pub const IMAGE_BYTES: usize = (CHANNELS * HEIGHT * WIDTH) as usize;
/// Classes of CIFAR-10 and of the synthetic set (a [`Dataset`] says its own: [`Dataset::classes`]).
pub const CLASSES: i64 = 10;

/// Why data could not be loaded. Most variants are permanent: retrying on another worker
/// reads the same files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data directory {} does not exist", path.display())]
    DirMissing { path: PathBuf },
    /// The path exists but is a file or a device (`--data-path /dev/zero`).
    #[error("data path {} is not a directory (a data set is a directory of files)", path.display())]
    NotADirectory { path: PathBuf },
    #[error("missing data file {}", path.display())]
    FileMissing { path: PathBuf },
    #[error("{}: expected {expected} bytes, found {found}", path.display())]
    WrongSize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{}: record {record} has label {label}, expected 0..{classes}", path.display())]
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
        classes: u8,
    },
    #[error("{}: {reason}", path.display())]
    BadImage { path: PathBuf, reason: String },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid data parameters: {0}")]
    Invalid(String),
}

impl DataError {
    /// Why `path`, which is not a directory, cannot be a data set's directory: it does not
    /// exist ([`DataError::DirMissing`]), or it is something else ([`DataError::NotADirectory`]).
    pub fn not_a_dir(path: &Path) -> DataError {
        let path = path.to_path_buf();
        if std::fs::symlink_metadata(&path).is_ok() {
            DataError::NotADirectory { path }
        } else {
            DataError::DirMissing { path }
        }
    }

    /// Whether a retry cannot help. Only I/O errors other than "not found"/"permission
    /// denied"/"invalid data" are considered transient (a flaky network file system).
    pub fn is_permanent(&self) -> bool {
        match self {
            DataError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::IsADirectory
            ),
            _ => true,
        }
    }
}

/// Images and labels of one split, in host memory, before they go to the device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSplit {
    /// `len * 3 * 32 * 32` bytes, NCHW (channel-major per image, like CIFAR-10's records).
    pub images: Vec<u8>,
    /// Class indices in 0..10.
    pub labels: Vec<i64>,
}

impl HostSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn into_tensors(self, device: Device, what: &str) -> anyhow::Result<(Tensor, Tensor)> {
        let n = self.len();
        if self.images.len() != n * IMAGE_BYTES {
            anyhow::bail!(
                "{what}: {} image bytes for {n} labels (expected {})",
                self.images.len(),
                n * IMAGE_BYTES
            );
        }
        let n = i64::try_from(n).context("too many images")?;
        let x = Tensor::f_from_slice(&self.images)?
            .f_view([n, CHANNELS, HEIGHT, WIDTH])?
            .f_to_device(device)
            .with_context(|| format!("moving {what} images to {device:?}"))?;
        let y = Tensor::f_from_slice(&self.labels)?
            .f_to_device(device)
            .with_context(|| format!("moving {what} labels to {device:?}"))?;
        Ok((x, y))
    }
}

/// A loaded data set on one device.
#[derive(Debug)]
pub struct Dataset {
    /// `u8 [N, 3, 32, 32]`.
    pub train_x: Tensor,
    /// `i64 [N]`.
    pub train_y: Tensor,
    /// `u8 [M, 3, 32, 32]`, already cut to the evaluation subset.
    pub test_x: Tensor,
    /// `i64 [M]`.
    pub test_y: Tensor,
    /// For logs, e.g. "synthetic(seed=1) 4000 train / 1000 eval".
    pub description: String,
    /// How many classes the labels index (a model must give one logit each).
    pub classes: i64,
    /// Where `test_x` starts in the run's whole evaluation set: 0, or a shard's first image
    /// ([`Dataset::shard`]). A batch's randomness is seeded from its position there, so a
    /// sharded cell's batches draw what the unsharded cell's do.
    pub test_offset: i64,
}

/// Applies a `0 = all` limit.
pub fn apply_limit(available: usize, limit: u32) -> usize {
    if limit == 0 {
        available
    } else {
        available.min(limit as usize)
    }
}

impl Dataset {
    /// Loads the data a run asks for, with `train_limit` and `eval_limit` applied.
    pub fn load(spec: &DataSpec, device: Device) -> anyhow::Result<Dataset> {
        let (train, test, name, classes) = match &spec.source {
            DataSource::Synthetic {
                seed,
                train_size,
                test_size,
            } => {
                let train_n = apply_limit(*train_size as usize, spec.train_limit);
                let test_n = apply_limit(*test_size as usize, spec.eval_limit);
                let (train, test) = synthetic::generate(*seed, train_n, test_n)?;
                (train, test, format!("synthetic(seed={seed})"), CLASSES)
            }
            DataSource::Cifar10Binary { path } => {
                let (train, test) = cifar10::load(
                    std::path::Path::new(path),
                    spec.train_limit,
                    spec.eval_limit,
                )?;
                (train, test, format!("cifar10({path})"), CLASSES)
            }
            DataSource::Cifar100Binary { path } => {
                let (train, test) = cifar100::load(
                    std::path::Path::new(path),
                    spec.train_limit,
                    spec.eval_limit,
                )?;
                (
                    train,
                    test,
                    format!("cifar100({path})"),
                    i64::from(cifar100::CLASSES),
                )
            }
            DataSource::ImageFolder { path } => {
                let (train, test, classes) = image_folder::load(
                    std::path::Path::new(path),
                    spec.train_limit,
                    spec.eval_limit,
                )?;
                let n = classes.len() as i64;
                (
                    train,
                    test,
                    format!("image-folder({path}; classes {})", classes.join(", ")),
                    n,
                )
            }
        };
        Ok(Dataset::from_host(train, test, name, device)?.with_classes(classes))
    }

    /// Moves host splits to `device`.
    pub fn from_host(
        train: HostSplit,
        test: HostSplit,
        name: String,
        device: Device,
    ) -> anyhow::Result<Dataset> {
        if train.is_empty() {
            return Err(DataError::Invalid("the training set is empty".into()).into());
        }
        if test.is_empty() {
            return Err(DataError::Invalid("the evaluation set is empty".into()).into());
        }
        let description = format!("{name}: {} train / {} eval", train.len(), test.len());
        let (train_x, train_y) = train.into_tensors(device, "training")?;
        let (test_x, test_y) = test.into_tensors(device, "evaluation")?;
        Ok(Dataset {
            train_x,
            train_y,
            test_x,
            test_y,
            description,
            classes: CLASSES,
            test_offset: 0,
        })
    }

    /// The slice of the evaluation set that `shard` names when it is evaluated in batches of
    /// `batch` ([`DataShard::images`]), as views of the same tensors; the whole set without a
    /// shard. A slice without images is an error naming why (more shards than batches).
    pub fn shard(&self, shard: Option<DataShard>, batch: u32) -> anyhow::Result<Dataset> {
        let whole = self.test_len();
        let range = match shard {
            None => 0..whole,
            Some(shard) => {
                let r = shard.images(whole.max(0) as u64, u64::from(batch));
                let (start, end) = (r.start as i64, r.end as i64);
                if start == end {
                    return Err(DataError::Invalid(format!(
                        "shard {} holds no test images: the {whole} evaluated images make {} \
                         batches of {batch}, fewer than the {} shards (lower `[evaluation] \
                         shards` or `batch_size`)",
                        shard.label(),
                        (whole.max(0) as u64).div_ceil(u64::from(batch.max(1))),
                        shard.count
                    ))
                    .into());
                }
                start..end
            }
        };
        let len = range.end - range.start;
        Ok(Dataset {
            train_x: self.train_x.shallow_clone(),
            train_y: self.train_y.shallow_clone(),
            test_x: self.test_x.f_narrow(0, range.start, len)?,
            test_y: self.test_y.f_narrow(0, range.start, len)?,
            description: match shard {
                None => self.description.clone(),
                Some(s) => format!(
                    "{}, shard {}: images {}..{}",
                    self.description,
                    s.label(),
                    range.start,
                    range.end
                ),
            },
            classes: self.classes,
            test_offset: self.test_offset + range.start,
        })
    }

    /// The same data with labels indexing `classes` classes.
    pub fn with_classes(mut self, classes: i64) -> Dataset {
        self.classes = classes;
        self
    }

    pub fn train_len(&self) -> i64 {
        self.train_y.size().first().copied().unwrap_or(0)
    }

    pub fn test_len(&self) -> i64 {
        self.test_y.size().first().copied().unwrap_or(0)
    }

    pub fn device(&self) -> Device {
        self.train_x.device()
    }

    /// Training examples at `index` (an `i64` tensor on the data's device), as `f32` in [0, 1].
    pub fn train_batch(&self, index: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
        let x = to_unit_float(&self.train_x.f_index_select(0, index)?)?;
        let y = self.train_y.f_index_select(0, index)?;
        Ok((x, y))
    }

    /// Evaluation examples `start..start+len` (clipped), as `f32` in [0, 1].
    pub fn test_batch(&self, start: i64, len: i64) -> anyhow::Result<(Tensor, Tensor)> {
        let len = len.min(self.test_len() - start).max(0);
        let x = to_unit_float(&self.test_x.f_narrow(0, start, len)?)?;
        let y = self.test_y.f_narrow(0, start, len)?;
        Ok((x, y))
    }
}

/// `u8` pixels to `f32` in [0, 1].
pub fn to_unit_float(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_to_kind(Kind::Float)?.f_div_scalar(255.0)
}

/// Random crop with 4 px zero padding and random horizontal flip, per example, on the batch's
/// device. Offsets and flips come from `rng` (portable), not from torch's generator.
pub fn augment(x: &Tensor, rng: &mut crate::rng::Rng) -> anyhow::Result<Tensor> {
    const PAD: i64 = 4;
    let size = x.size();
    let [n, c, h, w] = size[..] else {
        anyhow::bail!("augment expects [N, C, H, W], got {size:?}");
    };
    let device = x.device();
    let mut rows = Vec::with_capacity((n * h) as usize);
    let mut cols = Vec::with_capacity((n * w) as usize);
    let mut flips = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let dy = rng.range_i64(0, 2 * PAD);
        let dx = rng.range_i64(0, 2 * PAD);
        let flip = rng.bernoulli(0.5);
        rows.extend((0..h).map(|i| dy + i));
        // A flip reverses the column order of the crop window.
        cols.extend((0..w).map(|j| if flip { dx + w - 1 - j } else { dx + j }));
        flips.push(flip);
    }
    let padded = x.f_constant_pad_nd([PAD, PAD, PAD, PAD])?; // [N, C, H+8, W+8]
    let rows = Tensor::f_from_slice(&rows)?
        .f_view([n, 1, h, 1])?
        .f_to_device(device)?
        .f_expand([n, c, h, w + 2 * PAD], false)?;
    let picked_rows = padded.f_gather(2, &rows, false)?; // [N, C, H, W+8]
    let cols = Tensor::f_from_slice(&cols)?
        .f_view([n, 1, 1, w])?
        .f_to_device(device)?
        .f_expand([n, c, h, w], false)?;
    Ok(picked_rows.f_gather(3, &cols, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_keeps_shape_and_values() -> anyhow::Result<()> {
        let x = Tensor::f_rand([5, 3, 32, 32], (Kind::Float, Device::Cpu))?;
        let mut rng = crate::rng::Rng::new(3);
        let a = augment(&x, &mut rng)?;
        assert_eq!(a.size(), vec![5, 3, 32, 32]);
        // Every output pixel is either padding (0) or one of the input's values.
        let max_in = f64::try_from(x.f_max()?)?;
        let max_out = f64::try_from(a.f_max()?)?;
        assert!(max_out <= max_in);
        assert!(f64::try_from(a.f_min()?)? >= 0.0);
        Ok(())
    }

    #[test]
    fn limits_mean_zero_is_all() {
        assert_eq!(apply_limit(100, 0), 100);
        assert_eq!(apply_limit(100, 10), 10);
        assert_eq!(apply_limit(100, 1000), 100);
    }

    #[test]
    fn mismatched_host_split_is_an_error() {
        let bad = HostSplit {
            images: vec![0; 10],
            labels: vec![1],
        };
        let good = HostSplit {
            images: vec![0; IMAGE_BYTES],
            labels: vec![1],
        };
        assert!(Dataset::from_host(bad, good.clone(), "x".into(), Device::Cpu).is_err());
        assert!(Dataset::from_host(good.clone(), good, "x".into(), Device::Cpu).is_ok());
    }
}
