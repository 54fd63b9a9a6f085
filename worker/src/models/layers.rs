//! The few layers the catalogue needs, built with fallible tch calls (bad input is an error,
//! never a panic) and named like their PyTorch counterparts: a convolution or linear layer
//! holds `weight` (and `bias`), a batch norm `weight`, `bias`, `running_mean`, `running_var`.
//! PyTorch's `num_batches_tracked` is not stored here: the model counts training forwards once
//! (see [`super::Classifier::batches_tracked`]) and [`crate::checkpoint`] writes it.
//!
//! A convolution followed by batch norm is a [`ConvBn`]: in eval mode it runs as one
//! convolution with the batch norm folded into its weight and bias, which is what makes PGD
//! evaluation (ten forward and backward passes per batch, all in eval mode) cheaper.

use std::sync::Mutex;

use tch::nn::{self, Init};
use tch::{TchError, Tensor};

/// How a convolution's weight is initialized.
#[derive(Debug, Clone, Copy)]
pub enum WeightInit {
    /// PyTorch's default for `nn.Conv2d`/`nn.Linear` (`kaiming_uniform_(a=√5)`): uniform
    /// ±1/√fan_in; the bias (if any) likewise.
    Torch,
    /// WideResNet's: normal(0, √(2 / (k·k·out_channels))).
    HeFanOut,
}

fn torch_uniform(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 2-D convolution with square kernel, stride and padding.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

/// Shape and options of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub bias: bool,
    pub init: WeightInit,
}

impl ConvSpec {
    /// `k`×`k` convolution, stride 1, "same" padding for odd `k`, no bias, PyTorch init.
    pub fn new(in_channels: i64, out_channels: i64, kernel: i64) -> ConvSpec {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            bias: false,
            init: WeightInit::Torch,
        }
    }
    pub fn stride(self, stride: i64) -> ConvSpec {
        ConvSpec { stride, ..self }
    }
    pub fn padding(self, padding: i64) -> ConvSpec {
        ConvSpec { padding, ..self }
    }
    pub fn bias(self, bias: bool) -> ConvSpec {
        ConvSpec { bias, ..self }
    }
    pub fn init(self, init: WeightInit) -> ConvSpec {
        ConvSpec { init, ..self }
    }
}

impl Conv2d {
    /// Creates `p.weight` (and `p.bias`), drawing the weight first, then the bias.
    pub fn new(p: &nn::Path<'_>, spec: ConvSpec) -> Result<Conv2d, TchError> {
        let shape = [
            spec.out_channels,
            spec.in_channels,
            spec.kernel,
            spec.kernel,
        ];
        let fan_in = spec.in_channels * spec.kernel * spec.kernel;
        let weight_init = match spec.init {
            WeightInit::Torch => torch_uniform(fan_in),
            WeightInit::HeFanOut => Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (spec.kernel * spec.kernel * spec.out_channels).max(1) as f64).sqrt(),
            },
        };
        let weight = p.f_var("weight", &shape, weight_init)?;
        let bias = if spec.bias {
            let init = match spec.init {
                WeightInit::Torch => torch_uniform(fan_in),
                WeightInit::HeFanOut => Init::Const(0.0),
            };
            Some(p.f_var("bias", &[spec.out_channels], init)?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

/// A fully connected layer, `weight [out, in]` and `bias [out]`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    /// PyTorch's default initialization (uniform ±1/√in for weight and bias).
    pub fn new(p: &nn::Path<'_>, inputs: i64, outputs: i64) -> Result<Linear, TchError> {
        let init = torch_uniform(inputs);
        Ok(Linear {
            weight: p.f_var("weight", &[outputs, inputs], init)?,
            bias: p.f_var("bias", &[outputs], init)?,
        })
    }

    /// PyTorch's default weight, zero bias (WideResNet).
    pub fn zero_bias(p: &nn::Path<'_>, inputs: i64, outputs: i64) -> Result<Linear, TchError> {
        Ok(Linear {
            weight: p.f_var("weight", &[outputs, inputs], torch_uniform(inputs))?,
            bias: p.f_var("bias", &[outputs], Init::Const(0.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, Some(&self.bias))
    }
}

/// PyTorch's `BatchNorm2d` defaults: momentum 0.1, eps 1e-5, affine weight 1 and bias 0.
pub const BN_MOMENTUM: f64 = 0.1;
pub const BN_EPS: f64 = 1e-5;

/// `nn.BatchNorm2d`: in training mode normalizes with the batch statistics and updates the
/// running ones in place (momentum 0.1, unbiased variance, as PyTorch); in eval mode uses the
/// running statistics.
#[derive(Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
}

impl BatchNorm2d {
    pub fn new(p: &nn::Path<'_>, channels: i64) -> Result<BatchNorm2d, TchError> {
        Ok(BatchNorm2d {
            weight: p.f_var("weight", &[channels], Init::Const(1.0))?,
            bias: p.f_var("bias", &[channels], Init::Const(0.0))?,
            running_mean: p.f_zeros_no_train("running_mean", &[channels])?,
            running_var: p.f_ones_no_train("running_var", &[channels])?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }
}

/// A convolution followed by batch norm (`bn(conv(x))`), the pair ResNet, VGG and DnCNN are
/// built from.
///
/// In training mode it is exactly the two layers. In eval mode batch norm is a fixed per-channel
/// affine map, so the pair is one convolution with weight `w·γ/√(σ²+ε)` and bias
/// `β + (b − μ)·γ/√(σ²+ε)`: the same function (to float rounding, ~1e-7 relative), one pass
/// over the activations instead of two, forward and backward. The folded weight and bias are
/// computed once and kept until any of the six tensors they come from changes: a training-mode
/// forward (which updates the running statistics) drops them, and every eval-mode call compares
/// each tensor's storage address and autograd version counter, which in-place writes bump (an
/// optimizer step — [`crate::optim::Optim`] bumps them for its flat buffer too —, a checkpoint
/// loaded into them).
///
/// The folded tensors are detached: an eval-mode output is differentiable in its input (what
/// attacks need) but not in the parameters. Nothing trains through eval mode.
#[derive(Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
    folded: Mutex<Option<Folded>>,
}

#[derive(Debug)]
struct Folded {
    weight: Tensor,
    bias: Tensor,
    sources: Vec<(usize, i64)>,
}

impl ConvBn {
    pub fn new(conv: Conv2d, bn: BatchNorm2d) -> ConvBn {
        ConvBn {
            conv,
            bn,
            folded: Mutex::new(None),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut folded = self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if train {
            // Batch norm updates its running statistics inside the kernel, which does not bump
            // their version counters: forget the folded pair here instead.
            *folded = None;
            return self.bn.forward(&self.conv.forward(x)?, true);
        }
        let sources = self.sources()?;
        if folded.as_ref().is_none_or(|f| f.sources != sources) {
            *folded = Some(self.fold(sources)?);
        }
        let Some(f) = folded.as_ref() else {
            return Err(TchError::Torch("batch norm was not folded".into()));
        };
        x.f_conv2d(
            &f.weight,
            Some(&f.bias),
            [self.conv.stride, self.conv.stride],
            [self.conv.padding, self.conv.padding],
            [1, 1],
            1,
        )
    }

    /// Address and version of every tensor the folded pair is computed from.
    fn sources(&self) -> Result<Vec<(usize, i64)>, TchError> {
        let bn = &self.bn;
        [
            &self.conv.weight,
            &bn.weight,
            &bn.bias,
            &bn.running_mean,
            &bn.running_var,
        ]
        .into_iter()
        .chain(self.conv.bias.as_ref())
        .map(|t| Ok((t.data_ptr() as usize, t.f_internal_version()?)))
        .collect()
    }

    fn fold(&self, sources: Vec<(usize, i64)>) -> Result<Folded, TchError> {
        let bn = &self.bn;
        tch::no_grad(|| {
            let scale = bn
                .weight
                .f_div(&bn.running_var.f_add_scalar(BN_EPS)?.f_sqrt()?)?;
            let weight = self.conv.weight.f_mul(&scale.f_view([-1, 1, 1, 1])?)?;
            let shift = match &self.conv.bias {
                Some(b) => b.f_sub(&bn.running_mean)?,
                None => bn.running_mean.f_neg()?,
            };
            let bias = bn.bias.f_add(&shift.f_mul(&scale)?)?;
            Ok(Folded {
                weight: weight.f_detach()?,
                bias: bias.f_detach()?,
                sources,
            })
        })
    }
}

/// 2×2 max-pooling with stride 2.
pub fn max_pool2(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// `F.avg_pool2d(x, k)` (kernel = stride = `k`).
pub fn avg_pool(x: &Tensor, k: i64) -> Result<Tensor, TchError> {
    x.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn pair(bias: bool) -> (nn::VarStore, ConvBn) {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let conv = Conv2d::new(
            &root.sub("conv"),
            ConvSpec::new(3, 8, 3).stride(2).bias(bias),
        )
        .unwrap();
        let bn = BatchNorm2d::new(&root.sub("bn"), 8).unwrap();
        tch::no_grad(|| {
            // Statistics and affine parameters away from the identity, as after training.
            let _ = bn.running_mean.shallow_clone().uniform_(-0.5, 0.5);
            let _ = bn.running_var.shallow_clone().uniform_(0.2, 3.0);
            let _ = bn.weight.shallow_clone().uniform_(0.5, 1.5);
            let _ = bn.bias.shallow_clone().uniform_(-0.5, 0.5);
        });
        (vs, ConvBn::new(conv, bn))
    }

    fn two_layers(p: &ConvBn, x: &Tensor) -> Tensor {
        p.bn.forward(&p.conv.forward(x).unwrap(), false).unwrap()
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from(a.f_sub(b).unwrap().abs().max()).unwrap()
    }

    #[test]
    fn eval_mode_is_the_two_layers_folded_into_one() {
        for bias in [false, true] {
            let (_vs, p) = pair(bias);
            let x = Tensor::rand([4, 3, 16, 16], (Kind::Float, Device::Cpu));
            let folded = p.forward(&x, false).unwrap();
            assert_eq!(folded.size(), [4, 8, 8, 8]);
            assert!(
                max_difference(&folded, &two_layers(&p, &x)) < 1e-5,
                "bias {bias}"
            );
        }
    }

    #[test]
    fn the_input_gradient_is_the_two_layers_gradient() {
        let (_vs, p) = pair(true);
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let grad = |out: Tensor| {
            let loss = out.square().sum(Kind::Float);
            Tensor::run_backward(&[&loss], &[&x], false, false).remove(0)
        };
        let folded = grad(p.forward(&x, false).unwrap());
        let plain = grad(two_layers(&p, &x));
        assert!(max_difference(&folded, &plain) < 1e-4);
    }

    #[test]
    fn eval_mode_follows_every_change_to_the_weights_and_statistics() {
        let (_vs, p) = pair(true);
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let first = p.forward(&x, false).unwrap();
        let sources = [
            &p.conv.weight,
            p.conv.bias.as_ref().unwrap(),
            &p.bn.weight,
            &p.bn.bias,
            &p.bn.running_mean,
            &p.bn.running_var,
        ];
        for (i, t) in sources.into_iter().enumerate() {
            // In place, as an optimizer step or a checkpoint load writes them.
            tch::no_grad(|| {
                let _ = t.shallow_clone().f_mul_scalar_(1.5).unwrap();
            });
            let now = p.forward(&x, false).unwrap();
            assert!(
                max_difference(&now, &two_layers(&p, &x)) < 1e-5,
                "source {i}"
            );
            assert!(
                max_difference(&now, &first) > 1e-3,
                "source {i} changed the output"
            );
        }
        // A training-mode forward updates the running statistics; eval mode sees them.
        let _ = p.forward(&x, true).unwrap();
        let now = p.forward(&x, false).unwrap();
        assert!(max_difference(&now, &two_layers(&p, &x)) < 1e-5);
    }

    #[test]
    fn eval_mode_follows_optimizer_steps() {
        use advsweep_core::Optimizer;
        for spec in [
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: false,
            },
            Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                weight_decay: 0.0,
            },
        ] {
            let (vs, p) = pair(true);
            let mut opt = crate::optim::Optim::new(vs.trainable_variables(), &spec, 0.1).unwrap();
            let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
            for step in 0..3 {
                let loss = p.forward(&x, true).unwrap().square().mean(Kind::Float);
                opt.zero_grad();
                loss.backward();
                // An eval-mode pass between the backward pass and the step (folds the old weights).
                let before = p.forward(&x, false).unwrap();
                opt.step().unwrap();
                let after = p.forward(&x, false).unwrap();
                assert!(
                    max_difference(&after, &two_layers(&p, &x)) < 1e-5,
                    "{spec:?} step {step}"
                );
                assert!(
                    max_difference(&after, &before) > 1e-4,
                    "{spec:?} step {step}"
                );
            }
        }
    }

    #[test]
    fn training_mode_is_exactly_the_two_layers() {
        let (_vs, p) = pair(false);
        let x = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let (_vs2, q) = pair(false);
        tch::no_grad(|| {
            q.conv.weight.shallow_clone().copy_(&p.conv.weight);
            q.bn.weight.shallow_clone().copy_(&p.bn.weight);
            q.bn.bias.shallow_clone().copy_(&p.bn.bias);
        });
        let expected = q.bn.forward(&q.conv.forward(&x).unwrap(), true).unwrap();
        assert!(p.forward(&x, true).unwrap().equal(&expected));
    }
}
