//! The losses APGD maximizes: the cross-entropy, and the Difference of Logits Ratio (DLR) and
//! its targeted form, from Croce & Hein, "Reliable evaluation of adversarial robustness with
//! an ensemble of diverse parameter-free attacks" (ICML 2020), §4.
//!
//! With logits `z` sorted decreasingly as `z_π1 ≥ z_π2 ≥ …`:
//!
//! * DLR(x, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3);
//! * targeted DLR(x, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2).
//!
//! Both are invariant to shifting and to rescaling the logits, which is why the paper prefers
//! them to the cross-entropy (whose gradient vanishes when a model's logits are scaled up). The
//! reference adds 10⁻¹² to the denominators so that equal logits do not divide by zero; so do
//! we. Every function returns the loss per example (`[N]`, no reduction).

use tch::{Kind, Reduction, Tensor};

use crate::error::Permanent;

/// Added to the DLR denominators, as the reference does.
const DENOMINATOR_FLOOR: f64 = 1e-12;

/// Per-example cross-entropy of `labels` (`[N]`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, tch::TchError> {
    logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::None, -100, 0.0)
}

/// Checks that logits `[N, C]` have at least `needed` classes (DLR needs 3, the targeted DLR
/// 4), so that an attack can refuse a model up front with a message instead of failing in
/// `topk`.
pub(super) fn check_classes(logits: &Tensor, needed: i64, what: &str) -> Result<(), Permanent> {
    let classes = logits.size().get(1).copied().unwrap_or(0);
    if logits.dim() != 2 || classes < needed {
        return Err(Permanent(format!(
            "{what} needs logits [N, C] with at least {needed} classes, got {:?}",
            logits.size()
        )));
    }
    Ok(())
}

/// The `k` largest logits per example, decreasing (`[N, k]`).
fn top(logits: &Tensor, k: i64) -> Result<Tensor, tch::TchError> {
    Ok(logits.f_topk(k, 1, true, true)?.0)
}

/// Per-example DLR loss: `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²)`. Needs ≥ 3 classes.
pub fn dlr(logits: &Tensor, labels: &Tensor) -> Result<Tensor, tch::TchError> {
    let sorted = top(logits, 3)?;
    let first = sorted.f_select(1, 0)?;
    let second = sorted.f_select(1, 1)?;
    let third = sorted.f_select(1, 2)?;
    let true_logit = logits
        .f_gather(1, &labels.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    // The largest other logit: the runner-up when the label is on top, else the top one.
    let label_on_top = logits.f_argmax(1, false)?.f_eq_tensor(labels)?;
    let best_other = second.f_where_self(&label_on_top, &first)?;
    let denominator = first.f_sub(&third)?.f_add_scalar(DENOMINATOR_FLOOR)?;
    Ok(true_logit
        .f_sub(&best_other)?
        .f_neg()?
        .f_div(&denominator)?)
}

/// Per-example targeted DLR loss towards `targets`:
/// `−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²)`. Needs ≥ 4 classes.
pub fn dlr_targeted(
    logits: &Tensor,
    labels: &Tensor,
    targets: &Tensor,
) -> Result<Tensor, tch::TchError> {
    let sorted = top(logits, 4)?;
    let pick = |idx: &Tensor| -> Result<Tensor, tch::TchError> {
        logits
            .f_gather(1, &idx.f_unsqueeze(1)?, false)?
            .f_squeeze_dim(1)
    };
    let denominator = sorted
        .f_select(1, 0)?
        .f_sub(
            &sorted
                .f_select(1, 2)?
                .f_add(&sorted.f_select(1, 3)?)?
                .f_mul_scalar(0.5)?,
        )?
        .f_add_scalar(DENOMINATOR_FLOOR)?;
    Ok(pick(labels)?
        .f_sub(&pick(targets)?)?
        .f_neg()?
        .f_div(&denominator)?)
}

/// Per-example margin `z_y − max_{i≠y} z_i` (positive while the label wins): Square's loss,
/// and a sign that says whether an example is still classified correctly.
pub fn margin(logits: &Tensor, labels: &Tensor) -> Result<Tensor, tch::TchError> {
    let index = labels.f_unsqueeze(1)?;
    let true_logit = logits.f_gather(1, &index, false)?.f_squeeze_dim(1)?;
    let others = logits.f_scatter_value(1, &index, f64::NEG_INFINITY)?;
    true_logit.f_sub(&others.f_amax([1i64].as_slice(), false)?)
}

/// `logits` as `f32` (the losses' arithmetic, whatever the model's output kind).
pub(super) fn as_float(logits: &Tensor) -> Result<Tensor, tch::TchError> {
    if logits.kind() == Kind::Float {
        Ok(logits.shallow_clone())
    } else {
        logits.f_to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.f_to_kind(Kind::Double).unwrap()).unwrap()
    }

    fn logits(rows: &[[f32; 5]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 5])
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    /// Hand-computed values: label on top, label second, label last; invariance to shifting
    /// and scaling the logits.
    #[test]
    fn dlr_values_on_hand_made_logits() {
        let z = logits(&[
            [4.0, 1.0, 2.0, 0.0, -1.0], // y = 0 on top: −(4 − 2)/(4 − 1) = −2/3
            [3.0, 5.0, 1.0, 0.0, 0.5],  // y = 0 second: −(3 − 5)/(5 − 1) = 0.5
            [0.0, 2.0, 6.0, 1.0, -2.0], // y = 4 last: −(−2 − 6)/(6 − 1) = 1.6
        ]);
        let y = Tensor::from_slice(&[0i64, 0, 4]);
        let expected = [-2.0 / 3.0, 0.5, 1.6];
        close(&values(&dlr(&z, &y).unwrap()), &expected);
        let moved = z.f_mul_scalar(7.0).unwrap().f_add_scalar(-3.0).unwrap();
        close(&values(&dlr(&moved, &y).unwrap()), &expected);

        // Targeted: z_π1 − (z_π3 + z_π4)/2 as the denominator.
        let t = Tensor::from_slice(&[2i64, 1, 2]);
        let expected_t = [
            -(4.0 - 2.0) / (4.0 - (1.0 + 0.0) / 2.0), // sorted 4, 2, 1, 0
            -(3.0 - 5.0) / (5.0 - (1.0 + 0.5) / 2.0), // sorted 5, 3, 1, 0.5
            -(-2.0 - 6.0) / (6.0 - (1.0 + 0.0) / 2.0), // sorted 6, 2, 1, 0
        ];
        close(&values(&dlr_targeted(&z, &y, &t).unwrap()), &expected_t);
        close(&values(&margin(&z, &y).unwrap()), &[2.0, -2.0, -8.0]);
        let ce = values(&cross_entropy(&z, &y).unwrap());
        let lse0 = [4.0f64, 1.0, 2.0, 0.0, -1.0]
            .iter()
            .map(|v| v.exp())
            .sum::<f64>()
            .ln();
        assert!((ce[0] - (lse0 - 4.0)).abs() < 1e-5);
    }

    #[test]
    fn too_few_classes_are_errors() {
        let z = Tensor::f_zeros([2, 3], (Kind::Float, Device::Cpu)).unwrap();
        let y = Tensor::from_slice(&[0i64, 1]);
        assert!(dlr(&z, &y).is_ok());
        assert!(check_classes(&z, 3, "dlr").is_ok());
        assert!(check_classes(&z, 4, "targeted dlr").is_err());
        // Called anyway, the losses fail (torch's topk), never panic.
        assert!(dlr_targeted(&z, &y, &y).is_err());
        assert!(dlr(&z.f_narrow(1, 0, 2).unwrap(), &y).is_err());
    }
}
