//! Which decision boundary a FAB step linearizes, and its linearization at the current point.
//!
//! A boundary between the label `y` and a class `k` is the zero set of the logit difference
//! `g_k = f_k − f_y` (positive once `k` wins over the label). At the current point x⁽ⁱ⁾ its
//! first-order model is the hyperplane `⟨∇g_k, u − x⁽ⁱ⁾⟩ + g_k(x⁽ⁱ⁾) = 0`.
//!
//! * FAB-T ([`Boundary::Towards`]) follows one target class per image: one forward and one
//!   backward pass of `g_t` per step, through [`Target::query`] (EOT-averaged).
//! * Untargeted FAB ([`Boundary::Closest`]) linearizes every class's boundary each step and takes,
//!   per image, the one whose hyperplane is closest: the ℓp distance from x⁽ⁱ⁾ to
//!   `{u : ⟨∇g_k, u − x⁽ⁱ⁾⟩ + g_k = 0}` is `|g_k| / ‖∇g_k‖_q`, with `q` the dual norm (ℓ1 for
//!   an ℓ∞ attack, ℓ2 for ℓ2), minimized over `k ≠ y` ([`closest`]). The gradients of all
//!   differences come from one forward pass and one backward pass per class over its retained
//!   graph ([`all_differences`]), gradients with respect to the input only, as the reference
//!   computes them; on a randomized model, differences and gradients are averaged over the
//!   target's gradient samples, each a fresh forward pass.

use advsweep_core::Norm;
use tch::{Kind, Tensor};

use crate::attacks::dlr::as_float;
use crate::attacks::eot::{Target, repeat_labels};

/// Added to the dual norm of a gradient before dividing by it, as the reference does, so that
/// a class whose difference has a zero gradient is far rather than a division by zero.
const NORM_FLOOR: f64 = 1e-12;

/// The boundary a FAB run steps towards.
pub(super) enum Boundary {
    /// FAB-T: per image the boundary with its target class (`i64 [N]`).
    Towards(Tensor),
    /// Untargeted FAB: per image and step the closest linearized boundary of all classes,
    /// with `samples` forward passes per step (EOT; 1 for a deterministic model).
    Closest { samples: i64 },
}

impl Boundary {
    /// The linearized boundary at `z` (images `[N, …]`) for labels `y`, as rows: the gradient
    /// `w` (`[N, D]`) and the value `g` (`[N]`) of the chosen logit difference, so that the
    /// hyperplane is `⟨w, u⟩ = ⟨w, z⟩ − g`.
    pub(super) fn linearize(
        &self,
        target: &Target<'_>,
        z: &Tensor,
        y: &Tensor,
        norm: Norm,
    ) -> anyhow::Result<(Tensor, Tensor)> {
        let n = z.size().first().copied().unwrap_or(0);
        match self {
            Boundary::Towards(targets) => {
                let difference = |logits: &Tensor, copies: i64| -> Result<Tensor, tch::TchError> {
                    let logits = as_float(logits)?;
                    let pick = |labels: &Tensor| -> Result<Tensor, tch::TchError> {
                        logits
                            .f_gather(1, &repeat_labels(labels, copies)?.f_unsqueeze(1)?, false)?
                            .f_squeeze_dim(1)
                    };
                    pick(targets)?.f_sub(&pick(y)?)
                };
                let q = target.query(z, &difference, true)?;
                let grad = q.grad.ok_or_else(|| anyhow::anyhow!("no gradient"))?;
                Ok((grad.f_reshape([n, -1])?, q.loss))
            }
            Boundary::Closest { samples } => {
                let (differences, gradients) = all_differences(target, z, y, *samples)?;
                Ok(closest(&differences, &gradients, norm)?)
            }
        }
    }
}

/// All logit differences `f_k − f_y` at `z` (`[N, C]`, the label's own entry +∞ so that it is
/// never the closest) and their input gradients (`[N, C, D]`), averaged over `samples` forward
/// passes. One forward pass per sample, then one backward pass per class over the retained
/// graph (`Σ_n (f_k − f_y)(z_n)`, whose gradient row n is image n's own: the model runs in
/// the target's mode, eval for evaluation, where images do not interact).
pub(super) fn all_differences(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    samples: i64,
) -> anyhow::Result<(Tensor, Tensor)> {
    let n = z.size().first().copied().unwrap_or(0);
    let samples = samples.max(1);
    let z = z.f_detach()?.f_set_requires_grad(true)?;
    let mut differences: Option<Tensor> = None;
    let mut gradients: Option<Tensor> = None;
    for _ in 0..samples {
        let logits = as_float(&target.logits(&z)?)?;
        let classes = logits.size().get(1).copied().unwrap_or(0);
        let label = y.f_one_hot(classes)?.f_to_kind(Kind::Float)?;
        let label_logit =
            logits
                .f_mul(&label)?
                .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?;
        let label_total = label_logit.f_sum(Kind::Float)?;
        let mut per_class = Vec::with_capacity(usize::try_from(classes).unwrap_or(0));
        for k in 0..classes {
            let total = logits
                .f_select(1, k)?
                .f_sum(Kind::Float)?
                .f_sub(&label_total)?;
            let keep_graph = k + 1 < classes;
            let mut grads = Tensor::f_run_backward(&[&total], &[&z], keep_graph, false)?;
            let grad = grads
                .pop()
                .ok_or_else(|| anyhow::anyhow!("autograd returned no input gradient"))?;
            per_class.push(grad.f_reshape([n, -1])?);
        }
        let sample_gradients = Tensor::f_stack(&per_class, 1)?;
        let sample_differences = logits.f_detach()?.f_sub(&label_logit.f_detach()?)?;
        differences = Some(match differences {
            None => sample_differences,
            Some(sum) => sum.f_add(&sample_differences)?,
        });
        gradients = Some(match gradients {
            None => sample_gradients,
            Some(sum) => sum.f_add(&sample_gradients)?,
        });
    }
    let (Some(differences), Some(gradients)) = (differences, gradients) else {
        anyhow::bail!("no forward pass was made");
    };
    let (differences, gradients) = if samples > 1 {
        (
            differences.f_div_scalar(samples as f64)?,
            gradients.f_div_scalar(samples as f64)?,
        )
    } else {
        (differences, gradients)
    };
    let label_mask = y.f_unsqueeze(1)?;
    let differences = differences.f_scatter_value(1, &label_mask, f64::INFINITY)?;
    Ok((differences, gradients))
}

/// Per image, the linearized boundary closest in `norm`: with differences `g` (`[N, C]`, the
/// label's +∞) and their gradients `w` (`[N, C, D]`), the class `k` minimizing
/// `|g_k| / (‖w_k‖_q + 10⁻¹²)` (`q` = 1 for ℓ∞, 2 for ℓ2), returned as `w_k` (`[N, D]`) and
/// `g_k` (`[N]`).
pub(super) fn closest(
    differences: &Tensor,
    gradients: &Tensor,
    norm: Norm,
) -> Result<(Tensor, Tensor), tch::TchError> {
    let dims = gradients.size().get(2).copied().unwrap_or(0);
    let dual = match norm {
        Norm::Linf => {
            gradients
                .f_abs()?
                .f_sum_dim_intlist([2i64].as_slice(), false, Kind::Float)?
        }
        Norm::L2 => gradients.f_norm_scalaropt_dim(2, [2i64].as_slice(), false)?,
    };
    let distance = differences
        .f_abs()?
        .f_div(&dual.f_add_scalar(NORM_FLOOR)?)?;
    let class = distance.f_argmin(1, true)?;
    let value = differences.f_gather(1, &class, false)?.f_squeeze_dim(1)?;
    let rows = gradients
        .f_gather(
            1,
            &class.f_unsqueeze(2)?.f_expand([-1, 1, dims], false)?,
            false,
        )?
        .f_squeeze_dim(1)?;
    Ok((rows, value))
}

#[cfg(test)]
mod tests {
    use super::super::linear::Linear;
    use super::*;
    use crate::attacks::space::Frame;

    /// `|a − b|` at most `tol` everywhere.
    fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
        f64::try_from(a.f_sub(b).unwrap().f_abs().unwrap().f_max().unwrap()).unwrap() <= tol
    }

    /// On a linear model f(x) = W x + c every linearization is exact: the differences and
    /// gradients are `(W_k − W_y) x + c_k − c_y` and `W_k − W_y`, whatever the number of
    /// samples, and the closest boundary is the class minimizing the exact ℓp distance
    /// `|g_k| / ‖W_k − W_y‖_q`, computed here independently per image in f64.
    #[test]
    fn the_closest_boundary_is_the_analytic_one() -> anyhow::Result<()> {
        let model = Linear::new(10, 5)?;
        let (x, y) = model.images(64, 6)?;
        let frame = Frame::Pixel;
        let target = Target::new(&model, &frame, false, 1);
        let (d1, g1) = tch::with_grad(|| all_differences(&target, &x, &y, 1))?;
        let (d3, g3) = tch::with_grad(|| all_differences(&target, &x, &y, 3))?;
        assert!(
            close(&g1, &g3, 1e-5)
                && close(
                    &d1.f_nan_to_num(0.0, 0.0, 0.0)?,
                    &d3.f_nan_to_num(0.0, 0.0, 0.0)?,
                    1e-4
                )
        );
        let w = model.w.f_to_kind(Kind::Double)?;
        let c = model.c.f_to_kind(Kind::Double)?;
        let rows = x.f_reshape([64, -1])?.f_to_kind(Kind::Double)?;
        let logits = rows.f_matmul(&w.f_tr()?)?.f_add(&c)?;
        let labels = Vec::<i64>::try_from(&y)?;
        let mut chosen_differ = false;
        for norm in [Norm::Linf, Norm::L2] {
            let (w_chosen, g_chosen) = closest(&d1, &g1, norm)?;
            for (i, &label) in labels.iter().enumerate() {
                let i = i as i64;
                let mut best = (f64::INFINITY, 0i64);
                for k in 0..10 {
                    if k == label {
                        // The label's own difference is never a boundary.
                        assert!(f64::try_from(d1.get(i).get(k))?.is_infinite());
                        continue;
                    }
                    let direction = w.get(k).f_sub(&w.get(label))?;
                    assert!(close(
                        &g1.get(i).get(k).f_to_kind(Kind::Double)?,
                        &direction,
                        1e-5
                    ));
                    let value =
                        f64::try_from(logits.get(i).get(k).f_sub(&logits.get(i).get(label))?)?;
                    assert!((f64::try_from(d1.get(i).get(k))? - value).abs() < 1e-4);
                    let dual = match norm {
                        Norm::Linf => f64::try_from(direction.f_abs()?.f_sum(Kind::Double)?)?,
                        Norm::L2 => {
                            f64::try_from(direction.f_square()?.f_sum(Kind::Double)?)?.sqrt()
                        }
                    };
                    let distance = value.abs() / dual;
                    if distance < best.0 {
                        best = (distance, k);
                    }
                }
                let k = best.1;
                let expected = w.get(k).f_sub(&w.get(label))?;
                assert!(
                    close(&w_chosen.get(i).f_to_kind(Kind::Double)?, &expected, 1e-5),
                    "{norm:?} image {i}: expected class {k}"
                );
                let value = f64::try_from(logits.get(i).get(k).f_sub(&logits.get(i).get(label))?)?;
                assert!((f64::try_from(g_chosen.get(i))? - value).abs() < 1e-4);
                // The ℓ1-closest and the ℓ2-closest class differ for some images here, so the
                // dual norm matters.
                if norm == Norm::L2 {
                    let (w_linf, _) = closest(&d1, &g1, Norm::Linf)?;
                    chosen_differ |= !close(&w_linf.get(i), &w_chosen.get(i), 1e-6);
                }
            }
        }
        assert!(chosen_differ, "the test model should tell ℓ1 and ℓ2 apart");
        Ok(())
    }
}
