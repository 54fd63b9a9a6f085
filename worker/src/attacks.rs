//! White-box evasion attacks: FGSM and PGD under ℓ∞ and ℓ2 budgets, with expectation over
//! transformation (EOT) for randomized models and budgets measured in pixel or normalized
//! space.
//!
//! All attacks take inputs in [0, 1] and return inputs in [0, 1], and maximize the
//! cross-entropy of the true label. Gradients are taken with respect to the input only
//! (`Tensor::run_backward(&[loss], &[x])`, i.e. `torch.autograd.grad`), so no parameter
//! gradient is ever accumulated: the same code serves evaluation and adversarial training.
//!
//! **ε space** ([`Budget::space`]). In [`EpsilonSpace::Pixel`] the ball is around `x` in
//! [0, 1]. In [`EpsilonSpace::Normalized`] it is measured after the models' normalization
//! `z = (x − mean) / std` (CIFAR-10 statistics, [`crate::models::CIFAR10_MEAN`]/`STD`): the
//! attack runs on `z` — the model is queried at `z · std + mean`, steps and projections happen
//! in `z`, the image box becomes the per-channel box `[(0 − m_c)/s_c, (1 − m_c)/s_c]` — and the
//! result is mapped back to pixels. So an ℓ∞ budget ε is a per-channel pixel box of half-width
//! `ε · s_c`, and an ℓ2 budget bounds `‖δ / std‖₂`. Step sizes (absolute or a fraction of
//! ε) and random starts are in the same space. (Signed-gradient steps point the same way in
//! both spaces; normalized-gradient ℓ2 steps do not.)
//!
//! **EOT** ([`Attack::eot`] = k). Each gradient is the mean of k input gradients from k
//! forward passes, the model's randomness drawn afresh in each: the batch is repeated
//! (`k` copies, or as many as fit in [`EOT_PASS_IMAGES`] images per pass) and the summed loss
//! divided by k, which is exactly the average of k per-pass gradients. A model that is not
//! [`Classifier::randomized`] gives k identical gradients, so k is then taken as 1 (the same
//! result, k times cheaper). When restarts are compared on a randomized model, the loss is
//! the mean over k passes and "fooled" uses the mean of the k softmax outputs.
//!
//! Guarantees (checked by tests): the result stays in [0, 1] and within the ε-ball around `x`
//! (ℓ∞: `|δ|∞ ≤ ε` up to float rounding; ℓ2: `‖δ‖₂ ≤ ε`, both in the budget's space), and
//! ε = 0 or `none` returns `x` unchanged.
//!
//! Randomness (random starts, and a randomized model's noise) comes from torch's generator,
//! re-seeded from the caller's [`Rng`] before each use, so an attack is a deterministic function
//! of its seed on a given device type while staying fast on GPUs.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

use advsweep_core::{Attack, EpsilonSpace, Norm};
use anyhow::Context as _;
use tch::{Kind, Reduction, Tensor};
use tracing::warn;

use crate::error::Permanent;
use crate::models::{CIFAR10_MEAN, CIFAR10_STD, Classifier};
use crate::rng::Rng;

/// Smallest gradient norm used as a divisor (ℓ2 steps).
const TINY: f64 = 1e-12;

/// EOT repeats the batch in one forward pass as long as the pass holds at most this many
/// images (a batch of 128 with k = 8 is one pass); beyond that, passes are chained. A pass that
/// runs out of device memory is retried with half as many copies, and [`PASS_LIMIT`] remembers
/// the smaller size for the rest of the process.
pub const EOT_PASS_IMAGES: i64 = 1024;

/// The pass size EOT currently uses: [`EOT_PASS_IMAGES`], or less after running out of memory.
pub static PASS_LIMIT: AtomicI64 = AtomicI64::new(EOT_PASS_IMAGES);

/// A perturbation budget: its size and the space it is measured in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub epsilon: f64,
    pub space: EpsilonSpace,
}

impl Budget {
    pub fn new(epsilon: f64, space: EpsilonSpace) -> Budget {
        Budget { epsilon, space }
    }

    /// ε measured on inputs in [0, 1].
    pub fn pixel(epsilon: f64) -> Budget {
        Budget::new(epsilon, EpsilonSpace::Pixel)
    }

    /// ε measured after the CIFAR-10 normalization.
    pub fn normalized(epsilon: f64) -> Budget {
        Budget::new(epsilon, EpsilonSpace::Normalized)
    }
}

/// Whether [`perturb`] returns its inputs as they are: the clean attack, or a zero budget.
pub fn leaves_inputs_unchanged(attack: &Attack, budget: Budget) -> bool {
    budget.epsilon == 0.0 || attack.is_none()
}

/// Returns adversarial versions of `x` (`f32 [N, 3, H, W]` in [0, 1]) for labels `y`.
///
/// `train` is the mode the model runs in while the attack queries it (eval for evaluation
/// cells, the training mode for adversarial training).
pub fn perturb(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    attack: &Attack,
    budget: Budget,
    train: bool,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    let epsilon = budget.epsilon;
    if !epsilon.is_finite() || epsilon < 0.0 {
        return Err(Permanent(format!("epsilon {epsilon} is not a non-negative number")).into());
    }
    if leaves_inputs_unchanged(attack, budget) {
        return Ok(x.f_detach()?);
    }
    check_parameters(attack, epsilon)?;
    let x = x.f_detach()?;
    let randomized = model.randomized();
    if randomized {
        // The model's noise comes from torch's generator: make it a function of our seed.
        tch::manual_seed(torch_seed(rng));
    }
    let frame = Frame::new(budget.space, &x)?;
    let target = Target {
        model,
        frame: &frame,
        train,
        eot: if randomized {
            i64::from(attack.eot().max(1))
        } else {
            1
        },
        pass_images: Cell::new(EOT_PASS_IMAGES),
    };
    let z = frame.to_z(&x)?;
    let z_adv = tch::with_grad(|| match *attack {
        Attack::None => Ok(z.shallow_clone()),
        Attack::Fgsm {
            norm,
            random_start,
            step_fraction,
            eot: _,
        } => {
            let start = if random_start {
                random_start_point(&frame, &z, norm, epsilon, rng)?
            } else {
                z.shallow_clone()
            };
            let grad = target.gradient(&start, y)?;
            let ball = Ball::new(&frame, &z, norm, epsilon)?;
            ball.step(&start, grad, step_fraction * epsilon)
        }
        Attack::Pgd {
            norm,
            steps,
            step,
            random_start,
            restarts,
            eot: _,
        } => pgd(
            &target,
            &z,
            y,
            PgdConfig {
                norm,
                steps,
                step: step.resolve(epsilon),
                random_start,
                restarts: restarts.max(1),
                epsilon,
            },
            rng,
        ),
    })
    .with_context(|| {
        format!(
            "running {} at epsilon {epsilon} ({} space)",
            describe(attack),
            space_name(budget.space)
        )
    })?;
    frame.to_pixels(&z_adv)
}

/// A short human-readable name, e.g. "pgd-linf-10x1" or "pgd-l2-20x1-eot8".
pub fn describe(attack: &Attack) -> String {
    let eot = match attack.eot() {
        0 | 1 => String::new(),
        k => format!("-eot{k}"),
    };
    match attack {
        Attack::None => "none".into(),
        Attack::Fgsm {
            norm, random_start, ..
        } => format!(
            "fgsm{}-{}{eot}",
            if *random_start { "-rs" } else { "" },
            norm.as_str()
        ),
        Attack::Pgd {
            norm,
            steps,
            restarts,
            ..
        } => format!("pgd-{}-{steps}x{restarts}{eot}", norm.as_str()),
    }
}

fn space_name(space: EpsilonSpace) -> &'static str {
    match space {
        EpsilonSpace::Pixel => "pixel",
        EpsilonSpace::Normalized => "normalized",
    }
}

/// Step sizes must be finite and non-negative (the wire decoder checks this too).
fn check_parameters(attack: &Attack, epsilon: f64) -> Result<(), Permanent> {
    let step = match *attack {
        Attack::None => return Ok(()),
        Attack::Fgsm { step_fraction, .. } => step_fraction * epsilon,
        Attack::Pgd { step, .. } => step.resolve(epsilon),
    };
    if step.is_finite() && step >= 0.0 {
        Ok(())
    } else {
        Err(Permanent(format!(
            "{}: step {step} is not a non-negative number",
            describe(attack)
        )))
    }
}

/// A seed for torch's generator drawn from `rng` (non-negative).
fn torch_seed(rng: &mut Rng) -> i64 {
    (rng.next_u64() >> 1) as i64
}

/// The space the attack's iterates live in: pixels, or normalized inputs.
enum Frame {
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
    fn new(space: EpsilonSpace, x: &Tensor) -> anyhow::Result<Frame> {
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

    fn to_z(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => Ok(x.shallow_clone()),
            Frame::Normalized { mean, std, .. } => x.f_sub(mean)?.f_div(std),
        }
    }

    /// The model's input for iterate `z` (differentiable; no clamping).
    fn model_input(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => Ok(z.shallow_clone()),
            Frame::Normalized { mean, std, .. } => z.f_mul(std)?.f_add(mean),
        }
    }

    /// The final adversarial image for iterate `z`, in [0, 1].
    fn to_pixels(&self, z: &Tensor) -> anyhow::Result<Tensor> {
        Ok(match self {
            Frame::Pixel => z.f_detach()?,
            // Already inside the box up to rounding; the clamp removes the rounding.
            Frame::Normalized { .. } => self.model_input(z)?.f_clamp(0.0, 1.0)?.f_detach()?,
        })
    }

    /// Clamps `z` to the image box of this space.
    fn clamp_box(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Frame::Pixel => z.f_clamp(0.0, 1.0),
            Frame::Normalized { lo, hi, .. } => z.f_clamp_tensor(Some(lo), Some(hi)),
        }
    }
}

/// The model as the attack sees it: queried in the frame's space, EOT-averaged.
struct Target<'a> {
    model: &'a dyn Classifier,
    frame: &'a Frame,
    train: bool,
    /// Gradient samples per step (1 for deterministic models).
    eot: i64,
    /// Most images per forward pass when repeating the batch for EOT (lowered when a pass runs
    /// out of memory).
    pass_images: Cell<i64>,
}

impl Target<'_> {
    fn logits(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
        self.model.forward(&self.frame.model_input(z)?, self.train)
    }

    /// Copies of the batch per pass: as many as fit in the pass size (at least one, at most
    /// `eot`).
    fn copies_per_pass(&self, z: &Tensor) -> i64 {
        let n = z.size().first().copied().unwrap_or(1).max(1);
        let limit = self
            .pass_images
            .get()
            .min(PASS_LIMIT.load(Ordering::Relaxed));
        (limit / n).clamp(1, self.eot.max(1))
    }

    /// Runs `pass(copies)` for chunks of copies until `eot` copies are done, summing the
    /// results. A multi-copy pass that runs out of device memory is retried with half as many
    /// copies, and the smaller pass size is kept (for this attack and, through
    /// [`PASS_LIMIT`], for later ones).
    fn over_samples(
        &self,
        z: &Tensor,
        mut pass: impl FnMut(i64) -> anyhow::Result<Vec<Tensor>>,
    ) -> anyhow::Result<Vec<Tensor>> {
        let n = z.size().first().copied().unwrap_or(1).max(1);
        let mut total: Option<Vec<Tensor>> = None;
        let mut done = 0;
        while done < self.eot {
            let copies = self.copies_per_pass(z).min(self.eot - done);
            let parts = match pass(copies) {
                Ok(parts) => parts,
                Err(e) if copies > 1 && out_of_memory(&e) => {
                    let smaller = n * (copies / 2);
                    self.pass_images.set(smaller);
                    PASS_LIMIT.fetch_min(smaller, Ordering::Relaxed);
                    warn!(
                        copies,
                        images = n * copies,
                        "out of memory in an EOT pass; retrying with half as many copies"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            total = Some(match total {
                None => parts,
                Some(sums) => sums
                    .iter()
                    .zip(&parts)
                    .map(|(a, b)| a.f_add(b))
                    .collect::<Result<_, _>>()?,
            });
            done += copies;
        }
        total.context("no sample was taken")
    }

    /// ∇_z of the summed cross-entropy at `z`, averaged over `eot` forward passes, without
    /// touching parameter gradients.
    fn gradient(&self, z: &Tensor, y: &Tensor) -> anyhow::Result<Tensor> {
        let z = z.f_detach()?.f_set_requires_grad(true)?;
        let mut sums = self.over_samples(&z, |copies| {
            let (input, labels) = repeat_batch(&z, y, copies)?;
            let logits = self.logits(&input)?;
            let mut loss =
                logits.f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, -100, 0.0)?;
            if self.eot > 1 {
                loss = loss.f_div_scalar(self.eot as f64)?;
            }
            Ok(Tensor::f_run_backward(&[&loss], &[&z], false, false)?)
        })?;
        sums.pop().context("autograd returned no input gradient")
    }

    /// Per example: whether the model is fooled and the cross-entropy (no autograd); over
    /// `eot` passes, the mean loss and the argmax of the mean softmax.
    fn assess(&self, z: &Tensor, y: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
        tch::no_grad(|| {
            if self.eot == 1 {
                let logits = self.logits(z)?;
                let wrong = logits.f_argmax(-1, false)?.f_ne_tensor(y)?;
                let loss =
                    logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)?;
                return Ok((wrong, loss));
            }
            let n = z.size().first().copied().unwrap_or(0);
            let sums = self.over_samples(z, |copies| {
                let (input, labels) = repeat_batch(z, y, copies)?;
                let logits = self.logits(&input)?;
                let loss = logits
                    .f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::None, -100, 0.0)?
                    .f_view([copies, n])?
                    .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?;
                let probs = logits
                    .f_softmax(-1, Kind::Float)?
                    .f_view([copies, n, -1])?
                    .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?;
                Ok(vec![loss, probs])
            })?;
            let [losses, probs] = &sums[..] else {
                anyhow::bail!("expected a loss and probabilities");
            };
            let wrong = probs.f_argmax(-1, false)?.f_ne_tensor(y)?;
            Ok((wrong, losses.f_div_scalar(self.eot as f64)?))
        })
    }
}

/// Whether an error chain is the device running out of memory (CUDA's "CUDA out of memory",
/// the CPU allocator's "DefaultCPUAllocator: can't allocate memory", MPS's "out of memory").
fn out_of_memory(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let text = e.to_string().to_ascii_lowercase();
        text.contains("out of memory") || text.contains("can't allocate memory")
    })
}

/// `copies` copies of the batch stacked along the batch dimension (copy-major).
fn repeat_batch(z: &Tensor, y: &Tensor, copies: i64) -> Result<(Tensor, Tensor), tch::TchError> {
    if copies == 1 {
        return Ok((z.shallow_clone(), y.shallow_clone()));
    }
    let mut reps = vec![1i64; z.dim()];
    if let Some(first) = reps.first_mut() {
        *first = copies;
    }
    Ok((z.f_repeat(reps.as_slice())?, y.f_repeat([copies])?))
}

#[derive(Debug, Clone, Copy)]
struct PgdConfig {
    norm: Norm,
    steps: u32,
    step: f64,
    random_start: bool,
    restarts: u32,
    epsilon: f64,
}

fn pgd(
    target: &Target<'_>,
    z: &Tensor,
    y: &Tensor,
    cfg: PgdConfig,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    // Per example: the best adversarial point so far, whether it fools the model, its loss.
    let mut best: Option<(Tensor, Tensor, Tensor)> = None;
    let ball = Ball::new(target.frame, z, cfg.norm, cfg.epsilon)?;
    for _ in 0..cfg.restarts {
        let mut z_adv = if cfg.random_start {
            random_start_point(target.frame, z, cfg.norm, cfg.epsilon, rng)?
        } else {
            z.shallow_clone()
        };
        for _ in 0..cfg.steps {
            let grad = target.gradient(&z_adv, y)?;
            z_adv = ball.step(&z_adv, grad, cfg.step)?;
        }
        if cfg.restarts == 1 {
            return Ok(z_adv);
        }
        let (wrong, loss) = target.assess(&z_adv, y)?;
        best = Some(match best {
            None => (z_adv, wrong, loss),
            Some((best_z, best_wrong, best_loss)) => {
                // Take the new restart where it fools the model and the best did not, or where
                // both agree on fooling and the new loss is higher.
                let newly_wrong = wrong.f_logical_and(&best_wrong.f_logical_not()?)?;
                let same = wrong.f_eq_tensor(&best_wrong)?;
                let higher = loss.f_gt_tensor(&best_loss)?;
                let take = newly_wrong.f_logical_or(&same.f_logical_and(&higher)?)?;
                let mut shape = vec![1i64; z_adv.dim()];
                if let Some(first) = shape.first_mut() {
                    *first = -1;
                }
                let take_z = take.f_view(shape.as_slice())?;
                (
                    z_adv.f_where_self(&take_z, &best_z)?,
                    wrong.f_where_self(&take, &best_wrong)?,
                    loss.f_where_self(&take, &best_loss)?,
                )
            }
        });
    }
    match best {
        Some((z_adv, _, _)) => Ok(z_adv),
        None => Ok(z.shallow_clone()),
    }
}

/// Per-example ℓ2 norm, shaped `[N, 1, 1, 1]` for broadcasting.
fn l2_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_flatten(1, -1)?
        .f_norm_scalaropt_dim(2, [1], false)?
        .f_view([-1, 1, 1, 1])
}

/// The feasible set of an attack around `z`: the ε-ball intersected with the frame's image
/// box, with one ascent-and-project step.
///
/// For ℓ∞ both sets are boxes, so the intersection is the box
/// `[max(z − ε, lo), min(z + ε, hi)]`, computed once per attack: clamping into it gives
/// exactly (bit for bit) what clamping into the ε-box and then into the image box gives, since
/// `z` lies in the image box (so the two boxes intersect), in two elementwise passes fewer per
/// step. ℓ2 steps use [`ascend`] and [`project_in`].
enum Ball<'a> {
    Linf {
        lo: Tensor,
        hi: Tensor,
    },
    L2 {
        frame: &'a Frame,
        z: &'a Tensor,
        epsilon: f64,
    },
}

impl<'a> Ball<'a> {
    fn new(frame: &'a Frame, z: &'a Tensor, norm: Norm, epsilon: f64) -> anyhow::Result<Ball<'a>> {
        Ok(match norm {
            Norm::Linf => {
                let (lo, hi) = match frame {
                    Frame::Pixel => (
                        z.f_sub_scalar(epsilon)?.f_clamp_min(0.0)?,
                        z.f_add_scalar(epsilon)?.f_clamp_max(1.0)?,
                    ),
                    Frame::Normalized { lo, hi, .. } => (
                        z.f_sub_scalar(epsilon)?.f_maximum(lo)?,
                        z.f_add_scalar(epsilon)?.f_minimum(hi)?,
                    ),
                };
                Ball::Linf { lo, hi }
            }
            Norm::L2 => Ball::L2 { frame, z, epsilon },
        })
    }

    /// `z_adv` moved by `step` along the ascent direction of `grad` (which it may overwrite),
    /// projected back into the set.
    fn step(&self, z_adv: &Tensor, mut grad: Tensor, step: f64) -> anyhow::Result<Tensor> {
        match self {
            Ball::Linf { lo, hi } => {
                let _ = grad.f_sign_()?.f_mul_scalar_(step)?;
                let mut next = z_adv.f_add(&grad)?;
                let _ = next.f_clamp_tensor_(Some(lo), Some(hi))?;
                Ok(next.f_detach()?)
            }
            Ball::L2 { frame, z, epsilon } => Ok(project_in(
                frame,
                &ascend(z_adv, &grad, Norm::L2, step)?,
                z,
                Norm::L2,
                *epsilon,
            )?),
        }
    }
}

/// One ascent step of size `step`: signed gradient (ℓ∞) or normalized gradient (ℓ2).
fn ascend(x: &Tensor, grad: &Tensor, norm: Norm, step: f64) -> Result<Tensor, tch::TchError> {
    let direction = match norm {
        Norm::Linf => grad.f_sign()?,
        Norm::L2 => grad.f_div(&l2_norms(grad)?.f_clamp_min(TINY)?)?,
    };
    x.f_add(&direction.f_mul_scalar(step)?)
}

/// Projects `x_adv` onto the ε-ball around `x` in pixel space, then onto the image box
/// [0, 1] (see [`perturb`] for normalized-space budgets).
///
/// For ℓ∞ both sets are boxes and clamping coordinate-wise is the exact projection onto their
/// intersection. For ℓ2, rescaling δ then clamping keeps ‖δ‖₂ ≤ ε, because clamping to
/// [0, 1] (with `x` inside it) only moves coordinates towards `x`.
pub fn project(
    x_adv: &Tensor,
    x: &Tensor,
    norm: Norm,
    epsilon: f64,
) -> Result<Tensor, tch::TchError> {
    project_in(&Frame::Pixel, x_adv, x, norm, epsilon)
}

/// [`project`] in the frame's space, with the frame's image box.
fn project_in(
    frame: &Frame,
    z_adv: &Tensor,
    z: &Tensor,
    norm: Norm,
    epsilon: f64,
) -> Result<Tensor, tch::TchError> {
    let projected = match norm {
        Norm::Linf => {
            let lo = z.f_sub_scalar(epsilon)?;
            let hi = z.f_add_scalar(epsilon)?;
            z_adv.f_clamp_tensor(Some(&lo), Some(&hi))?
        }
        Norm::L2 => {
            let delta = z_adv.f_sub(z)?;
            let norms = l2_norms(&delta)?;
            // min(1, ε/‖δ‖); ‖δ‖ = 0 gives +inf, clamped to 1.
            let factor = norms
                .f_reciprocal()?
                .f_mul_scalar(epsilon)?
                .f_clamp_max(1.0)?;
            z.f_add(&delta.f_mul(&factor)?)?
        }
    };
    frame.clamp_box(&projected)?.f_detach()
}

/// A uniformly random point of the ε-box (ℓ∞) or a random direction at a uniformly random
/// radius in [0, ε] (ℓ2) around `z`, clamped to the image box.
fn random_start_point(
    frame: &Frame,
    z: &Tensor,
    norm: Norm,
    epsilon: f64,
    rng: &mut Rng,
) -> anyhow::Result<Tensor> {
    tch::manual_seed(torch_seed(rng));
    let delta = match norm {
        // Drawn in logical (NCHW) order whatever `z`'s memory layout, so the same seed gives
        // the same start in any layout.
        Norm::Linf => Tensor::f_rand(z.size().as_slice(), (z.kind(), z.device()))?
            .f_mul_scalar(2.0 * epsilon)?
            .f_sub_scalar(epsilon)?,
        Norm::L2 => {
            let direction = Tensor::f_randn(z.size().as_slice(), (z.kind(), z.device()))?;
            let unit = direction.f_div(&l2_norms(&direction)?.f_clamp_min(TINY)?)?;
            let n = z.size().first().copied().unwrap_or(0);
            let radius =
                Tensor::f_rand([n, 1, 1, 1], (Kind::Float, z.device()))?.f_mul_scalar(epsilon)?;
            unit.f_mul(&radius)?
        }
    };
    Ok(frame.clamp_box(&z.f_add(&delta)?)?.f_detach()?)
}

/// Per-example ℓ∞ and ℓ2 norms of `x_adv - x` in pixel space, as `f64` vectors.
pub fn perturbation_norms(x_adv: &Tensor, x: &Tensor) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    tch::no_grad(|| {
        let delta = x_adv.f_sub(x)?.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
        let linf = delta.f_abs()?.f_amax([1], false)?;
        let l2 = delta.f_norm_scalaropt_dim(2, [1], false)?;
        Ok((Vec::<f64>::try_from(&linf)?, Vec::<f64>::try_from(&l2)?))
    })
}

/// `[Σ ‖δ‖∞, Σ ‖δ‖₂]` over the batch, `δ = x_adv − x` in pixel space, as an `f64 [2]` tensor
/// on the inputs' device: the per-example norms of [`perturbation_norms`], summed in `f64`
/// without a round trip to the host.
pub fn perturbation_norm_sums(x_adv: &Tensor, x: &Tensor) -> anyhow::Result<Tensor> {
    tch::no_grad(|| {
        let delta = x_adv.f_sub(x)?.f_flatten(1, -1)?.f_to_kind(Kind::Double)?;
        let linf = delta.f_abs()?.f_amax([1], false)?.f_sum(Kind::Double)?;
        let l2 = delta
            .f_norm_scalaropt_dim(2, [1], false)?
            .f_sum(Kind::Double)?;
        Ok(Tensor::f_stack(&[linf, l2], 0)?)
    })
}

/// Per-example ℓ∞ and ℓ2 norms of `x_adv - x` measured in `space` (for normalized space,
/// of `(x_adv - x) / std`).
pub fn perturbation_norms_in(
    x_adv: &Tensor,
    x: &Tensor,
    space: EpsilonSpace,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    match Frame::new(space, x)? {
        Frame::Pixel => perturbation_norms(x_adv, x),
        Frame::Normalized { std, .. } => {
            tch::no_grad(|| perturbation_norms(&x_adv.f_div(&std)?, &x.f_div(&std)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::basic::BasicNet;
    use tch::Device;

    /// A deterministic model that claims to be randomized, so that EOT really runs.
    /// With a batch limit, larger batches fail like CUDA running out of memory.
    struct Claims(BasicNet, Cell<Option<i64>>);

    impl Claims {
        fn new() -> anyhow::Result<Claims> {
            Ok(Claims(BasicNet::new(Device::Cpu)?, Cell::new(None)))
        }
    }

    impl Classifier for Claims {
        fn name(&self) -> &'static str {
            "claims-randomized"
        }
        fn var_store(&self) -> &tch::nn::VarStore {
            self.0.var_store()
        }
        fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
            let n = x.size().first().copied().unwrap_or(0);
            if self.1.get().is_some_and(|limit| n > limit) {
                return Err(tch::TchError::Torch(format!(
                    "CUDA out of memory. Tried to allocate {n} images"
                )));
            }
            self.0.forward(x, train)
        }
        fn randomized(&self) -> bool {
            true
        }
    }

    fn inputs(n: i64) -> anyhow::Result<(Tensor, Tensor)> {
        tch::manual_seed(0);
        let x = Tensor::f_rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))?;
        let y = Tensor::f_randint(10, [n], (Kind::Int64, Device::Cpu))?;
        Ok((x, y))
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
        Ok(f64::try_from(a.f_sub(b)?.f_abs()?.f_max()?)?)
    }

    #[test]
    fn eot_gradient_is_the_mean_of_single_pass_gradients() -> anyhow::Result<()> {
        let model = Claims::new()?;
        let (x, y) = inputs(5)?;
        let frame = Frame::Pixel;
        let target = |eot: i64, pass_images: i64| Target {
            model: &model,
            frame: &frame,
            train: false,
            eot,
            pass_images: Cell::new(pass_images),
        };
        let single = tch::with_grad(|| target(1, 1024).gradient(&x, &y))?;
        let scale = f64::try_from(single.f_abs()?.f_max()?)?;
        assert!(scale > 0.0);
        // All copies in one pass, one copy per pass, and passes of two copies (5 = 2+2+1).
        for pass_images in [1024, 5, 10] {
            let g = tch::with_grad(|| target(5, pass_images).gradient(&x, &y))?;
            let d = max_abs_diff(&g, &single)?;
            assert!(
                d <= 1e-5 * scale,
                "pass_images {pass_images}: {d} vs {scale}"
            );
        }
        let (wrong1, loss1) = target(1, 1024).assess(&x, &y)?;
        let (wrong5, loss5) = target(5, 10).assess(&x, &y)?;
        assert!(wrong1.f_equal(&wrong5)?);
        assert!(max_abs_diff(&loss1, &loss5)? < 1e-5);
        Ok(())
    }

    #[test]
    fn eot_passes_that_run_out_of_memory_are_split() -> anyhow::Result<()> {
        let (x, y) = inputs(4)?;
        let model = Claims::new()?;
        let frame = Frame::Pixel;
        let target = || Target {
            model: &model,
            frame: &frame,
            train: false,
            eot: 6,
            pass_images: Cell::new(1024),
        };
        let expected = tch::with_grad(|| target().gradient(&x, &y))?;
        // More than 8 images (2 copies) per pass "run out of memory": 6 copies fail, then 3,
        // then single copies go through.
        model.1.set(Some(8));
        let limited = target();
        let g = tch::with_grad(|| limited.gradient(&x, &y))?;
        assert!(max_abs_diff(&g, &expected)? < 1e-6);
        assert_eq!(limited.pass_images.get(), 4);
        let (wrong, _) = limited.assess(&x, &y)?;
        assert_eq!(wrong.size(), vec![4]);
        // A single copy that fails is an error, not a retry.
        model.1.set(Some(0));
        assert!(tch::with_grad(|| target().gradient(&x, &y)).is_err());
        PASS_LIMIT.store(EOT_PASS_IMAGES, Ordering::Relaxed);
        Ok(())
    }

    /// The precomputed ℓ∞ set gives bit for bit what stepping, clamping into the ε-box and
    /// then into the image box gives, in both spaces, including points far outside both.
    #[test]
    fn linf_steps_match_clamping_into_the_ball_then_the_box() -> anyhow::Result<()> {
        let (x, _) = inputs(4)?;
        let epsilon = 8.0 / 255.0;
        for space in [EpsilonSpace::Pixel, EpsilonSpace::Normalized] {
            let frame = Frame::new(space, &x)?;
            let z = frame.to_z(&x)?;
            let ball = Ball::new(&frame, &z, Norm::Linf, epsilon)?;
            let mut z_adv = z.shallow_clone();
            for scale in [0.0, 0.01, 0.5, 3.0] {
                let grad = z.f_randn_like()?;
                let start = z_adv.f_add(&z.f_randn_like()?.f_mul_scalar(scale)?)?;
                let expected = project_in(
                    &frame,
                    &ascend(&start, &grad, Norm::Linf, 2.0 / 255.0)?,
                    &z,
                    Norm::Linf,
                    epsilon,
                )?;
                z_adv = ball.step(&start, grad, 2.0 / 255.0)?;
                assert!(z_adv.f_equal(&expected)?, "{space:?}, scale {scale}");
            }
        }
        Ok(())
    }

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

    #[test]
    fn bad_budgets_and_steps_are_permanent_errors() -> anyhow::Result<()> {
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = inputs(2)?;
        let mut rng = Rng::new(3);
        let pgd = Attack::Pgd {
            norm: Norm::Linf,
            steps: 1,
            step: advsweep_core::StepSize::Absolute(f64::NAN),
            random_start: false,
            restarts: 1,
            eot: 1,
        };
        for (attack, eps) in [
            (&Attack::None, f64::NAN),
            (&Attack::None, -1.0),
            (&pgd, 0.1),
        ] {
            let err = perturb(&model, &x, &y, attack, Budget::pixel(eps), false, &mut rng).err();
            assert!(
                err.is_some_and(|e| !crate::error::is_retryable(&e)),
                "{attack:?} at {eps}"
            );
        }
        Ok(())
    }

    #[test]
    fn descriptions_name_eot() {
        let pgd = Attack::Pgd {
            norm: Norm::L2,
            steps: 20,
            step: advsweep_core::StepSize::FractionOfEpsilon(0.1),
            random_start: true,
            restarts: 2,
            eot: 1,
        };
        assert_eq!(describe(&pgd), "pgd-l2-20x2");
        assert_eq!(describe(&pgd.with_eot(8)), "pgd-l2-20x2-eot8");
    }
}
