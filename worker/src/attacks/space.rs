//! The space an attack's iterates live in, given by the budget's [`EpsilonSpace`]: pixels, or
//! inputs after the models' CIFAR-10 normalization.
//!
//! Every attack works on iterates `z` in this space and never on pixels directly, so that one
//! step and one projection serve both spaces: [`Frame`] maps images to `z` and back, gives the
//! model's input for an iterate, and clamps to the image box as it looks in this space. Kept
//! apart from the budget geometry ([`super::budget`]) and the norms ([`super::norms`]), which
//! both build on it.

use advsweep_core::EpsilonSpace;
use tch::Tensor;

use crate::models::{CIFAR10_MEAN, CIFAR10_STD};

/// The space the attack's iterates live in: pixels, or normalized inputs.
pub(super) enum Frame {
    Pixel,
    /// `z = (x − mean) / std`, box `[lo, hi]` per channel; all `[1, C, 1, 1]`.
    Normalized {
        mean: Tensor,
        std: Tensor,
        lo: Tensor,
        hi: Tensor,
    },
}

impl Frame {
    pub(super) fn new(space: EpsilonSpace, x: &Tensor) -> anyhow::Result<Frame> {
        match space {
            EpsilonSpace::Pixel => Ok(Frame::Pixel),
            EpsilonSpace::Normalized => {
                let channels = x.size().get(1).copied().unwrap_or(0);
                if x.dim() != 4 || channels != 3 {
                    anyhow::bail!(
                        "normalized-space budgets need [N, 3, H, W] images, got {:?}",
                        x.size()
                    );
                }
                let stat = |v: &[f32; 3]| -> Result<Tensor, tch::TchError> {
                    Tensor::f_from_slice(v)?
                        .f_view([1, 3, 1, 1])?
                        .f_to_device(x.device())
                };
                let mean = stat(&CIFAR10_MEAN)?;
                let std = stat(&CIFAR10_STD)?;
                let lo = mean.f_neg()?.f_div(&std)?;
                let hi = mean.f_neg()?.f_add_scalar(1.0)?.f_div(&std)?;
                Ok(Frame::Normalized { mean, std, lo, hi })
            }
        }
    }

    pub(super) fn to_z(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => Ok(x.shallow_clone()),
            Frame::Normalized { mean, std, .. } => x.f_sub(mean)?.f_div(std),
        }
    }

    /// The model's input for iterate `z` (differentiable; no clamping).
    pub(super) fn model_input(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => Ok(z.shallow_clone()),
            Frame::Normalized { mean, std, .. } => z.f_mul(std)?.f_add(mean),
        }
    }

    /// The final adversarial image for iterate `z`, in [0, 1].
    pub(super) fn to_pixels(&self, z: &Tensor) -> anyhow::Result<Tensor> {
        Ok(match self {
            Frame::Pixel => z.f_detach()?,
            // Already inside the box up to rounding; the clamp removes the rounding.
            Frame::Normalized { .. } => self.model_input(z)?.f_clamp(0.0, 1.0)?.f_detach()?,
        })
    }

    /// Clamps `z` to the image box of this space.
    pub(super) fn clamp_box(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => z.f_clamp(0.0, 1.0),
            Frame::Normalized { lo, hi, .. } => z.f_clamp_tensor(Some(lo), Some(hi)),
        }
    }
}

/// The space's name in messages.
pub(super) fn space_name(space: EpsilonSpace) -> &'static str {
    match space {
        EpsilonSpace::Pixel => "pixel",
        EpsilonSpace::Normalized => "normalized",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{inputs, max_abs_diff};
    use tch::{Device, Kind};

    #[test]
    fn normalized_frame_round_trips_and_bounds_the_box() -> anyhow::Result<()> {
        let (x, _) = inputs(3)?;
        let frame = Frame::new(EpsilonSpace::Normalized, &x)?;
        let z = frame.to_z(&x)?;
        assert!(max_abs_diff(&frame.to_pixels(&z)?, &x)? < 1e-6);
        // Clamping to the box in z is clamping the pixels to [0, 1].
        let far = z.f_mul_scalar(100.0)?;
        let boxed = frame.to_pixels(&frame.clamp_box(&far)?)?;
        let expected = frame.model_input(&far)?.f_clamp(0.0, 1.0)?;
        assert!(max_abs_diff(&boxed, &expected)? < 1e-5);
        assert!(f64::try_from(expected.f_sub(&x)?.f_abs()?.f_max()?)? > 0.1);
        let bad = Tensor::f_rand([2, 1, 8, 8], (Kind::Float, Device::Cpu))?;
        assert!(Frame::new(EpsilonSpace::Normalized, &bad).is_err());
        Ok(())
    }
}
