//! Noise injection ("network randomization", the seed's noisy-* models; Parametric Noise
//! Injection of He, Rakin & Fan 2019 when learnable).
//!
//! A model built with [`advsweep_core::NoiseInjection`] adds Gaussian noise, in training AND in
//! inference, at each listed injection point of its architecture
//! ([`advsweep_core::Arch::noise_points`]):
//!
//! * `input`: the image in [0, 1], before normalization: `x + s·n`, `s` in pixel units; the
//!   noisy image is not clamped (the noise is part of the model, not of the data);
//! * any other point, the output of that named stage (see each model's docs for where a stage
//!   ends): `h + s·std(h)·n`, with `std(h)` the detached, unbiased standard deviation of each
//!   sample's activations (per sample, so one image's noise never depends on the rest of the
//!   batch), so one `s` means the same relative perturbation at every layer;
//!
//! where `n ~ N(0, 1)` is drawn fresh from torch's generator on every forward pass and
//! `s = sigma`, or with `learnable` `s = max(α, 0)` for one trainable scalar `α` per point,
//! initialised to `sigma` and stored in the VarStore (and checkpoints) as
//! `noise.<point>.alpha` (a 0-dimensional float tensor, like `nn.Parameter(torch.tensor(σ))`).
//!
//! With `sigma = 0` and fixed scales no noise op runs at all, so the model is exactly
//! deterministic; [`Noise::randomized`] tells attacks whether expectation over
//! transformation is worth anything.

use advsweep_core::{Arch, NoiseInjection};
use tch::nn::{self, Init};
use tch::{TchError, Tensor};

use crate::error::Permanent;

/// A validated noise specification for one architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseConfig {
    pub sigma: f64,
    /// Injection points, in the architecture's order, each once.
    pub points: Vec<&'static str>,
    pub learnable: bool,
}

impl NoiseConfig {
    /// Checks `spec` against `arch`: core's rules for noise (`NoiseInjection::validate`), its
    /// points those of the architecture (`Arch::noise_layers`, which also reads `hidden` and
    /// `all`), none repeated. Errors are [`Permanent`] and name the offending
    /// value and the valid points.
    pub fn validate(arch: Arch, spec: &NoiseInjection) -> Result<NoiseConfig, Permanent> {
        // σ and the list's shape are core's rules (the same the wire applies); whether the
        // points exist is the architecture's (core's catalogue). Only a repeated point is the
        // worker's own concern: the coordinator never sends one, a direct caller might.
        spec.validate().map_err(|e| Permanent(e.to_string()))?;
        let layers = arch.noise_layers(&spec.layers).map_err(Permanent)?;
        if let Some(layer) = spec
            .layers
            .iter()
            .enumerate()
            .find_map(|(i, layer)| spec.layers[..i].contains(layer).then_some(layer))
        {
            return Err(Permanent(format!("noise point `{layer}` is listed twice")));
        }
        let points = arch
            .noise_points()
            .iter()
            .copied()
            .filter(|p| layers.iter().any(|l| l == p))
            .collect();
        Ok(NoiseConfig {
            sigma: spec.sigma,
            points,
            learnable: spec.learnable,
        })
    }
}

#[derive(Debug)]
enum Scale {
    Fixed(f64),
    /// `α`, used as `max(α, 0)`.
    Learnable(Tensor),
}

#[derive(Debug)]
struct Point {
    name: &'static str,
    scale: Scale,
}

/// The noise of one model instance: which points are active and their scales.
#[derive(Debug)]
pub struct Noise {
    points: Vec<Point>,
    randomized: bool,
}

impl Noise {
    /// No noise anywhere.
    pub fn disabled() -> Noise {
        Noise {
            points: Vec::new(),
            randomized: false,
        }
    }

    /// Noise as configured; learnable scales are created under `root / "noise" / point` as
    /// `alpha`. Call after creating the model's layers (it draws nothing from the generator,
    /// but keeping noise variables last keeps the layer variables in PyTorch's order).
    pub fn new(root: &nn::Path<'_>, config: Option<&NoiseConfig>) -> Result<Noise, TchError> {
        let Some(config) = config else {
            return Ok(Noise::disabled());
        };
        let mut points = Vec::new();
        for &name in &config.points {
            let scale = if config.learnable {
                let p = root.sub("noise").sub(name);
                Scale::Learnable(p.f_var("alpha", &[], Init::Const(config.sigma))?)
            } else if config.sigma > 0.0 {
                Scale::Fixed(config.sigma)
            } else {
                continue; // σ = 0, fixed: nothing to add, nothing to store
            };
            points.push(Point { name, scale });
        }
        Ok(Noise {
            // A learnable scale that starts at 0 is no noise yet, but its gradient at 0 is not
            // zero (`clamp_min` passes it), so training can make it one: count it as random, so
            // that evaluation seeds its draws and never reuses a clean pass.
            randomized: !points.is_empty() && (config.sigma > 0.0 || config.learnable),
            points,
        })
    }

    /// Whether forward passes may be random: some point has σ > 0, or a learnable scale (which
    /// training can move off 0).
    pub fn randomized(&self) -> bool {
        self.randomized
    }

    /// `x` with the noise of `point` added (or `x` itself when that point is not active).
    pub fn apply(&self, point: &str, x: Tensor) -> Result<Tensor, TchError> {
        let Some(p) = self.points.iter().find(|p| p.name == point) else {
            return Ok(x);
        };
        // Drawn in logical (NCHW) order, whatever `x`'s memory layout (channels-last on the
        // CPU): the same noise for the same seed in either layout.
        let mut n = Tensor::f_randn(x.size().as_slice(), (x.kind(), x.device()))?;
        if point != "input" {
            n = n.f_mul(&per_sample_std(&x)?)?;
        }
        let n = match &p.scale {
            Scale::Fixed(s) => n.f_mul_scalar(*s)?,
            Scale::Learnable(alpha) => n.f_mul(&alpha.f_clamp_min(0.0)?)?,
        };
        x.f_add(&n)
    }
}

/// The detached, unbiased standard deviation of each sample of `x` (`[N, …]`), shaped to
/// broadcast against `x` (`[N, 1, …, 1]`).
fn per_sample_std(x: &Tensor) -> Result<Tensor, TchError> {
    let mut shape = vec![1i64; x.dim()];
    if let Some(first) = shape.first_mut() {
        *first = -1;
    }
    x.f_detach()?
        .f_flatten(1, -1)?
        .f_std_dim([1i64].as_slice(), true, false)?
        .f_view(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layers: &[&str]) -> NoiseInjection {
        NoiseInjection {
            sigma: 0.1,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            learnable: false,
        }
    }

    #[test]
    fn validation_names_bad_points_and_keeps_arch_order() {
        let cfg = NoiseConfig::validate(Arch::ResNet18, &spec(&["layer2", "input"]));
        assert_eq!(cfg.map(|c| c.points).ok(), Some(vec!["input", "layer2"]));
        let err = NoiseConfig::validate(Arch::Basic, &spec(&["input", "layer9"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`layer9`") && err.contains("conv1, conv2"),
            "{err}"
        );
        assert!(NoiseConfig::validate(Arch::Basic, &spec(&[])).is_err());
        assert!(NoiseConfig::validate(Arch::Basic, &spec(&["fc1", "fc1"])).is_err());
        let mut neg = spec(&["input"]);
        neg.sigma = -1.0;
        assert!(NoiseConfig::validate(Arch::Basic, &neg).is_err());
    }

    /// The same seed gives the same noise on an NCHW and on a channels-last activation.
    #[test]
    fn noise_does_not_depend_on_the_memory_layout() -> anyhow::Result<()> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = NoiseConfig::validate(Arch::Basic, &spec(&["conv1"]))?;
        let noise = Noise::new(&vs.root(), Some(&cfg))?;
        let x = Tensor::f_rand([2, 6, 14, 14], (tch::Kind::Float, tch::Device::Cpu))?;
        let mut out = Vec::new();
        for input in [x.shallow_clone(), crate::models::channels_last(&x)?] {
            tch::manual_seed(7);
            out.push(noise.apply("conv1", input)?);
        }
        assert!(out[0].f_equal(&out[1])?);
        assert!(!out[0].f_equal(&x)?);
        Ok(())
    }
}
