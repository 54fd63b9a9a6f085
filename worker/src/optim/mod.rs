//! SGD (momentum, weight decay, Nesterov) and Adam, written out so that their state can be
//! checkpointed: libtorch's optimizers keep momentum buffers where `tch` cannot reach them, and
//! a run resumed without them would not continue the same optimization. The updates follow
//! `torch.optim.SGD` and `torch.optim.Adam` (L2 weight decay added to the gradient).
//!
//! The update rules live here; `flat.rs` is SGD's fast layout (one buffer for all
//! parameters), which computes the same update bit for bit.

mod flat;

use std::collections::BTreeMap;

use advsweep_core::Optimizer;
use tch::{Kind, Tensor};

use crate::error::Permanent;
use flat::{Flat, Sgd};

/// An optimizer over a fixed list of trainable tensors.
#[derive(Debug)]
pub struct Optim {
    spec: Optimizer,
    params: Vec<Tensor>,
    /// SGD: one momentum buffer per parameter; Adam: first then second moments.
    state: Vec<Option<Tensor>>,
    /// The parameters as views of one buffer, when they share a device and kind.
    flat: Option<Flat>,
    step: i64,
    lr: f64,
}

impl Optim {
    pub fn new(params: Vec<Tensor>, spec: &Optimizer, lr: f64) -> anyhow::Result<Optim> {
        Optim::with_layout(params, spec, lr, true)
    }

    /// [`Optim::new`]; `flat` = false keeps every parameter in its own storage.
    fn with_layout(
        mut params: Vec<Tensor>,
        spec: &Optimizer,
        lr: f64,
        flat: bool,
    ) -> anyhow::Result<Optim> {
        if let Optimizer::Sgd {
            momentum, nesterov, ..
        } = spec
            && *nesterov
            && *momentum <= 0.0
        {
            return Err(
                Permanent("Nesterov momentum needs a momentum greater than 0".into()).into(),
            );
        }
        let slots = match spec {
            Optimizer::Sgd { .. } => params.len(),
            Optimizer::Adam { .. } => 2 * params.len(),
        };
        let flat = if flat { Flat::new(&mut params)? } else { None };
        Ok(Optim {
            spec: spec.clone(),
            params,
            state: (0..slots).map(|_| None).collect(),
            flat,
            step: 0,
            lr,
        })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_();
            }
        }
    }

    /// The parameters, in the order [`Optim::step_with`] expects their gradients.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// One update from the gradients currently stored on the parameters (left unchanged).
    pub fn step(&mut self) -> anyhow::Result<()> {
        let grads = self.params.iter().map(Tensor::grad).collect();
        self.update(grads, false)
    }

    /// One update from `grads`, one per parameter in [`Optim::params`] order (an undefined
    /// tensor: no gradient, the parameter is skipped), e.g. from
    /// `Tensor::run_backward(&[loss], opt.params(), …)`. The gradients are consumed: the update
    /// works in them in place, saving an allocation and a pass per parameter.
    pub fn step_with(&mut self, grads: Vec<Tensor>) -> anyhow::Result<()> {
        if grads.len() != self.params.len() {
            anyhow::bail!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            );
        }
        self.update(grads, true)
    }

    /// The update; with `owned`, `grads` may be overwritten. Every in-place operation computes
    /// exactly what its out-of-place form would (same operands, same order), so both paths give
    /// bit-identical parameters.
    fn update(&mut self, grads: Vec<Tensor>, owned: bool) -> anyhow::Result<()> {
        if let (Optimizer::Sgd { .. }, Some(flat)) = (&self.spec, &self.flat)
            && grads.iter().all(Tensor::defined)
            // The momentum buffers are views of the flat one, or do not exist yet.
            && (flat.momentum.is_some() || self.state.iter().all(Option::is_none))
        {
            return self.sgd_flat(grads);
        }
        self.step += 1;
        let n = self.params.len();
        tch::no_grad(|| -> anyhow::Result<()> {
            for (i, grad) in grads.into_iter().enumerate().take(n) {
                let p = &self.params[i];
                if !grad.defined() {
                    continue;
                }
                match self.spec {
                    Optimizer::Sgd {
                        momentum,
                        weight_decay,
                        nesterov,
                    } => {
                        // d = g + wd·p
                        let mut d = match (weight_decay != 0.0, owned) {
                            (true, true) => {
                                let mut g = grad;
                                let _ = g.f_add_(&p.f_mul_scalar(weight_decay)?)?;
                                g
                            }
                            (true, false) => grad.f_add(&p.f_mul_scalar(weight_decay)?)?,
                            (false, true) => grad,
                            (false, false) => grad.f_detach_copy()?,
                        };
                        if momentum != 0.0 {
                            // buf = d on the first step, else momentum·buf + d (in place)
                            let buf = match self.state[i].take() {
                                None => d.f_detach_copy()?,
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
                            self.state[i] = Some(buf);
                        }
                        let mut p = p.shallow_clone();
                        let _ = p.f_sub_(&d.f_mul_scalar(self.lr)?)?;
                    }
                    Optimizer::Adam {
                        beta1,
                        beta2,
                        weight_decay,
                    } => {
                        let g = if weight_decay != 0.0 {
                            grad.f_add(&p.f_mul_scalar(weight_decay)?)?
                        } else {
                            grad.shallow_clone()
                        };
                        let m = match self.state[i].take() {
                            None => g.f_mul_scalar(1.0 - beta1)?,
                            Some(m) => m
                                .f_mul_scalar(beta1)?
                                .f_add(&g.f_mul_scalar(1.0 - beta1)?)?,
                        };
                        let g2 = g.f_mul(&g)?;
                        let v = match self.state[n + i].take() {
                            None => g2.f_mul_scalar(1.0 - beta2)?,
                            Some(v) => v
                                .f_mul_scalar(beta2)?
                                .f_add(&g2.f_mul_scalar(1.0 - beta2)?)?,
                        };
                        let t = self.step as i32;
                        let bias1 = 1.0 - beta1.powi(t);
                        let bias2 = 1.0 - beta2.powi(t);
                        let denom = v.f_div_scalar(bias2)?.f_sqrt()?.f_add_scalar(1e-8)?;
                        let update = m.f_div(&denom)?.f_mul_scalar(self.lr / bias1)?;
                        let mut p = p.shallow_clone();
                        let _ = p.f_sub_(&update)?;
                        self.state[i] = Some(m);
                        self.state[n + i] = Some(v);
                    }
                }
            }
            Ok(())
        })?;
        if self.flat.as_ref().is_some_and(|f| f.momentum.is_none()) {
            self.regather_momentum()?;
        }
        Ok(())
    }

    /// The SGD update on the flat buffers ([`Flat::sgd_step`]); the caller checked that the
    /// optimizer is SGD and the parameters are flat.
    fn sgd_flat(&mut self, grads: Vec<Tensor>) -> anyhow::Result<()> {
        let Optimizer::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } = self.spec
        else {
            anyhow::bail!("the flat update is SGD's");
        };
        let Some(flat) = self.flat.as_mut() else {
            anyhow::bail!("the parameters are not flat");
        };
        self.step += 1;
        let sgd = Sgd {
            momentum,
            weight_decay,
            nesterov,
        };
        flat.sgd_step(grads, &self.params, &mut self.state, sgd, self.lr)
    }

    /// After the state was replaced slot by slot: SGD's momentum buffers back into one flat
    /// buffer when every parameter has one (else the per-parameter path takes over).
    fn regather_momentum(&mut self) -> anyhow::Result<()> {
        let Some(flat) = self.flat.as_mut() else {
            return Ok(());
        };
        let sgd = matches!(self.spec, Optimizer::Sgd { .. });
        flat.regather_momentum(&mut self.state, &self.params, sgd)
    }

    /// The optimizer's state as named tensors (`optim.step`, `optim.state.<slot>`), for
    /// checkpoints.
    pub fn state_tensors(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        out.insert("optim.step".to_owned(), Tensor::f_from_slice(&[self.step])?);
        for (i, s) in self.state.iter().enumerate() {
            if let Some(t) = s {
                // A copy: the update works in the buffers in place.
                out.insert(
                    format!("optim.state.{i}"),
                    t.f_to_device(tch::Device::Cpu)?.f_detach_copy()?,
                );
            }
        }
        Ok(out)
    }

    /// Restores what [`Optim::state_tensors`] saved (tensors moved to each parameter's device).
    pub fn load_state(&mut self, saved: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        let step = saved
            .get("optim.step")
            .ok_or_else(|| anyhow::anyhow!("checkpoint lacks optim.step"))?;
        self.step = step.f_to_kind(Kind::Int64)?.int64_value(&[0]);
        let n = self.params.len();
        for i in 0..self.state.len() {
            self.state[i] = match saved.get(&format!("optim.state.{i}")) {
                None => None,
                Some(t) => {
                    let p = &self.params[i % n];
                    if t.size() != p.size() {
                        anyhow::bail!(
                            "checkpoint optimizer slot {i} has shape {:?}, parameter has {:?}",
                            t.size(),
                            p.size()
                        );
                    }
                    Some(
                        t.f_to_device(p.device())?
                            .f_to_kind(p.kind())?
                            .f_detach_copy()?,
                    )
                }
            };
        }
        self.regather_momentum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// One quadratic step by hand: p = 1, grad = 2p = 2.
    fn one_param() -> Tensor {
        Tensor::from_slice(&[1.0f32]).set_requires_grad(true)
    }

    fn grad_of_square(p: &Tensor) {
        let loss = p.square().sum(Kind::Float);
        loss.backward();
    }

    #[test]
    fn sgd_with_momentum_matches_pytorch_by_hand() -> anyhow::Result<()> {
        let p = one_param();
        let spec = Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        };
        let mut o = Optim::new(vec![p.shallow_clone()], &spec, 0.1)?;
        for _ in 0..2 {
            o.zero_grad();
            grad_of_square(&p);
            o.step()?;
        }
        // step 1: buf = 2, p = 1 - 0.2 = 0.8; step 2: g = 1.6, buf = 1.8 + 1.6 = 3.4, p = 0.46
        assert!(
            (p.double_value(&[0]) - 0.46).abs() < 1e-6,
            "{}",
            p.double_value(&[0])
        );
        Ok(())
    }

    /// `step_with` on gradients from `run_backward` (updated in place) gives bit-identical
    /// parameters to `backward` + `step`, for every SGD variant.
    #[test]
    fn step_with_fresh_gradients_matches_step() -> anyhow::Result<()> {
        for (momentum, weight_decay, nesterov) in [
            (0.9, 5e-4, false),
            (0.9, 5e-4, true),
            (0.0, 5e-4, false),
            (0.9, 0.0, false),
        ] {
            let spec = Optimizer::Sgd {
                momentum,
                weight_decay,
                nesterov,
            };
            tch::manual_seed(4);
            let start = Tensor::f_randn([3, 5], (Kind::Float, Device::Cpu))?;
            let target = Tensor::f_randn([3, 5], (Kind::Float, Device::Cpu))?;
            let a = start.f_detach_copy()?.f_set_requires_grad(true)?;
            let b = start.f_detach_copy()?.f_set_requires_grad(true)?;
            let mut oa = Optim::new(vec![a.shallow_clone()], &spec, 0.1)?;
            let mut ob = Optim::new(vec![b.shallow_clone()], &spec, 0.1)?;
            let loss = |p: &Tensor| -> anyhow::Result<Tensor> {
                Ok(p.f_sub(&target)?
                    .f_pow_tensor_scalar(3)?
                    .f_sum(Kind::Float)?)
            };
            for _ in 0..4 {
                oa.zero_grad();
                loss(&a)?.f_backward()?;
                oa.step()?;
                let grads = Tensor::f_run_backward(&[loss(&b)?], ob.params(), false, false)?;
                ob.step_with(grads)?;
            }
            assert!(a.f_equal(&b)?, "{spec:?}");
            assert!(ob.step_with(Vec::new()).is_err());
        }
        Ok(())
    }

    /// Flat parameters give bit-identical updates to separate ones, through a checkpoint
    /// round trip and a step where one gradient is missing, and stay the model's tensors.
    #[test]
    fn flat_parameters_update_like_separate_ones() -> anyhow::Result<()> {
        for (momentum, weight_decay, nesterov) in [(0.9, 5e-4, false), (0.9, 5e-4, true)] {
            let spec = Optimizer::Sgd {
                momentum,
                weight_decay,
                nesterov,
            };
            tch::manual_seed(5);
            let shapes: [&[i64]; 3] = [&[4, 3], &[], &[2, 2, 2]];
            let start: Vec<Tensor> = shapes
                .iter()
                .map(|s| Tensor::f_randn(*s, (Kind::Float, Device::Cpu)))
                .collect::<Result<_, _>>()?;
            let fresh = || -> anyhow::Result<Vec<Tensor>> {
                Ok(start
                    .iter()
                    .map(|t| t.f_detach_copy()?.f_set_requires_grad(true))
                    .collect::<Result<_, _>>()?)
            };
            let (a, b) = (fresh()?, fresh()?);
            let mut flat = Optim::with_layout(
                a.iter().map(Tensor::shallow_clone).collect(),
                &spec,
                0.1,
                true,
            )?;
            let mut separate = Optim::with_layout(
                b.iter().map(Tensor::shallow_clone).collect(),
                &spec,
                0.1,
                false,
            )?;
            assert!(flat.flat.is_some() && separate.flat.is_none());
            let loss = |ps: &[Tensor]| -> anyhow::Result<Tensor> {
                let mut total = Tensor::f_zeros([], (Kind::Float, Device::Cpu))?;
                for p in ps {
                    total = total.f_add(&p.f_sin()?.f_pow_tensor_scalar(2)?.f_sum(Kind::Float)?)?;
                }
                Ok(total)
            };
            for step in 0..6 {
                let mut ga = Tensor::f_run_backward(&[loss(&a)?], flat.params(), false, false)?;
                let mut gb = Tensor::f_run_backward(&[loss(&b)?], separate.params(), false, false)?;
                if step == 4 {
                    // A parameter without a gradient is skipped by both.
                    ga[1] = Tensor::new();
                    gb[1] = Tensor::new();
                }
                flat.step_with(ga)?;
                separate.step_with(gb)?;
                if step == 2 {
                    let saved = flat.state_tensors()?;
                    flat.load_state(&saved)?;
                    assert!(flat.flat.as_ref().is_some_and(|f| f.momentum.is_some()));
                }
            }
            for (x, y) in a.iter().zip(&b) {
                assert!(x.f_equal(y)?, "{spec:?}");
            }
            let (sa, sb) = (flat.state_tensors()?, separate.state_tensors()?);
            assert_eq!(sa.len(), sb.len());
            for (key, t) in &sa {
                assert!(
                    sb.get(key).is_some_and(|u| t.f_equal(u).unwrap_or(false)),
                    "{key}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn state_round_trips_and_resumes_identically() -> anyhow::Result<()> {
        for spec in [
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: true,
            },
            Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                weight_decay: 0.0,
            },
        ] {
            // Straight: three steps.
            let a = one_param();
            let mut oa = Optim::new(vec![a.shallow_clone()], &spec, 0.1)?;
            for _ in 0..3 {
                oa.zero_grad();
                grad_of_square(&a);
                oa.step()?;
            }
            // Interrupted: two steps, save, restore into a fresh optimizer, one more step.
            let b = one_param();
            let mut ob = Optim::new(vec![b.shallow_clone()], &spec, 0.1)?;
            for _ in 0..2 {
                ob.zero_grad();
                grad_of_square(&b);
                ob.step()?;
            }
            let saved = ob.state_tensors()?;
            let value = b.double_value(&[0]);
            let c = Tensor::from_slice(&[value as f32])
                .set_requires_grad(true)
                .to_device(Device::Cpu);
            let mut oc = Optim::new(vec![c.shallow_clone()], &spec, 0.1)?;
            oc.load_state(&saved)?;
            oc.zero_grad();
            grad_of_square(&c);
            oc.step()?;
            assert!(
                (a.double_value(&[0]) - c.double_value(&[0])).abs() < 1e-6,
                "{spec:?}: {} vs {}",
                a.double_value(&[0]),
                c.double_value(&[0])
            );
        }
        Ok(())
    }
}
