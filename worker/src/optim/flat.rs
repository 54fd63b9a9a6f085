//! The parameters, and SGD's momentum buffers, as views of one contiguous buffer each.
//!
//! A speed layout, not an optimizer: it changes where the tensors live and how many kernels an
//! SGD step launches, never what the step computes, so it sits beside the update rules
//! ([`super::Optim`]) rather than inside them.

use tch::Tensor;

/// The parameters, and SGD's momentum buffers, as views of one contiguous buffer each, so that
/// an SGD step is a handful of elementwise kernels over the whole model instead of a handful
/// per parameter (ResNet-18 has 62 parameter tensors: hundreds of tiny kernel launches per
/// step on a GPU, the same few on one buffer). Elementwise kernels compute every element the
/// same way wherever it lives, so the update is bit for bit the per-parameter one; the
/// parameters stay ordinary leaf tensors to autograd, the model and checkpoints.
#[derive(Debug)]
pub(super) struct Flat {
    params: Tensor,
    /// Offset and length of each parameter in the buffers.
    spans: Vec<(i64, i64)>,
    /// SGD's momentum buffer, whose views are `state[..]`, once it exists.
    pub(super) momentum: Option<Tensor>,
}

impl Flat {
    /// Moves `params` into one buffer (their values unchanged); `None` when they differ in
    /// device or kind.
    pub(super) fn new(params: &mut [Tensor]) -> anyhow::Result<Option<Flat>> {
        let Some(first) = params.first() else {
            return Ok(None);
        };
        let (device, kind) = (first.device(), first.kind());
        if params
            .iter()
            .any(|p| p.device() != device || p.kind() != kind)
        {
            return Ok(None);
        }
        tch::no_grad(|| -> anyhow::Result<Option<Flat>> {
            let pieces = params
                .iter()
                .map(|p| p.f_detach()?.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?;
            let buffer = Tensor::f_cat(&pieces, 0)?;
            let mut spans = Vec::with_capacity(params.len());
            let mut offset = 0;
            for p in params.iter_mut() {
                let len = p.numel() as i64;
                p.f_set_data(
                    &buffer
                        .f_narrow(0, offset, len)?
                        .f_view(p.size().as_slice())?,
                )?;
                spans.push((offset, len));
                offset += len;
            }
            Ok(Some(Flat {
                params: buffer,
                spans,
                momentum: None,
            }))
        })
    }

    /// Views of `buffer` shaped like the parameters.
    fn views(&self, buffer: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>, tch::TchError> {
        self.spans
            .iter()
            .zip(params)
            .map(|(&(offset, len), p)| buffer.f_narrow(0, offset, len)?.f_view(p.size().as_slice()))
            .collect()
    }

    /// The SGD update of the per-parameter path ([`super::Optim`]), on the flat buffers: the
    /// gradients concatenated (one copy), then the same operations in the same order.
    /// `state` holds the per-parameter momentum slots, which become views of the flat buffer.
    pub(super) fn sgd_step(
        &mut self,
        grads: Vec<Tensor>,
        params: &[Tensor],
        state: &mut [Option<Tensor>],
        sgd: Sgd,
        lr: f64,
    ) -> anyhow::Result<()> {
        let Sgd {
            momentum,
            weight_decay,
            nesterov,
        } = sgd;
        tch::no_grad(|| -> anyhow::Result<()> {
            let pieces = grads
                .iter()
                .map(|g| g.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?;
            drop(grads);
            // d = g + wd·p
            let mut d = Tensor::f_cat(&pieces, 0)?;
            drop(pieces);
            if weight_decay != 0.0 {
                let _ = d.f_add_(&self.params.f_mul_scalar(weight_decay)?)?;
            }
            if momentum != 0.0 {
                let buf = match self.momentum.take() {
                    None => {
                        let b = d.f_detach_copy()?;
                        for (slot, view) in state.iter_mut().zip(self.views(&b, params)?) {
                            *slot = Some(view);
                        }
                        b
                    }
                    Some(mut b) => {
                        let _ = b.f_mul_scalar_(momentum)?.f_add_(&d)?;
                        b
                    }
                };
                if nesterov {
                    let _ = d.f_add_(&buf.f_mul_scalar(momentum)?)?;
                } else {
                    d = buf.shallow_clone();
                }
                self.momentum = Some(buf);
            }
            let mut p = self.params.shallow_clone();
            let _ = p.f_sub_(&d.f_mul_scalar(lr)?)?;
            // The parameters were written through the buffer, which their own version counters
            // (autograd's record of in-place writes) do not see; whatever caches a function of
            // the weights relies on them (the folded batch norm, `models::layers::ConvBn`).
            for p in params {
                mark_written(p)?;
            }
            Ok(())
        })
    }

    /// After `state` was replaced slot by slot: SGD's momentum buffers back into one flat
    /// buffer when every parameter has one (else the per-parameter path takes over). `sgd`:
    /// whether the optimizer is SGD (Adam's moments are never flat).
    pub(super) fn regather_momentum(
        &mut self,
        state: &mut [Option<Tensor>],
        params: &[Tensor],
        sgd: bool,
    ) -> anyhow::Result<()> {
        self.momentum = None;
        if !sgd || state.iter().any(Option::is_none) {
            return Ok(());
        }
        let pieces = state
            .iter()
            .flatten()
            .map(|t| t.f_reshape([-1]))
            .collect::<Result<Vec<_>, _>>()?;
        let buffer = Tensor::f_cat(&pieces, 0)?;
        for (slot, view) in state.iter_mut().zip(self.views(&buffer, params)?) {
            *slot = Some(view);
        }
        self.momentum = Some(buffer);
        Ok(())
    }
}

/// Bumps `p`'s version counter without touching its values: an in-place no-op on an empty view,
/// which shares the counter of the tensor it views.
fn mark_written(p: &Tensor) -> Result<(), tch::TchError> {
    let mut empty = if p.dim() == 0 {
        p.f_unsqueeze(0)?.f_narrow(0, 0, 0)?
    } else {
        p.f_narrow(0, 0, 0)?
    };
    let _ = empty.f_zero_()?;
    Ok(())
}

/// SGD's hyperparameters, as [`advsweep_core::Optimizer::Sgd`] holds them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}
