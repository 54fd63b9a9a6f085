//! Expectation over transformation (EOT): the model as an attack sees it, with gradients and
//! loss averaged over several forward passes of a randomized model.
//!
//! Each gradient is the mean of k input gradients from k forward passes, the model's
//! randomness drawn afresh in each: the batch is repeated (`k` copies, or as many as fit in
//! [`EOT_PASS_IMAGES`] images per pass) and the summed loss divided by k, which is exactly the
//! average of k per-pass gradients. A pass that runs out of device memory is retried with half
//! as many copies. Every attack queries the model through [`Target`], so a new attack gets EOT,
//! the normalized-space view and the out-of-memory fallback without code of its own.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::Context as _;
use tch::{Kind, Reduction, Tensor};
use tracing::warn;

use super::space::Frame;
use crate::models::Classifier;

/// EOT repeats the batch in one forward pass as long as the pass holds at most this many
/// images (a batch of 128 with k = 8 is one pass); beyond that, passes are chained. A pass that
/// runs out of device memory is retried with half as many copies, and [`PASS_LIMIT`] remembers
/// the smaller size for the rest of the process.
pub const EOT_PASS_IMAGES: i64 = 1024;

/// The pass size EOT currently uses: [`EOT_PASS_IMAGES`], or less after running out of memory.
pub static PASS_LIMIT: AtomicI64 = AtomicI64::new(EOT_PASS_IMAGES);

/// The model as the attack sees it: queried in the frame's space, EOT-averaged.
pub(super) struct Target<'a> {
    model: &'a dyn Classifier,
    pub(super) frame: &'a Frame,
    train: bool,
    /// Gradient samples per step (1 for deterministic models).
    eot: i64,
    /// Most images per forward pass when repeating the batch for EOT (lowered when a pass runs
    /// out of memory).
    pass_images: Cell<i64>,
}

impl<'a> Target<'a> {
    /// `model` queried in `frame`'s space, in training mode when `train`, averaging `eot`
    /// gradient samples per step (pass 1 for a deterministic model).
    pub(super) fn new(model: &'a dyn Classifier, frame: &'a Frame, train: bool, eot: i64) -> Self {
        Target {
            model,
            frame,
            train,
            eot,
            pass_images: Cell::new(EOT_PASS_IMAGES),
        }
    }

    pub(super) fn logits(&self, z: &Tensor) -> Result<Tensor, tch::TchError> {
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
    pub(super) fn gradient(&self, z: &Tensor, y: &Tensor) -> anyhow::Result<Tensor> {
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
    pub(super) fn assess(&self, z: &Tensor, y: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
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

/// What one (EOT-averaged) query of the model for a per-example loss returns.
pub(super) struct Query {
    /// ∇_z of the summed loss, averaged over the passes (`None` when not asked for).
    pub grad: Option<Tensor>,
    /// The loss per example, `f32 [N]`, averaged over the passes.
    pub loss: Tensor,
    /// Class scores `[N, C]` whose argmax is the prediction: the logits for one pass, the mean
    /// softmax over several.
    pub scores: Tensor,
}

impl Target<'_> {
    /// Queries the model at `z` for a per-example loss: `loss(logits, copies)` gets the logits
    /// of `copies` stacked copies of the batch (copy-major, `[copies·N, C]`; see
    /// [`repeat_labels`]) and returns the loss per row. Over `eot` passes the gradient, the loss
    /// and the scores are averaged, as [`Target::gradient`] averages the cross-entropy's. Used
    /// by the attacks whose loss is not the cross-entropy of the label (APGD's DLR losses,
    /// FAB's logit differences).
    pub(super) fn query(
        &self,
        z: &Tensor,
        loss: &dyn Fn(&Tensor, i64) -> Result<Tensor, tch::TchError>,
        with_grad: bool,
    ) -> anyhow::Result<Query> {
        let n = z.size().first().copied().unwrap_or(0);
        let z = if with_grad {
            z.f_detach()?.f_set_requires_grad(true)?
        } else {
            z.f_detach()?
        };
        let eot = self.eot.max(1);
        let sample = || {
            self.over_samples(&z, |copies| {
                let input = if copies == 1 {
                    z.shallow_clone()
                } else {
                    let mut reps = vec![1i64; z.dim()];
                    if let Some(first) = reps.first_mut() {
                        *first = copies;
                    }
                    z.f_repeat(reps.as_slice())?
                };
                let logits = self.logits(&input)?;
                let per_row = loss(&logits, copies)?;
                let mut parts = Vec::with_capacity(3);
                if with_grad {
                    let total = per_row.f_sum(Kind::Float)?.f_div_scalar(eot as f64)?;
                    let mut grads = Tensor::f_run_backward(&[&total], &[&z], false, false)?;
                    parts.push(
                        grads
                            .pop()
                            .context("autograd returned no input gradient")?
                            .f_contiguous()?,
                    );
                }
                let per_row = per_row.f_detach()?;
                let logits = logits.f_detach()?;
                if eot == 1 {
                    parts.push(per_row);
                    parts.push(logits);
                } else {
                    let sum0 =
                        |t: Tensor| t.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
                    parts.push(sum0(per_row.f_view([copies, n])?)?);
                    parts.push(sum0(
                        logits.f_softmax(-1, Kind::Float)?.f_view([copies, n, -1])?,
                    )?);
                }
                Ok(parts)
            })
        };
        // Without a gradient, no graph is recorded.
        let mut sums = if with_grad {
            sample()?
        } else {
            tch::no_grad(sample)?
        };
        let scale = |t: Tensor| -> Result<Tensor, tch::TchError> {
            if eot == 1 {
                Ok(t)
            } else {
                t.f_div_scalar(eot as f64)
            }
        };
        let scores = scale(sums.pop().context("no scores")?)?;
        let loss = scale(sums.pop().context("no loss")?)?;
        // The gradient is already divided by `eot` (the loss was, before backward).
        let grad = sums.pop();
        Ok(Query { grad, loss, scores })
    }
}

/// `labels` repeated for `copies` stacked copies of the batch (copy-major), as the loss of
/// [`Target::query`] needs them.
pub(super) fn repeat_labels(labels: &Tensor, copies: i64) -> Result<Tensor, tch::TchError> {
    if copies == 1 {
        Ok(labels.shallow_clone())
    } else {
        labels.f_repeat([copies])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::testing::{inputs, max_abs_diff};
    use crate::models::Weights;
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
        fn name(&self) -> &str {
            "claims-randomized"
        }
        fn weights(&self) -> &dyn Weights {
            self.0.weights()
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
}
