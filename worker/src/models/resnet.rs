//! `resnet18`: ResNet-18 for CIFAR (kuangliu/pytorch-cifar layout): a 3×3 stem (no max-pool),
//! four stages of two BasicBlocks (64, 128, 256, 512 channels, strides 1, 2, 2, 2), 4×4
//! average pooling and `linear` 512→10; 11,173,962 parameters.
//!
//! Keys: `conv1`, `bn1`, `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`, and for the first block of
//! layers 2–4 the projection shortcut `layer{k}.0.shortcut.0` (1×1 conv) and
//! `layer{k}.0.shortcut.1` (batch norm); `linear`. Convolutions have no bias. Weights use
//! PyTorch's default initialization.
//!
//! Noise points: `input`; `stem` (after conv1 → bn1 → relu); `layer1`..`layer4` (each stage's
//! output, after its last relu).

use std::sync::atomic::AtomicI64;

use tch::nn::{self, VarStore};
use tch::{Device, TchError, Tensor};

use super::layers::{BatchNorm2d, Conv2d, ConvBn, ConvSpec, Linear, avg_pool};
use super::noise::{Noise, NoiseConfig};
use super::{Classifier, Layout, Normalize, Weights, count_batch};

#[derive(Debug)]
struct BasicBlock {
    first: ConvBn,
    second: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(p: &nn::Path<'_>, input: i64, planes: i64, stride: i64) -> Result<BasicBlock, TchError> {
        let conv1 = Conv2d::new(
            &p.sub("conv1"),
            ConvSpec::new(input, planes, 3).stride(stride),
        )?;
        let bn1 = BatchNorm2d::new(&p.sub("bn1"), planes)?;
        let conv2 = Conv2d::new(&p.sub("conv2"), ConvSpec::new(planes, planes, 3))?;
        let bn2 = BatchNorm2d::new(&p.sub("bn2"), planes)?;
        let shortcut = if stride != 1 || input != planes {
            let s = p.sub("shortcut");
            Some(ConvBn::new(
                Conv2d::new(&s.sub(0), ConvSpec::new(input, planes, 1).stride(stride))?,
                BatchNorm2d::new(&s.sub(1), planes)?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            first: ConvBn::new(conv1, bn1),
            second: ConvBn::new(conv2, bn2),
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let out = self.first.forward(x, train)?.f_relu()?;
        let out = self.second.forward(&out, train)?;
        let short = match &self.shortcut {
            Some(projection) => projection.forward(x, train)?,
            None => x.shallow_clone(),
        };
        out.f_add(&short)?.f_relu()
    }
}

#[derive(Debug)]
pub struct ResNet18 {
    vs: VarStore,
    normalize: Normalize,
    stem: ConvBn,
    layers: Vec<Vec<BasicBlock>>,
    linear: Linear,
    noise: Noise,
    batches: AtomicI64,
}

const LAYER_POINTS: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];

impl ResNet18 {
    pub fn new(device: Device, noise: Option<&NoiseConfig>) -> Result<ResNet18, TchError> {
        ResNet18::with_classes(device, noise, 10)
    }

    /// With `classes` outputs (the data's classes).
    pub fn with_classes(
        device: Device,
        noise: Option<&NoiseConfig>,
        classes: i64,
    ) -> Result<ResNet18, TchError> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let conv1 = Conv2d::new(&root.sub("conv1"), ConvSpec::new(3, 64, 3))?;
        let bn1 = BatchNorm2d::new(&root.sub("bn1"), 64)?;
        let mut input = 64;
        let mut layers = Vec::new();
        for (i, (planes, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)]
            .into_iter()
            .enumerate()
        {
            let p = root.sub(format!("layer{}", i + 1));
            let first = BasicBlock::new(&p.sub(0), input, planes, stride)?;
            let second = BasicBlock::new(&p.sub(1), planes, planes, 1)?;
            layers.push(vec![first, second]);
            input = planes;
        }
        let linear = Linear::new(&root.sub("linear"), 512, classes)?;
        let noise = Noise::new(&root, noise)?;
        Ok(ResNet18 {
            normalize: Normalize::cifar10(device, Layout::RESIDUAL)?,
            vs,
            stem: ConvBn::new(conv1, bn1),
            layers,
            linear,
            noise,
            batches: AtomicI64::new(0),
        })
    }
}

impl Classifier for ResNet18 {
    fn name(&self) -> &str {
        "resnet18"
    }

    fn weights(&self) -> &dyn Weights {
        &self.vs
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        count_batch(&self.batches, train);
        let n = &self.noise;
        let x = self.normalize.noisy_input(n, x)?;
        let mut out = n.apply("stem", self.stem.forward(&x, train)?.f_relu()?)?;
        for (layer, point) in self.layers.iter().zip(LAYER_POINTS) {
            for block in layer {
                out = block.forward(&out, train)?;
            }
            out = n.apply(point, out)?;
        }
        let out = avg_pool(&out, 4)?.f_flatten(1, -1)?;
        self.linear.forward(&out)
    }

    fn randomized(&self) -> bool {
        self.noise.randomized()
    }

    fn batches_tracked(&self) -> Option<&AtomicI64> {
        Some(&self.batches)
    }
}
