//! The reference's sanity checks before trusting a gradient-based evaluation (AutoAttack,
//! Croce & Hein 2020, `checks.py`): run on one batch of every AutoAttack-family cell, each
//! turned into a warning stored with the cell's result, never a silent correction.
//!
//! - **Randomness the evaluation does not know about**: two forward passes of the same inputs
//!   through a model evaluated as deterministic (no EOT, not the rand version) must give the
//!   same logits. If they differ, the model draws noise somewhere advsweep does not model, and
//!   every gradient the attacks follow is one sample of it.
//! - **Zero input gradients**: an image whose loss gradient with respect to the input is zero
//!   everywhere cannot be moved by a gradient-based attack; its "robustness" is an artefact
//!   (saturated softmax, a non-differentiable layer, gradient masking).

use tch::{Kind, Reduction, Tensor};

use crate::models::Classifier;

/// Logits that differ by more than this fraction of their largest magnitude count as
/// different (floating-point reductions on a GPU may differ in the last bits).
const RELATIVE_TOLERANCE: f64 = 1e-4;

/// A warning when two forward passes of `x` through `model` (taken to be deterministic)
/// give different logits; `None` for a model that declares itself randomized (its noise is
/// averaged over by EOT).
pub fn hidden_randomness(model: &dyn Classifier, x: &Tensor) -> anyhow::Result<Option<String>> {
    if model.randomized() {
        return Ok(None);
    }
    let (first, second) = tch::no_grad(|| -> anyhow::Result<(Tensor, Tensor)> {
        Ok((model.forward(x, false)?, model.forward(x, false)?))
    })?;
    let scale = first.f_abs()?.f_max()?.double_value(&[]).max(1e-12);
    let differ = (&first - &second).f_abs()?.f_max()?.double_value(&[]);
    Ok((differ > RELATIVE_TOLERANCE * scale).then(|| {
        format!(
            "the model's logits differ between two forward passes of the same images (by up to \
             {differ:.3e}, {:.2} % of their largest) though it is evaluated as deterministic: \
             it draws noise the attacks do not average over; evaluate it with eot or the rand \
             version",
            100.0 * differ / scale
        )
    }))
}

/// A warning when some images of `x` have an all-zero cross-entropy gradient with respect to
/// the input (model in eval mode).
pub fn zero_gradients(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
) -> anyhow::Result<Option<String>> {
    let input = x.detach().set_requires_grad(true);
    let logits = model.forward(&input, false)?;
    let loss = logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0)?;
    let n = x.size().first().copied().unwrap_or(0);
    // A model that detaches its input (or computes it without autograd) leaves the input out
    // of the graph: no gradient reaches any image.
    let zero = match Tensor::f_run_backward(&[loss], &[&input], false, false) {
        Ok(mut grads) => {
            let grad = grads
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no input gradient"))?;
            if !grad.defined() {
                return Ok(Some(zero_gradient_warning(n, n)));
            }
            let per_image = grad
                .f_abs()?
                .f_reshape([n, -1])?
                .f_amax([1i64].as_slice(), false)?;
            i64::try_from(per_image.f_eq(0.0)?.f_sum(Kind::Int64)?)?
        }
        Err(e) if e.to_string().contains("not have been used in the graph") => n,
        Err(e) => return Err(e.into()),
    };
    Ok((zero > 0).then(|| zero_gradient_warning(zero, n)))
}

fn zero_gradient_warning(zero: i64, n: i64) -> String {
    format!(
        "{zero} of {n} images ({:.1} %) have an all-zero input gradient: gradient-based attacks \
         cannot move them, so their robustness is overestimated (gradient masking: a saturated \
         softmax, a non-differentiable layer, an input the model detaches)",
        100.0 * zero as f64 / n.max(1) as f64
    )
}

/// Both checks on one batch; the warnings found, in order.
pub fn sanity(model: &dyn Classifier, x: &Tensor, y: &Tensor) -> anyhow::Result<Vec<String>> {
    Ok([hidden_randomness(model, x)?, zero_gradients(model, x, y)?]
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{self, Weights};
    use tch::Device;

    /// BasicNet with something added to its forward pass.
    struct Altered {
        inner: Box<dyn Classifier>,
        noisy: bool,
        detached: bool,
    }

    impl Classifier for Altered {
        fn name(&self) -> &str {
            "altered"
        }
        fn weights(&self) -> &dyn Weights {
            self.inner.weights()
        }
        fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
            let x = if self.detached {
                x.detach()
            } else {
                x.shallow_clone()
            };
            let x = if self.noisy {
                &x + x.f_randn_like()? * 0.1
            } else {
                x
            };
            self.inner.forward(&x, train)
        }
        fn randomized(&self) -> bool {
            false // what it claims, whatever it does
        }
    }

    fn model(noisy: bool, detached: bool) -> anyhow::Result<Altered> {
        Ok(Altered {
            inner: models::build("basic", Device::Cpu)?,
            noisy,
            detached,
        })
    }

    fn batch() -> (Tensor, Tensor) {
        let x = Tensor::rand([8, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        (x, y)
    }

    #[test]
    fn a_plain_model_passes_both_checks() -> anyhow::Result<()> {
        let (x, y) = batch();
        assert!(sanity(&model(false, false)?, &x, &y)?.is_empty());
        Ok(())
    }

    #[test]
    fn noise_in_a_model_taken_as_deterministic_is_reported() -> anyhow::Result<()> {
        let (x, _) = batch();
        let warning = hidden_randomness(&model(true, false)?, &x)?.expect("a warning");
        assert!(
            warning.contains("differ between two forward passes"),
            "{warning}"
        );
        Ok(())
    }

    #[test]
    fn a_model_that_hides_its_gradients_is_reported() -> anyhow::Result<()> {
        let (x, y) = batch();
        let warning = zero_gradients(&model(false, true)?, &x, &y)?.expect("a warning");
        assert!(warning.starts_with("8 of 8 images (100.0 %)"), "{warning}");
        Ok(())
    }
}
