//! SGD (momentum, weight decay, Nesterov) and Adam, written out so that their state can be
//! checkpointed: libtorch's optimizers keep momentum buffers where `tch` cannot reach them, and
//! a run resumed without them would not continue the same optimization. The updates follow
//! `torch.optim.SGD` and `torch.optim.Adam` (L2 weight decay added to the gradient).

use std::collections::BTreeMap;

use advsweep_spec::Optimizer;
use tch::{Kind, Tensor};

use crate::error::Permanent;

/// An optimizer over a fixed list of trainable tensors.
#[derive(Debug)]
pub struct Optim {
    spec: Optimizer,
    params: Vec<Tensor>,
    /// SGD: one momentum buffer per parameter; Adam: first then second moments.
    state: Vec<Option<Tensor>>,
    step: i64,
    lr: f64,
}

impl Optim {
    pub fn new(params: Vec<Tensor>, spec: &Optimizer, lr: f64) -> anyhow::Result<Optim> {
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
        Ok(Optim {
            spec: spec.clone(),
            params,
            state: (0..slots).map(|_| None).collect(),
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

    /// One update from the gradients currently stored on the parameters.
    pub fn step(&mut self) -> anyhow::Result<()> {
        self.step += 1;
        let n = self.params.len();
        tch::no_grad(|| -> anyhow::Result<()> {
            for i in 0..n {
                let p = &self.params[i];
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                match self.spec {
                    Optimizer::Sgd {
                        momentum,
                        weight_decay,
                        nesterov,
                    } => {
                        let mut d = if weight_decay != 0.0 {
                            grad.f_add(&p.f_mul_scalar(weight_decay)?)?
                        } else {
                            grad.f_detach_copy()?
                        };
                        if momentum != 0.0 {
                            let buf = match self.state[i].take() {
                                None => d.f_detach_copy()?,
                                Some(b) => b.f_mul_scalar(momentum)?.f_add(&d)?,
                            };
                            d = if nesterov {
                                d.f_add(&buf.f_mul_scalar(momentum)?)?
                            } else {
                                buf.shallow_clone()
                            };
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
        })
    }

    /// The optimizer's state as named tensors (`optim.step`, `optim.state.<slot>`), for
    /// checkpoints.
    pub fn state_tensors(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        out.insert("optim.step".to_owned(), Tensor::f_from_slice(&[self.step])?);
        for (i, s) in self.state.iter().enumerate() {
            if let Some(t) = s {
                out.insert(
                    format!("optim.state.{i}"),
                    t.f_detach()?.f_to_device(tch::Device::Cpu)?,
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
                    Some(t.f_to_device(p.device())?.f_to_kind(p.kind())?)
                }
            };
        }
        Ok(())
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
