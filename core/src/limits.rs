//! Bounds on every size a sweep file or a peer controls. [`crate::validate`] enforces them on
//! both sides (the sweep-file resolver and wire decoding), so whatever the coordinator hands out
//! a worker also accepts.

/// Longest run or cell id accepted (ours are 18 bytes: a prefix and 16 hex digits).
pub const MAX_ID_BYTES: usize = 128;
/// Longest model, defense, attack or noise-layer name accepted.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest data-set path accepted.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most PGD steps per attack.
pub const MAX_PGD_STEPS: u32 = 10_000;
/// Most PGD restarts per attack.
pub const MAX_RESTARTS: u32 = 1_000;
/// Most training (or denoiser-training) epochs; also the highest epoch number a report may carry.
pub const MAX_EPOCHS: u32 = 100_000;
/// Largest training or evaluation batch.
pub const MAX_BATCH_SIZE: u32 = 1 << 20;
/// Smallest synthetic data set (train or test images): one image per class.
pub const MIN_SYNTHETIC_IMAGES: u32 = 10;
/// Largest synthetic data set (train or test images).
pub const MAX_SYNTHETIC_IMAGES: u32 = 10_000_000;
/// Most noise-injection points named by one model.
pub const MAX_NOISE_LAYERS: usize = 64;
/// Most cells handed out with one run.
pub const MAX_CELLS_PER_RUN: usize = 1_000_000;
/// Most gradient samples per step a worker accepts (a guard against absurd requests).
pub const MAX_EOT_SAMPLES: u32 = 1000;
/// Most residual blocks of a DnCNN denoiser.
pub const MAX_DENOISER_BLOCKS: u32 = 64;
/// Most channels of a DnCNN denoiser.
pub const MAX_DENOISER_CHANNELS: u32 = 1024;
