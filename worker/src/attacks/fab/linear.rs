//! A linear classifier for FAB's tests, `f(x) = W x + c` on 3×4×4 images: every linearization
//! of it is exact, so the closest decision boundary of an image and its smallest adversarial
//! perturbation are known in closed form.

use tch::{Device, Kind, Tensor};

use crate::models::basic::BasicNet;
use crate::models::{Classifier, Weights};

/// Coordinates of an image (3×4×4).
pub(super) const DIMS: i64 = 48;

pub(super) struct Linear {
    /// Only for [`Classifier::weights`]; the forward pass is `W x + c`.
    base: BasicNet,
    /// `[C, D]`.
    pub w: Tensor,
    /// `[C]`.
    pub c: Tensor,
}

impl Linear {
    /// `classes` random rows of `W`; row k keeps a different share of its coordinates (20 % to
    /// all), so that the ℓ1- and the ℓ2-closest boundaries differ for some images.
    pub(super) fn new(classes: i64, seed: i64) -> anyhow::Result<Linear> {
        tch::manual_seed(seed);
        let options = (Kind::Float, Device::Cpu);
        let share = Tensor::f_linspace(0.2, 1.0, classes, options)?.f_view([classes, 1])?;
        let keep = Tensor::f_rand([classes, DIMS], options)?.f_lt_tensor(&share)?;
        let w = Tensor::f_randn([classes, DIMS], options)?.f_mul(&keep.f_to_kind(Kind::Float)?)?;
        let c = Tensor::f_randn([classes], options)?.f_mul_scalar(0.5)?;
        Ok(Linear {
            base: BasicNet::new(Device::Cpu)?,
            w,
            c,
        })
    }

    /// `n` images in [0.3, 0.7] (far enough from the box that small perturbations stay inside)
    /// labelled with the model's own predictions, so every one is classified correctly.
    pub(super) fn images(&self, n: i64, seed: i64) -> anyhow::Result<(Tensor, Tensor)> {
        tch::manual_seed(seed);
        let x = Tensor::f_rand([n, 3, 4, 4], (Kind::Float, Device::Cpu))?
            .f_mul_scalar(0.4)?
            .f_add_scalar(0.3)?;
        let y = tch::no_grad(|| self.forward(&x, false))?.f_argmax(1, false)?;
        Ok((x, y))
    }

    /// Per image (`[N, 3, 4, 4]`, labels `[N]`), the smallest ℓp perturbation that changes
    /// the prediction when the box does not interfere: `min_{k≠y} |g_k| / ‖W_k − W_y‖_q`, in
    /// f64.
    pub(super) fn minimal_distances(
        &self,
        x: &Tensor,
        y: &Tensor,
        dual_l1: bool,
    ) -> anyhow::Result<Vec<f64>> {
        let n = x.size().first().copied().unwrap_or(0);
        let w = self.w.f_to_kind(Kind::Double)?;
        let logits = x
            .f_reshape([n, -1])?
            .f_to_kind(Kind::Double)?
            .f_matmul(&w.f_tr()?)?
            .f_add(&self.c.f_to_kind(Kind::Double)?)?;
        let classes = w.size().first().copied().unwrap_or(0);
        let labels = Vec::<i64>::try_from(y)?;
        let mut out = Vec::with_capacity(labels.len());
        for (i, &label) in labels.iter().enumerate() {
            let i = i as i64;
            let mut best = f64::INFINITY;
            for k in (0..classes).filter(|&k| k != label) {
                let direction = w.get(k).f_sub(&w.get(label))?;
                let dual = if dual_l1 {
                    f64::try_from(direction.f_abs()?.f_sum(Kind::Double)?)?
                } else {
                    f64::try_from(direction.f_square()?.f_sum(Kind::Double)?)?.sqrt()
                };
                let gap = f64::try_from(logits.get(i).get(k).f_sub(&logits.get(i).get(label))?)?;
                best = best.min(gap.abs() / dual);
            }
            out.push(best);
        }
        Ok(out)
    }
}

impl Classifier for Linear {
    fn name(&self) -> &str {
        "linear"
    }

    fn weights(&self) -> &dyn Weights {
        self.base.weights()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, tch::TchError> {
        let n = x.size().first().copied().unwrap_or(0);
        x.f_reshape([n, -1])?
            .f_matmul(&self.w.f_tr()?)?
            .f_add(&self.c)
    }
}
