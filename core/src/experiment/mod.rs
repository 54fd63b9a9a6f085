//! Runs and cells, fully resolved.
//!
//! Serialization (serde) is used for content ids and for durable storage; field order is part
//! of the canonical form, so changing a field's name or order changes every id.

mod attack;
mod shard;

pub use attack::{ApgdLoss, Attack, CascadeVersion, Norm, StepSize};
pub use shard::DataShard;

use serde::{Deserialize, Serialize};

use crate::ids::{CellId, RunId};

/// Gaussian noise injected inside a model, in training and in inference (the seed's "network
/// randomization"; parametric noise injection when `learnable`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseInjection {
    /// At `input`: σ in pixel units. At a hidden layer: σ times the (detached) standard
    /// deviation of that layer's output, so one σ means the same for every layer.
    pub sigma: f64,
    /// Injection points of the architecture (see [`crate::Arch::noise_points`]).
    pub layers: Vec<String>,
    /// One trainable scale per layer, initialised to `sigma` (He, Rakin & Fan 2019).
    pub learnable: bool,
}

/// A model: an architecture of the catalogue (built from scratch, or from a weights file), or a
/// researcher's TorchScript module. Inputs are images in [0, 1]; normalization is inside the
/// model (or declared beside a TorchScript module, [`ModelFile::normalize`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Architecture: `basic`, `resnet18`, `wrn-D-K`, `vgg11`, `vgg16`; [`TORCHSCRIPT`] for a
    /// TorchScript module.
    pub name: String,
    pub noise: Option<NoiseInjection>,
    /// The file the model comes from; left out of the canonical form when there is none, so
    /// the runs of catalogue models keep their ids. Its SHA-256 is part of the run's identity:
    /// the same file is never trained twice, a changed file is a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<ModelFile>,
}

/// [`Model::name`] of a TorchScript module.
pub const TORCHSCRIPT: &str = "torchscript";

impl Model {
    pub fn plain(name: &str) -> Model {
        Model {
            name: name.to_owned(),
            noise: None,
            file: None,
        }
    }

    /// Whether the model is a TorchScript module (its file says so).
    pub fn is_torchscript(&self) -> bool {
        self.file
            .as_ref()
            .is_some_and(|f| f.format == ModelFormat::TorchScript)
    }
}

/// What a model file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A module saved by `torch.jit.script(m).save(path)` or `torch.jit.trace`: images in
    /// [0, 1] (or normalized, see [`ModelFile::normalize`]) → logits `[N, classes]`.
    #[serde(rename = "torchscript")]
    TorchScript,
    /// A safetensors state_dict of the architecture [`Model::name`], with PyTorch's keys
    /// (docs/CHECKPOINTS.md): the starting point instead of a random initialization.
    Safetensors,
}

impl ModelFormat {
    /// The sweep-file key that names such a file (`torchscript`, `weights`).
    pub fn key(self) -> &'static str {
        match self {
            ModelFormat::TorchScript => "torchscript",
            ModelFormat::Safetensors => "weights",
        }
    }
}

/// A model file, by content: the coordinator stores it once under its SHA-256 and workers
/// fetch and verify it by that hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub format: ModelFormat,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub bytes: u64,
    /// For a TorchScript module that expects normalized input: the per-channel statistics
    /// applied, `(x - mean) / std`, between the [0, 1] image and the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<InputNormalization>,
}

/// Per-channel input statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputNormalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// How mixed-norm adversarial training combines its ℓ∞ and ℓ2 examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixStrategy {
    /// Every batch holds both an ℓ∞ and an ℓ2 adversarial version of its examples.
    BothPerBatch,
    /// Per example, the one of the two with the higher loss.
    WorstPerExample,
}

/// The training procedure of a defense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainingMethod {
    Standard,
    /// Each batch, `fraction` of the examples are replaced by `attack` at `epsilon` against the
    /// current weights.
    Adversarial {
        attack: Attack,
        epsilon: f64,
        fraction: f64,
    },
    /// ℓ∞ and ℓ2 adversarial examples in the same training.
    Mixed {
        linf: Attack,
        l2: Attack,
        epsilon_linf: f64,
        epsilon_l2: f64,
        strategy: MixStrategy,
        fraction: f64,
    },
}

/// A DnCNN (Zhang et al. 2017) put in front of the classifier: conv+ReLU, `blocks` ×
/// (conv+BN+ReLU), conv; it predicts the perturbation, which is subtracted from its input.
/// Trained with MSE on (attacked, clean) pairs made by `attack` at `epsilon` against the
/// trained classifier; the defended model (denoiser → classifier) is attacked end to end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiserSpec {
    pub blocks: u32,
    pub channels: u32,
    pub attack: Attack,
    pub epsilon: f64,
    pub epochs: u32,
    pub learning_rate: f64,
    /// Training pairs per denoiser epoch, drawn afresh in each epoch's seeded shuffle of the
    /// training set (0 = the whole training set every epoch). A compute budget knob: the
    /// classifier still trains on the whole set. Left out of the run id when 0, so runs made
    /// before it existed keep their ids.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pairs_per_epoch: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// How a run's classifier is trained: the part of a defense that makes the weights. What
/// wraps the trained classifier at evaluation is each cell's [`InferenceDefense`], so cells of
/// several defense presets that train the same way (`standard`, `noise-injection`, `dncnn`)
/// share one run and its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Defense {
    pub method: TrainingMethod,
}

impl Defense {
    pub fn standard() -> Defense {
        Defense {
            method: TrainingMethod::Standard,
        }
    }

    /// The ε adversarial training is built for, when it has one.
    pub fn epsilon(&self) -> Option<f64> {
        match &self.method {
            TrainingMethod::Standard => None,
            TrainingMethod::Adversarial { epsilon, .. } => Some(*epsilon),
            TrainingMethod::Mixed {
                epsilon_linf,
                epsilon_l2,
                ..
            } => Some(epsilon_linf.max(*epsilon_l2)),
        }
    }

    /// The ε a cell's defense is built for: adversarial training's, else its denoiser's.
    pub fn epsilon_with(&self, inference: &InferenceDefense) -> Option<f64> {
        self.epsilon()
            .or_else(|| inference.denoiser.as_ref().map(|d| d.epsilon))
    }
}

/// What wraps a run's trained classifier when a cell evaluates it: Gaussian noise on every
/// input, a DnCNN denoiser in front (trained on top of the shared classifier), both, or
/// nothing. Part of the cell's identity, never of the run's: the weights do not depend on it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InferenceDefense {
    /// σ (pixel units) of Gaussian noise added to every input at inference, attacks included.
    pub inference_noise: Option<f64>,
    pub denoiser: Option<DenoiserSpec>,
}

impl InferenceDefense {
    /// Nothing wraps the classifier (the cell evaluates it bare).
    pub fn is_empty(&self) -> bool {
        self.inference_noise.is_none() && self.denoiser.is_none()
    }

    /// Whether the wrapped model's output is random at inference.
    pub fn randomized(&self) -> bool {
        self.inference_noise.is_some_and(|s| s > 0.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
    },
}

/// Learning-rate schedule over the run's epochs (updated per batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        every_epochs: u32,
        gamma: f64,
    },
    /// Cosine annealing from the learning rate to 0.
    Cosine,
    /// Linear warm-up to the learning rate over the first 30 %, then cosine down to ~0.
    OneCycle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSpec {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub optimizer: Optimizer,
    pub schedule: LrSchedule,
    /// Random crop with 4 px padding and horizontal flips.
    pub augment: bool,
    pub eval_batch_size: u32,
    /// A resumable checkpoint every this many epochs (and after the last one).
    pub checkpoint_every: u32,
    /// Arithmetic of the training step's forward passes (adversarial examples for training
    /// included). Evaluation is always fp32, so accuracies stay comparable across precisions.
    /// Left out of the run id when fp32, so runs made before it existed keep their ids.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

/// How a training step computes: plain fp32, or bf16 autocast (matrix products and
/// convolutions in bfloat16 with fp32 weights and optimizer, as `torch.autocast`), the usual
/// way to use a GPU's tensor cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Bf16];

    /// The name sweep files and flags use (`fp32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision called `name`, or an error listing the known names.
    pub fn from_name(name: &str) -> Result<Precision, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("unknown precision `{name}` (known: fp32, bf16)"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A deterministic, learnable 10-class 32×32×3 data set generated from `seed`.
    Synthetic {
        seed: u64,
        train_size: u32,
        test_size: u32,
    },
    /// The official CIFAR-10 binary layout (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10Binary { path: String },
    /// The official CIFAR-100 binary layout (`train.bin`, `test.bin`), its 100 fine classes.
    Cifar100Binary { path: String },
    /// `train/<class>/*.{png,jpg}` and `test/<class>/*.{png,jpg}`; classes sorted by name.
    ImageFolder { path: String },
}

impl DataSource {
    /// How many classes its labels index, where that is known before the data is read (an
    /// image folder's is the number of its class folders).
    pub fn classes(&self) -> Option<usize> {
        use crate::catalogue::datasets::{CIFAR10_CLASSES, CIFAR100_CLASSES};
        match self {
            DataSource::Synthetic { .. } | DataSource::Cifar10Binary { .. } => {
                Some(CIFAR10_CLASSES)
            }
            DataSource::Cifar100Binary { .. } => Some(CIFAR100_CLASSES),
            DataSource::ImageFolder { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub source: DataSource,
    /// Test images used for evaluation (0 = all).
    pub eval_limit: u32,
    /// Training images used (0 = all).
    pub train_limit: u32,
    /// Evaluate only this slice of the (limited) test images: one part of a sharded cell.
    /// Left out of the run id when absent, so unsharded runs keep their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<DataShard>,
}

/// Where ε is measured. The seed quotes ε on normalized inputs; RobustBench on pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpsilonSpace {
    /// Inputs in [0, 1].
    Pixel,
    /// After the model's per-channel normalization ((x - mean) / std).
    Normalized,
}

pub use crate::catalogue::datasets::CIFAR10_STD;

impl EpsilonSpace {
    /// The name sweep files use (`pixel`, `normalized`).
    pub fn as_str(self) -> &'static str {
        match self {
            EpsilonSpace::Pixel => "pixel",
            EpsilonSpace::Normalized => "normalized",
        }
    }

    /// The per-channel pixel-space ℓ∞ budgets, smallest and largest, that an ℓ∞ budget of
    /// `epsilon` in this space allows (equal in pixel space).
    pub fn pixel_linf_range(self, epsilon: f64) -> (f64, f64) {
        match self {
            EpsilonSpace::Pixel => (epsilon, epsilon),
            EpsilonSpace::Normalized => {
                let lo = CIFAR10_STD.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = CIFAR10_STD.iter().copied().fold(0.0, f64::max);
                (epsilon * lo, epsilon * hi)
            }
        }
    }
}

/// One training job: a classifier's identity (model, training method, training, data, seed),
/// and every cell evaluated on its weights. Its id is a hash of everything here except `id`
/// and the display names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub id: RunId,
    /// The model name the sweep file used (e.g. `noisy-basic`), for display.
    pub model_name: String,
    pub model: Model,
    /// The preset name the sweep file used, for display.
    pub defense_name: String,
    pub defense: Defense,
    pub training: TrainingSpec,
    pub data: DataSpec,
    pub seed: u64,
    /// The space every ε of this run (training and cells) is measured in.
    pub epsilon_space: EpsilonSpace,
}

impl RunSpec {
    /// Whether the model under attack is randomized (noisy layers or inference noise), in
    /// which case attacks need EOT to be sound. A learnable noise scale counts even at σ = 0:
    /// training can move it off 0 (the worker's `Noise::randomized` agrees).
    pub fn randomized(&self) -> bool {
        self.model
            .noise
            .as_ref()
            .is_some_and(|n| !n.layers.is_empty() && (n.sigma > 0.0 || n.learnable))
    }

    /// Whether the model a cell attacks is randomized: noisy layers, or the cell's inference
    /// noise.
    pub fn randomized_with(&self, inference: &InferenceDefense) -> bool {
        self.randomized() || inference.randomized()
    }
}

/// One evaluation of a run's trained weights, wrapped by the cell's inference-time defense.
/// Its id hashes the run id, attack and ε, and the inference defense when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: CellId,
    pub run_id: RunId,
    /// The preset name the sweep file used, for display.
    pub attack_name: String,
    pub attack: Attack,
    /// The budget; for the clean attack `none` it labels the defense's tied ε (0 if none).
    pub epsilon: f64,
    /// The defense preset the sweep file named, for display: the cells of one run may come
    /// from several presets that train the same classifier. Empty in cells stored before it
    /// existed (their run's name is theirs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub defense_name: String,
    /// What wraps the run's classifier for this cell (nothing: the bare classifier).
    #[serde(default, skip_serializing_if = "InferenceDefense::is_empty")]
    pub inference: InferenceDefense,
}
