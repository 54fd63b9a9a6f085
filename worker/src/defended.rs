//! The defended model that evaluation attacks: the trained classifier behind the run's
//! inference-time defenses.
//!
//! `forward(x)` = `classifier(denoiser(noise(x)))`, each stage optional:
//! 1. **inference noise** σ (`Defense::inference_noise`): `clamp(x + σ·n, 0, 1)` with
//!    `n ~ N(0, 1)` drawn from torch's generator afresh on every forward pass (attacks
//!    included, so attacks need EOT — [`Classifier::randomized`] is true);
//! 2. **denoiser** ([`crate::denoiser::Denoiser`]): `clamp(x − dncnn(x), 0, 1)`;
//! 3. the classifier.
//!
//! Everything is differentiable end to end, so white-box attacks see the whole pipeline
//! (gradients flow through the denoiser; through the noise they are the gradients at the noisy
//! point, averaged by EOT). Training is unaffected: the classifier is trained (standard or
//! adversarially) on clean inputs without noise or denoiser, and the denoiser is trained
//! afterwards against the bare classifier; only evaluation uses this wrapper.
//!
//! [`Classifier::weights`] are the classifier's (the denoiser has its own,
//! [`Defended::denoiser`]).

use std::sync::atomic::AtomicI64;

use tch::{TchError, Tensor};

use crate::denoiser::Denoiser;
use crate::error::Permanent;
use crate::models::{Classifier, Weights};

/// A classifier with optional inference noise and denoiser in front of it.
pub struct Defended {
    classifier: Box<dyn Classifier>,
    denoiser: Option<Denoiser>,
    /// σ in pixel units; 0 = none.
    noise: f64,
}

impl std::fmt::Debug for Defended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defended")
            .field("classifier", &self.classifier.name())
            .field("denoiser", &self.denoiser)
            .field("noise", &self.noise)
            .finish()
    }
}

impl Defended {
    /// Wraps `classifier`. `inference_noise` must be finite and ≥ 0 (0 or `None`: no noise).
    pub fn new(
        classifier: Box<dyn Classifier>,
        denoiser: Option<Denoiser>,
        inference_noise: Option<f64>,
    ) -> Result<Defended, Permanent> {
        let noise = inference_noise.unwrap_or(0.0);
        if !noise.is_finite() || noise < 0.0 {
            return Err(Permanent(format!(
                "inference noise sigma must be finite and ≥ 0, got {noise}"
            )));
        }
        Ok(Defended {
            classifier,
            denoiser,
            noise,
        })
    }

    /// No defense at inference: forwards exactly like `classifier`.
    pub fn plain(classifier: Box<dyn Classifier>) -> Defended {
        Defended {
            classifier,
            denoiser: None,
            noise: 0.0,
        }
    }

    pub fn classifier(&self) -> &dyn Classifier {
        self.classifier.as_ref()
    }

    pub fn denoiser(&self) -> Option<&Denoiser> {
        self.denoiser.as_ref()
    }

    /// σ of the inference noise (0 when none).
    pub fn inference_noise(&self) -> f64 {
        self.noise
    }

    pub fn into_parts(self) -> (Box<dyn Classifier>, Option<Denoiser>) {
        (self.classifier, self.denoiser)
    }

    /// The classifier's input for `x`: noise, then the denoiser.
    pub fn preprocess(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let x = if self.noise > 0.0 {
            x.f_add(
                &Tensor::f_randn(x.size().as_slice(), (x.kind(), x.device()))?
                    .f_mul_scalar(self.noise)?,
            )?
            .f_clamp(0.0, 1.0)?
        } else {
            x.shallow_clone()
        };
        match &self.denoiser {
            Some(d) => d.denoise(&x, train),
            None => Ok(x),
        }
    }
}

impl Classifier for Defended {
    fn name(&self) -> &str {
        self.classifier.name()
    }

    fn weights(&self) -> &dyn Weights {
        self.classifier.weights()
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        self.classifier.forward(&self.preprocess(x, train)?, train)
    }

    fn randomized(&self) -> bool {
        self.noise > 0.0 || self.classifier.randomized()
    }

    fn batches_tracked(&self) -> Option<&AtomicI64> {
        self.classifier.batches_tracked()
    }
}
