//! Learning-rate schedules, evaluated per batch (training calls `opt.set_lr` before every
//! optimizer step).
//!
//! Time is measured in epochs as a real number: batch `b` (0-based) of epoch `e` (1-based) out
//! of `B` batches per epoch is at `t = (e − 1) + b / B`, and the run's progress is
//! `p = t / epochs ∈ [0, 1)`. With base rate `lr`:
//!
//! * `constant`: `lr`;
//! * `step { every_epochs: N, gamma }`: `lr · gamma^⌊(e − 1) / N⌋` (changes at epoch
//!   boundaries only: epochs 1..=N use `lr`, N+1..=2N use `lr · gamma`, …);
//! * `cosine`: `lr · ½ (1 + cos π p)`, from `lr` at the first batch towards 0 at the end;
//! * `one_cycle`: linear warm-up from `lr / 25` to `lr` over the first 30 % of the run, then a
//!   cosine from `lr` down to `lr / 10⁴` at the end (the shape of PyTorch's `OneCycleLR`
//!   with `pct_start = 0.3`, `div_factor = 25`, a linear warm-up and `lr / 10⁴` as the floor).

use advsweep_core::LrSchedule;

use crate::error::Permanent;

/// One-cycle: fraction of the run spent warming up.
pub const ONE_CYCLE_WARMUP: f64 = 0.3;
/// One-cycle: the warm-up starts at `lr / ONE_CYCLE_START_DIV`.
pub const ONE_CYCLE_START_DIV: f64 = 25.0;
/// One-cycle: the run ends at `lr / ONE_CYCLE_END_DIV`.
pub const ONE_CYCLE_END_DIV: f64 = 1e4;

/// Checks a schedule's parameters (the wire decoder already does; this guards direct callers).
pub fn validate(schedule: &LrSchedule) -> Result<(), Permanent> {
    match *schedule {
        LrSchedule::Step {
            every_epochs,
            gamma,
        } => {
            if every_epochs == 0 {
                return Err(Permanent(
                    "step schedule: every_epochs must be at least 1".into(),
                ));
            }
            if !(gamma.is_finite() && gamma > 0.0) {
                return Err(Permanent(format!(
                    "step schedule: gamma {gamma} is not a positive number"
                )));
            }
            Ok(())
        }
        LrSchedule::Constant | LrSchedule::Cosine | LrSchedule::OneCycle => Ok(()),
    }
}

/// The learning rate of batch `batch` (0-based) of `epoch` (1-based), with `batches` batches
/// per epoch and `epochs` epochs in the run.
pub fn learning_rate(
    schedule: &LrSchedule,
    base: f64,
    epoch: u32,
    batch: usize,
    batches: usize,
    epochs: u32,
) -> f64 {
    let epoch_index = f64::from(epoch.max(1) - 1);
    let within = batch as f64 / batches.max(1) as f64;
    let progress = ((epoch_index + within) / f64::from(epochs.max(1))).clamp(0.0, 1.0);
    match *schedule {
        LrSchedule::Constant => base,
        LrSchedule::Step {
            every_epochs,
            gamma,
        } => {
            let drops = (epoch.max(1) - 1) / every_epochs.max(1);
            base * gamma.powi(i32::try_from(drops).unwrap_or(i32::MAX))
        }
        LrSchedule::Cosine => base * half_cosine(progress),
        LrSchedule::OneCycle => {
            let start = base / ONE_CYCLE_START_DIV;
            let end = base / ONE_CYCLE_END_DIV;
            if progress < ONE_CYCLE_WARMUP {
                start + (base - start) * progress / ONE_CYCLE_WARMUP
            } else {
                let q = (progress - ONE_CYCLE_WARMUP) / (1.0 - ONE_CYCLE_WARMUP);
                end + (base - end) * half_cosine(q)
            }
        }
    }
}

/// `½ (1 + cos π q)`: 1 at q = 0, 0 at q = 1.
fn half_cosine(q: f64) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * q).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn constant_and_step() {
        for (e, b) in [(1, 0), (3, 7), (10, 9)] {
            assert_eq!(learning_rate(&LrSchedule::Constant, 0.1, e, b, 10, 10), 0.1);
        }
        let step = LrSchedule::Step {
            every_epochs: 3,
            gamma: 0.1,
        };
        let lr = |e: u32, b: usize| learning_rate(&step, 0.5, e, b, 4, 9);
        assert!(close(lr(1, 0), 0.5));
        assert!(close(lr(3, 3), 0.5));
        assert!(close(lr(4, 0), 0.05));
        assert!(close(lr(6, 3), 0.05));
        assert!(close(lr(7, 0), 0.005));
        assert!(close(lr(9, 3), 0.005));
    }

    #[test]
    fn cosine_goes_from_lr_to_zero() {
        let lr = |e: u32, b: usize| learning_rate(&LrSchedule::Cosine, 0.2, e, b, 5, 4);
        assert!(close(lr(1, 0), 0.2));
        // Half way (epoch 3, batch 0 of 4 epochs): ½ lr.
        assert!(close(lr(3, 0), 0.1));
        // A quarter: ½ (1 + cos π/4).
        assert!(close(
            lr(2, 0),
            0.2 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)
        ));
        // Strictly decreasing, positive, and near 0 at the last batch.
        let mut previous = f64::INFINITY;
        for e in 1..=4 {
            for b in 0..5 {
                let v = lr(e, b);
                assert!(v > 0.0 && v < previous, "epoch {e} batch {b}: {v}");
                previous = v;
            }
        }
        assert!(previous < 0.2 * 0.01, "{previous}");
    }

    #[test]
    fn one_cycle_warms_up_then_anneals() {
        let base = 0.1;
        // 10 epochs × 10 batches: progress = (e − 1 + b/10) / 10.
        let lr = |e: u32, b: usize| learning_rate(&LrSchedule::OneCycle, base, e, b, 10, 10);
        assert!(close(lr(1, 0), base / 25.0));
        // 15 % of the run: half way up the ramp.
        assert!(close(lr(2, 5), base / 25.0 + (base - base / 25.0) * 0.5));
        // Peak at 30 %.
        assert!(close(lr(4, 0), base));
        // 65 %: half way down the cosine, between lr and lr/1e4.
        let end = base / 1e4;
        assert!(close(lr(7, 5), end + (base - end) * 0.5));
        // Monotone up to the peak, monotone down after, ending near lr/1e4.
        let values: Vec<f64> = (1..=10)
            .flat_map(|e| (0..10).map(move |b| (e, b)))
            .map(|(e, b)| lr(e, b))
            .collect();
        assert!(values[..30].windows(2).all(|w| w[0] < w[1]));
        assert!(values[30..].windows(2).all(|w| w[0] > w[1]));
        let last = values[99];
        assert!(last > end && last < base * 1e-3, "{last}");
        // Progress past the end is clamped to the floor.
        assert!(close(
            learning_rate(&LrSchedule::OneCycle, base, 11, 0, 10, 10),
            end
        ));
    }

    #[test]
    fn bad_step_parameters_are_rejected() {
        assert!(
            validate(&LrSchedule::Step {
                every_epochs: 0,
                gamma: 0.1
            })
            .is_err()
        );
        assert!(
            validate(&LrSchedule::Step {
                every_epochs: 2,
                gamma: f64::NAN
            })
            .is_err()
        );
        assert!(validate(&LrSchedule::OneCycle).is_ok());
    }
}
