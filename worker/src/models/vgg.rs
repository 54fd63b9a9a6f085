//! `vgg11`, `vgg16`: VGG with batch norm for CIFAR (kuangliu/pytorch-cifar layout).
//!
//! `features` is PyTorch's `nn.Sequential` of, per configuration entry, either
//! Conv2d(3×3, padding 1, with bias) → BatchNorm2d → ReLU (three indices) or MaxPool2d(2)
//! (one index), then an identity AvgPool2d(1); `classifier` is Linear 512→10. Keys are
//! `features.{i}.weight/bias` for a convolution at index i and `features.{i+1}.*` for its
//! batch norm, e.g. vgg11: features.0 conv, features.1 bn, features.4 conv, features.5 bn, …
//! vgg11: 9,231,114 parameters; vgg16: 14,728,266. PyTorch default initialization.
//!
//! Noise points: `input`; `stage1`..`stage5` (the output of each max-pool).

use std::sync::atomic::AtomicI64;

use tch::nn::VarStore;
use tch::{Device, TchError, Tensor};

use super::layers::{BatchNorm2d, Conv2d, ConvBn, ConvSpec, Linear, max_pool2};
use super::noise::{Noise, NoiseConfig};
use super::{Classifier, Layout, Normalize, Weights, count_batch};

/// Which VGG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggKind {
    Vgg11,
    Vgg16,
}

/// A configuration entry: a convolution's output channels, or 0 for a max-pool.
const M: i64 = 0;
const VGG11: &[i64] = &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M];
const VGG16: &[i64] = &[
    64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M,
];
const STAGE_POINTS: [&str; 5] = ["stage1", "stage2", "stage3", "stage4", "stage5"];

#[derive(Debug)]
enum Layer {
    ConvBnRelu(ConvBn),
    Pool,
}

#[derive(Debug)]
pub struct Vgg {
    kind: VggKind,
    vs: VarStore,
    normalize: Normalize,
    features: Vec<Layer>,
    classifier: Linear,
    noise: Noise,
    batches: AtomicI64,
}

impl Vgg {
    pub fn new(
        kind: VggKind,
        device: Device,
        noise: Option<&NoiseConfig>,
    ) -> Result<Vgg, TchError> {
        Vgg::with_classes(kind, device, noise, 10)
    }

    /// With `classes` outputs (the data's classes).
    pub fn with_classes(
        kind: VggKind,
        device: Device,
        noise: Option<&NoiseConfig>,
        classes: i64,
    ) -> Result<Vgg, TchError> {
        let cfg = match kind {
            VggKind::Vgg11 => VGG11,
            VggKind::Vgg16 => VGG16,
        };
        let vs = VarStore::new(device);
        let root = vs.root();
        let features_path = root.sub("features");
        let mut features = Vec::new();
        let mut index = 0;
        let mut input = 3;
        for &c in cfg {
            if c == M {
                features.push(Layer::Pool);
                index += 1;
            } else {
                let conv = Conv2d::new(
                    &features_path.sub(index),
                    ConvSpec::new(input, c, 3).bias(true),
                )?;
                let bn = BatchNorm2d::new(&features_path.sub(index + 1), c)?;
                features.push(Layer::ConvBnRelu(ConvBn::new(conv, bn)));
                index += 3;
                input = c;
            }
        }
        let classifier = Linear::new(&root.sub("classifier"), 512, classes)?;
        let noise = Noise::new(&root, noise)?;
        Ok(Vgg {
            kind,
            normalize: Normalize::cifar10(device, Layout::VGG)?,
            vs,
            features,
            classifier,
            noise,
            batches: AtomicI64::new(0),
        })
    }
}

impl Classifier for Vgg {
    fn name(&self) -> &str {
        match self.kind {
            VggKind::Vgg11 => "vgg11",
            VggKind::Vgg16 => "vgg16",
        }
    }

    fn weights(&self) -> &dyn Weights {
        &self.vs
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        count_batch(&self.batches, train);
        let n = &self.noise;
        let mut out = self.normalize.noisy_input(n, x)?;
        let mut stages = STAGE_POINTS.iter();
        for layer in &self.features {
            out = match layer {
                Layer::ConvBnRelu(pair) => pair.forward(&out, train)?.f_relu()?,
                Layer::Pool => {
                    let pooled = max_pool2(&out)?;
                    match stages.next() {
                        Some(point) => n.apply(point, pooled)?,
                        None => pooled,
                    }
                }
            };
        }
        self.classifier.forward(&out.f_flatten(1, -1)?)
    }

    fn randomized(&self) -> bool {
        self.noise.randomized()
    }

    fn batches_tracked(&self) -> Option<&AtomicI64> {
        Some(&self.batches)
    }
}
