//! Evaluating one cell: an attack at one ε against a trained model, on the evaluation subset.
//!
//! Per batch of `eval_batch_size`: a clean forward pass (no autograd), the attack (input
//! gradients only, model in eval mode), and a forward pass on the adversarial inputs. Reported:
//! * `accuracy`: fraction of attacked inputs classified correctly;
//! * `attack_success_rate`: among clean-correct examples, the fraction the attack made wrong
//!   (0 when none was clean-correct);
//! * `mean_linf`, `mean_l2`: per-example perturbation norms averaged over all examples;
//! * throughput and wall time of the whole cell.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_spec::{Attack, CellResult};
use anyhow::Context as _;

use crate::attacks;
use crate::data::Dataset;
use crate::error::check_cancel;
use crate::models::Classifier;
use crate::rng::Rng;

/// Evaluates `attack` at `epsilon`; `rng` seeds the attack's random starts.
pub fn evaluate_cell(
    model: &dyn Classifier,
    data: &Dataset,
    attack: &Attack,
    epsilon: f64,
    eval_batch_size: u32,
    rng: &mut Rng,
    cancel: &AtomicBool,
) -> anyhow::Result<CellResult> {
    let started = Instant::now();
    let m = data.test_len();
    let batch = i64::from(eval_batch_size.max(1));
    let mut adv_correct = 0i64;
    let mut clean_correct = 0i64;
    let mut flipped = 0i64;
    let mut linf_sum = 0.0;
    let mut l2_sum = 0.0;
    let mut start = 0;
    while start < m {
        check_cancel(cancel)?;
        let (x, y) = data.test_batch(start, batch)?;
        let clean_hit = tch::no_grad(|| -> anyhow::Result<tch::Tensor> {
            Ok(model.forward(&x, false)?.f_argmax(-1, false)?.f_eq_tensor(&y)?)
        })?;
        let x_adv = attacks::perturb(model, &x, &y, attack, epsilon, false, rng)
            .with_context(|| format!("batch starting at example {start}"))?;
        let (adv_hit, batch_flipped) = tch::no_grad(|| -> anyhow::Result<_> {
            let adv_hit = model.forward(&x_adv, false)?.f_argmax(-1, false)?.f_eq_tensor(&y)?;
            let flipped = clean_hit.f_logical_and(&adv_hit.f_logical_not()?)?;
            Ok((sum(&adv_hit)?, sum(&flipped)?))
        })?;
        let (linf, l2) = attacks::perturbation_norms(&x_adv, &x)?;
        adv_correct += adv_hit;
        clean_correct += sum(&clean_hit)?;
        flipped += batch_flipped;
        linf_sum += linf.iter().sum::<f64>();
        l2_sum += l2.iter().sum::<f64>();
        start += batch;
    }
    let seconds = started.elapsed().as_secs_f64();
    let n = m.max(1) as f64;
    Ok(CellResult {
        accuracy: adv_correct as f64 / n,
        attack_success_rate: if clean_correct > 0 {
            flipped as f64 / clean_correct as f64
        } else {
            0.0
        },
        mean_linf: linf_sum / n,
        mean_l2: l2_sum / n,
        images_per_second: m as f64 / seconds.max(1e-9),
        seconds,
        examples: u32::try_from(m).unwrap_or(u32::MAX),
    })
}

fn sum(mask: &tch::Tensor) -> anyhow::Result<i64> {
    Ok(i64::try_from(mask.f_sum(tch::Kind::Int64)?)?)
}
