//! Bounds on every size a sweep file or a peer controls. [`crate::validate`] enforces them on
//! both sides (the sweep-file resolver and wire decoding), so whatever the coordinator hands out
//! a worker also accepts.

use crate::catalogue::datasets::{CIFAR10_STD, IMAGE_SHAPE};
use crate::{EpsilonSpace, Norm};

/// Largest sweep file, in bytes: the one cap `plan`, `run` and `submit` read a file with and
/// the coordinator accepts in `SubmitSweep` (a sweep file is a few KiB; the largest grids
/// written out key by key stay far below this). Below the smallest `max_message_bytes` a
/// coordinator may be configured with (2 MiB), so a file that passes reaches the parser.
pub const MAX_SWEEP_FILE_BYTES: usize = 1 << 20;
/// Longest run or cell id accepted (ours are 18 bytes: a prefix and 16 hex digits).
pub const MAX_ID_BYTES: usize = 128;
/// Longest model, defense, attack or noise-layer name accepted.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest data-set path accepted.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most PGD steps per attack.
pub const MAX_PGD_STEPS: u32 = 10_000;
/// Most target classes of a targeted attack (APGD-T, FAB-T): the classes less the true one.
pub const MAX_TARGETS: u32 = crate::catalogue::datasets::CIFAR10_CLASSES as u32 - 1;
/// Most queries of a Square attack per run.
pub const MAX_SQUARE_QUERIES: u32 = 1_000_000;
/// Most stages of an AutoAttack cascade.
pub const MAX_CASCADE_STAGES: usize = 16;
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
/// Largest model file any coordinator accepts (a WideResNet-70-16 is ~1.1 GB); each
/// coordinator's `max_model_file_bytes` setting is at most this.
pub const MAX_MODEL_FILE_BYTES: u64 = 16 << 30;
/// Most slices one cell's evaluation may be sharded into (`[evaluation] shards`).
pub const MAX_SHARDS: u32 = 1024;
/// Most input channels a declared normalization may have.
pub const MAX_CHANNELS: usize = 64;

/// Largest perturbation budget ε of norm `norm` measured in `space`: the diameter of the set of
/// images in that norm. A ball that large already holds every image, so a larger ε (`1e300`)
/// is a typo, not an experiment.
///
/// Pixel space (inputs in [0, 1]): ℓ∞ 1, ℓ2 √(C·H·W) (√3072 ≈ 55.4 for 3×32×32). Normalized
/// space ((x − μ_c) / σ_c) stretches channel c to 1/σ_c: ℓ∞ max_c 1/σ_c, ℓ2 √(H·W·Σ_c 1/σ_c²)
/// (CIFAR-10's σ: ≈ 4.11 and ≈ 221).
pub fn max_epsilon(norm: Norm, space: EpsilonSpace) -> f64 {
    let [channels, height, width] = IMAGE_SHAPE.map(f64::from);
    let pixels = height * width;
    match (space, norm) {
        (EpsilonSpace::Pixel, Norm::Linf) => 1.0,
        (EpsilonSpace::Pixel, Norm::L2) => (channels * pixels).sqrt(),
        (EpsilonSpace::Normalized, Norm::Linf) => {
            CIFAR10_STD.iter().map(|s| 1.0 / s).fold(0.0, f64::max)
        }
        (EpsilonSpace::Normalized, Norm::L2) => {
            (pixels * CIFAR10_STD.iter().map(|s| 1.0 / (s * s)).sum::<f64>()).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_budgets_are_the_image_diameters() {
        assert_eq!(max_epsilon(Norm::Linf, EpsilonSpace::Pixel), 1.0);
        assert!((max_epsilon(Norm::L2, EpsilonSpace::Pixel) - 3072f64.sqrt()).abs() < 1e-12);
        assert!((max_epsilon(Norm::Linf, EpsilonSpace::Normalized) - 1.0 / 0.2435).abs() < 1e-12);
        let l2 = max_epsilon(Norm::L2, EpsilonSpace::Normalized);
        assert!((221.0..222.0).contains(&l2), "{l2}");
    }
}
