//! `wrn-D-K`: WideResNet (Zagoruyko & Komodakis 2016) in the layout of
//! xternalz/WideResNet-pytorch, the one TRADES, MART and most robustness code use.
//!
//! Stem `conv1` 3→16 (3×3); three groups `block1..block3` of n = (D−4)/6 pre-activation
//! blocks with widths 16K, 32K, 64K and strides 1, 2, 2; final `bn1` → relu → 8×8 average
//! pooling → `fc`. A block is bn1 → relu → conv1 → bn2 → relu → conv2 (dropout 0) plus the
//! identity, or, when its input and output widths differ, plus `convShortcut` (1×1, with the
//! block's stride) applied to the *activated* input relu(bn1(x)).
//!
//! Keys: `conv1.weight`, `block{g}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1`, `fc`.
//! Initialization as the reference: convolutions normal(0, √(2/(k²·out))), batch norm 1/0,
//! `fc` PyTorch default weight and zero bias. wrn-16-4: 2,748,890 parameters; wrn-28-10:
//! 36,479,194.
//!
//! Noise points: `input`; `stem` (conv1's output); `block1`..`block3` (each group's output,
//! before the final batch norm).

use std::sync::atomic::AtomicI64;

use tch::nn::{self, VarStore};
use tch::{Device, TchError, Tensor};

use super::layers::{BatchNorm2d, Conv2d, ConvSpec, Linear, WeightInit, avg_pool};
use super::noise::{Noise, NoiseConfig};
use super::{Classifier, Layout, Normalize, Weights, count_batch};

fn conv(
    p: &nn::Path<'_>,
    input: i64,
    output: i64,
    kernel: i64,
    stride: i64,
) -> Result<Conv2d, TchError> {
    Conv2d::new(
        p,
        ConvSpec::new(input, output, kernel)
            .stride(stride)
            .init(WeightInit::HeFanOut),
    )
}

#[derive(Debug)]
struct Block {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Block {
    fn new(p: &nn::Path<'_>, input: i64, output: i64, stride: i64) -> Result<Block, TchError> {
        let bn1 = BatchNorm2d::new(&p.sub("bn1"), input)?;
        let conv1 = conv(&p.sub("conv1"), input, output, 3, stride)?;
        let bn2 = BatchNorm2d::new(&p.sub("bn2"), output)?;
        let conv2 = conv(&p.sub("conv2"), output, output, 3, 1)?;
        let shortcut = if input != output {
            Some(conv(&p.sub("convShortcut"), input, output, 1, stride)?)
        } else {
            None
        };
        Ok(Block {
            bn1,
            conv1,
            bn2,
            conv2,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let act = self.bn1.forward(x, train)?.f_relu()?;
        let out = self
            .bn2
            .forward(&self.conv1.forward(&act)?, train)?
            .f_relu()?;
        let out = self.conv2.forward(&out)?;
        match &self.shortcut {
            Some(short) => short.forward(&act)?.f_add(&out),
            None => x.f_add(&out),
        }
    }
}

#[derive(Debug)]
pub struct WideResNet {
    /// `wrn-<depth>-<width>`, as asked for.
    name: String,
    vs: VarStore,
    normalize: Normalize,
    conv1: Conv2d,
    groups: Vec<Vec<Block>>,
    bn1: BatchNorm2d,
    fc: Linear,
    noise: Noise,
    batches: AtomicI64,
}

const GROUP_POINTS: [&str; 3] = ["block1", "block2", "block3"];

impl WideResNet {
    /// `depth` must be 6n+4 (n ≥ 1) and `width` ≥ 1 ([`advsweep_core::Arch::parse`] checks).
    pub fn new(
        name: impl Into<String>,
        depth: i64,
        width: i64,
        device: Device,
        noise: Option<&NoiseConfig>,
    ) -> Result<WideResNet, TchError> {
        WideResNet::with_classes(name, (depth, width), device, noise, 10)
    }

    /// With `classes` outputs (the data's classes); `shape` is (depth, width).
    pub fn with_classes(
        name: impl Into<String>,
        (depth, width): (i64, i64),
        device: Device,
        noise: Option<&NoiseConfig>,
        classes: i64,
    ) -> Result<WideResNet, TchError> {
        if depth < 10 || (depth - 4) % 6 != 0 || width < 1 {
            return Err(TchError::Shape(format!(
                "WideResNet needs depth 6n+4 (n ≥ 1) and width ≥ 1, got depth {depth}, width {width}"
            )));
        }
        let n = (depth - 4) / 6;
        let vs = VarStore::new(device);
        let root = vs.root();
        let conv1 = conv(&root.sub("conv1"), 3, 16, 3, 1)?;
        let mut input = 16;
        let mut groups = Vec::new();
        for (g, (base, stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
            let output = base * width;
            let p = root.sub(format!("block{}", g + 1)).sub("layer");
            let mut blocks = Vec::new();
            for i in 0..n {
                let (inp, s) = if i == 0 { (input, stride) } else { (output, 1) };
                blocks.push(Block::new(&p.sub(i), inp, output, s)?);
            }
            groups.push(blocks);
            input = output;
        }
        let bn1 = BatchNorm2d::new(&root.sub("bn1"), input)?;
        let fc = Linear::zero_bias(&root.sub("fc"), input, classes)?;
        let noise = Noise::new(&root, noise)?;
        Ok(WideResNet {
            name: name.into(),
            normalize: Normalize::cifar10(device, Layout::RESIDUAL)?,
            vs,
            conv1,
            groups,
            bn1,
            fc,
            noise,
            batches: AtomicI64::new(0),
        })
    }
}

impl Classifier for WideResNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn weights(&self) -> &dyn Weights {
        &self.vs
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        count_batch(&self.batches, train);
        let n = &self.noise;
        let x = self.normalize.noisy_input(n, x)?;
        let mut out = n.apply("stem", self.conv1.forward(&x)?)?;
        for (blocks, point) in self.groups.iter().zip(GROUP_POINTS) {
            for block in blocks {
                out = block.forward(&out, train)?;
            }
            out = n.apply(point, out)?;
        }
        let out = self.bn1.forward(&out, train)?.f_relu()?;
        let out = avg_pool(&out, 8)?.f_flatten(1, -1)?;
        self.fc.forward(&out)
    }

    fn randomized(&self) -> bool {
        self.noise.randomized()
    }

    fn batches_tracked(&self) -> Option<&AtomicI64> {
        Some(&self.batches)
    }
}
