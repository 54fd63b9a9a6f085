//! The few layers the catalogue needs, built with fallible tch calls (bad input is an error,
//! never a panic) and named like their PyTorch counterparts: a convolution or linear layer
//! holds `weight` (and `bias`), a batch norm `weight`, `bias`, `running_mean`, `running_var`.
//! PyTorch's `num_batches_tracked` is not stored here: the model counts training forwards once
//! (see [`super::Classifier::batches_tracked`]) and [`crate::checkpoint`] writes it.

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

/// 2×2 max-pooling with stride 2.
pub fn max_pool2(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// `F.avg_pool2d(x, k)` (kernel = stride = `k`).
pub fn avg_pool(x: &Tensor, k: i64) -> Result<Tensor, TchError> {
    x.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None)
}
