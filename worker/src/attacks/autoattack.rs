//! AutoAttack's cascade (Croce & Hein, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks", ICML 2020, §5): attacks run in order, each
//! only on the images every earlier attack failed on, so an image is robust only if every
//! stage failed, and the robust accuracy is that worst case over the stages.
//!
//! Versions, with the reference's settings (fra31/auto-attack `autoattack.py`; their stage
//! lists are the core catalogue's, `advsweep_core::catalogue::presets::cascade`):
//! * `standard` (ℓ∞ and ℓ2): APGD-CE (100 steps, 1 run), APGD-T (100 steps, 9 targets),
//!   FAB-T (100 steps, 9 targets), Square (5,000 queries, the schedule of p not rescaled);
//! * `plus` (ℓ∞ and ℓ2): APGD-CE and APGD-DLR (5 runs each), the untargeted FAB (5 runs),
//!   Square, APGD-T and FAB-T (9 targets each), 100 steps each;
//! * `rand`, for randomized defenses: APGD-CE and APGD-DLR, 100 steps, EOT over 20 passes.
//!
//! Accounting: the clean pass marks the correctly classified images; each stage runs on the
//! images still robust, in chunks of at most `batch_size`, and an image leaves the robust set
//! when the model (one forward pass in eval mode, as the final evaluation would see it)
//! misclassifies the stage's output, which then becomes its adversarial image. The result
//! holds the number of robust images after each stage, the record reviewers ask for ("APGD-CE
//! 45.1 → APGD-T 44.3 → FAB-T 44.3 → Square 44.3").

use advsweep_core::catalogue::presets;
use advsweep_core::{CascadeVersion, Norm};
use tch::{Kind, Tensor};

use super::apgd::{ApgdConfig, ApgdLoss, apgd};
use super::budget::Budget;
use super::fab::{FabConfig, fab};
use super::outcome::indices;
use super::square::{SquareConfig, square};
use crate::error::Permanent;
use crate::models::Classifier;
use crate::rng::Rng;

/// One attack of a cascade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Apgd(ApgdConfig),
    Fab(FabConfig),
    Square(SquareConfig),
}

impl Stage {
    /// The stage's short name: "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square".
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Apgd(cfg) => cfg.name(),
            Stage::Fab(cfg) => cfg.name(),
            Stage::Square(_) => "square",
        }
    }

    /// Target classes the stage needs besides the label (0 for untargeted stages).
    fn targets(&self) -> u32 {
        match self {
            Stage::Apgd(ApgdConfig {
                loss: ApgdLoss::TargetedDlr { targets },
                ..
            }) => *targets,
            Stage::Fab(cfg) => cfg.targets,
            _ => 0,
        }
    }
}

/// A cascade version: its stages for a norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Standard,
    Plus,
    Rand,
}

impl Version {
    /// `standard`, `plus` or `rand`.
    pub fn parse(name: &str) -> Result<Version, Permanent> {
        match CascadeVersion::named(name) {
            Some(CascadeVersion::Standard) => Ok(Version::Standard),
            Some(CascadeVersion::Plus) => Ok(Version::Plus),
            Some(CascadeVersion::Rand) => Ok(Version::Rand),
            Some(CascadeVersion::Custom) | None => Err(Permanent(format!(
                "autoattack: unknown version `{other}` (known: {})",
                CascadeVersion::NAMED.map(CascadeVersion::as_str).join(", "),
                other = name.escape_debug()
            ))),
        }
    }

    /// The vocabulary's version.
    pub fn cascade_version(self) -> CascadeVersion {
        match self {
            Version::Standard => CascadeVersion::Standard,
            Version::Plus => CascadeVersion::Plus,
            Version::Rand => CascadeVersion::Rand,
        }
    }

    /// The version's stages with the reference's settings: the core catalogue's list (the one
    /// definition of each version), each stage configured as in a cascade.
    pub fn stages(self, norm: Norm) -> Result<Vec<Stage>, Permanent> {
        presets::cascade(norm, self.cascade_version())
            .stages()
            .iter()
            .map(|s| super::stage(s, true))
            .collect()
    }
}

/// A cascade: its stages and the most images one attack call gets.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeConfig {
    pub stages: Vec<Stage>,
    pub batch_size: i64,
}

/// Robust images after one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCount {
    pub stage: String,
    pub robust: i64,
}

/// A cascade's outcome.
#[derive(Debug)]
pub struct CascadeResult {
    /// Per image the adversarial image of the stage that fooled it, else the clean image.
    pub images: Tensor,
    /// `bool [N]`: classified correctly on the clean image and by every stage.
    pub robust: Tensor,
    /// Correctly classified clean images.
    pub clean_correct: i64,
    /// Robust images after each stage, in order.
    pub after_stage: Vec<StageCount>,
}

/// Runs the cascade on `x` (`f32 [N, 3, H, W]` in [0, 1]) with labels `y` within `budget`.
pub fn autoattack(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    cfg: &CascadeConfig,
    rng: &mut Rng,
) -> anyhow::Result<CascadeResult> {
    let stages: Vec<&dyn CascadeStage> =
        cfg.stages.iter().map(|s| s as &dyn CascadeStage).collect();
    cascade(model, x, y, budget, &stages, cfg.batch_size, rng)
}

/// What the cascade needs of a stage (a trait so that the accounting can be tested with
/// stages that fool chosen images).
pub(super) trait CascadeStage {
    fn name(&self) -> String;
    /// Target classes besides the label the stage needs (checked against the model's classes
    /// before anything runs).
    fn targets(&self) -> u32;
    /// Checks the parameters (before anything runs).
    fn check(&self) -> anyhow::Result<()>;
    /// Adversarial images for `x` (pixels).
    fn attack(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        y: &Tensor,
        budget: Budget,
        rng: &mut Rng,
    ) -> anyhow::Result<Tensor>;
}

impl CascadeStage for Stage {
    fn name(&self) -> String {
        Stage::name(self).to_string()
    }

    fn targets(&self) -> u32 {
        Stage::targets(self)
    }

    fn check(&self) -> anyhow::Result<()> {
        Ok(match self {
            Stage::Apgd(c) => c.validate()?,
            Stage::Fab(c) => c.validate()?,
            Stage::Square(c) => c.validate()?,
        })
    }

    fn attack(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        y: &Tensor,
        budget: Budget,
        rng: &mut Rng,
    ) -> anyhow::Result<Tensor> {
        Ok(match self {
            Stage::Apgd(c) => apgd(model, x, y, budget, c, rng)?.images,
            Stage::Fab(c) => fab(model, x, y, budget, c, rng)?.images,
            Stage::Square(c) => square(model, x, y, budget, c, rng)?.images,
        })
    }
}

/// The model's predictions for `x`, in chunks of `batch_size` (no autograd).
fn predictions(
    model: &dyn Classifier,
    x: &Tensor,
    batch_size: i64,
) -> anyhow::Result<(Tensor, i64)> {
    let n = x.size().first().copied().unwrap_or(0);
    let mut parts = Vec::new();
    let mut classes = 0;
    tch::no_grad(|| -> anyhow::Result<()> {
        let mut start = 0;
        while start < n {
            let len = batch_size.min(n - start);
            let logits = model.forward(&x.f_narrow(0, start, len)?, false)?;
            classes = logits.size().get(1).copied().unwrap_or(0);
            parts.push(logits.f_argmax(1, false)?);
            start += len;
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Ok((Tensor::f_zeros([0], (Kind::Int64, x.device()))?, classes));
    }
    Ok((Tensor::f_cat(&parts, 0)?, classes))
}

/// The cascade's accounting over any stages.
pub(super) fn cascade(
    model: &dyn Classifier,
    x: &Tensor,
    y: &Tensor,
    budget: Budget,
    stages: &[&dyn CascadeStage],
    batch_size: i64,
    rng: &mut Rng,
) -> anyhow::Result<CascadeResult> {
    if batch_size < 1 {
        return Err(Permanent(format!(
            "autoattack: batch_size must be at least 1, got {batch_size}"
        ))
        .into());
    }
    if stages.is_empty() {
        return Err(Permanent("autoattack: the cascade has no stages".into()).into());
    }
    for stage in stages {
        stage.check()?;
    }
    let x = x.f_detach()?;
    let (clean, classes) = predictions(model, &x, batch_size)?;
    if let Some(stage) = stages.iter().find(|s| i64::from(s.targets()) > classes - 1) {
        return Err(Permanent(format!(
            "autoattack: {} wants {} targets but the model has {classes} classes (at most {})",
            stage.name(),
            stage.targets(),
            classes - 1
        ))
        .into());
    }
    let mut robust = clean.f_eq_tensor(y)?;
    let clean_correct = i64::try_from(robust.f_sum(Kind::Int64)?)?;
    let mut images = x.f_detach_copy()?;
    let mut after_stage = Vec::with_capacity(stages.len());
    for stage in stages {
        let mut stage_rng = Rng::new(rng.next_u64());
        let remaining = indices(&robust)?;
        let m = remaining.numel() as i64;
        let mut start = 0;
        while start < m {
            let len = batch_size.min(m - start);
            let chunk = remaining.f_narrow(0, start, len)?;
            let (xs, ys) = (x.f_index_select(0, &chunk)?, y.f_index_select(0, &chunk)?);
            let adversarial = stage.attack(model, &xs, &ys, budget, &mut stage_rng)?;
            let predicted =
                tch::no_grad(|| model.forward(&adversarial, false))?.f_argmax(1, false)?;
            let wrong = predicted.f_ne_tensor(&ys)?;
            let hit = chunk.f_masked_select(&wrong)?;
            let rows = indices(&wrong)?;
            images = images.f_index_copy(0, &hit, &adversarial.f_index_select(0, &rows)?)?;
            robust = robust.f_index_fill(0, &hit, 0)?;
            start += len;
        }
        after_stage.push(StageCount {
            stage: stage.name(),
            robust: i64::try_from(robust.f_sum(Kind::Int64)?)?,
        });
    }
    Ok(CascadeResult {
        images,
        robust,
        clean_correct,
        after_stage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Weights;
    use crate::models::basic::BasicNet;
    use std::cell::RefCell;
    use tch::Device;

    /// Predicts the class written in pixel (0, 0, 0): `round(9·x)`.
    struct PixelClass(BasicNet);

    impl Classifier for PixelClass {
        fn name(&self) -> &str {
            "pixel-class"
        }
        fn weights(&self) -> &dyn Weights {
            self.0.weights()
        }
        fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor, tch::TchError> {
            let class = x
                .f_select(1, 0)?
                .f_select(1, 0)?
                .f_select(1, 0)?
                .f_mul_scalar(9.0)?
                .f_round()?
                .f_to_kind(Kind::Int64)?;
            class.f_one_hot(10)?.f_to_kind(Kind::Float)
        }
    }

    /// Fools the images whose label is in `labels` (writes another class), and records the
    /// labels and batch sizes it was given.
    struct Fools {
        labels: Vec<i64>,
        seen: RefCell<Vec<i64>>,
        batches: RefCell<Vec<i64>>,
    }

    impl Fools {
        fn new(labels: &[i64]) -> Fools {
            Fools {
                labels: labels.to_vec(),
                seen: RefCell::new(Vec::new()),
                batches: RefCell::new(Vec::new()),
            }
        }
    }

    impl CascadeStage for Fools {
        fn name(&self) -> String {
            format!("fools{:?}", self.labels)
        }
        fn targets(&self) -> u32 {
            0
        }
        fn check(&self) -> anyhow::Result<()> {
            Ok(())
        }
        fn attack(
            &self,
            _model: &dyn Classifier,
            x: &Tensor,
            y: &Tensor,
            _budget: Budget,
            _rng: &mut Rng,
        ) -> anyhow::Result<Tensor> {
            let labels = Vec::<i64>::try_from(y)?;
            self.batches.borrow_mut().push(labels.len() as i64);
            self.seen.borrow_mut().extend(&labels);
            let out = x.f_detach_copy()?;
            for (i, label) in labels.iter().enumerate() {
                if self.labels.contains(label) {
                    let other = ((label + 1) % 10) as f64 / 9.0;
                    let _ = out.get(i as i64).get(0).get(0).get(0).f_fill_(other)?;
                }
            }
            Ok(out)
        }
    }

    #[test]
    fn stages_see_only_robust_images_and_counts_follow() -> anyhow::Result<()> {
        let model = PixelClass(BasicNet::new(Device::Cpu)?);
        // Labels 0..9 twice; images 9 and 19 are misclassified clean (written class 0).
        let labels: Vec<i64> = (0..20).map(|i| i % 10).collect();
        let x = Tensor::f_full([20, 3, 4, 4], 0.5, (Kind::Float, Device::Cpu))?;
        for (i, &label) in labels.iter().enumerate() {
            let written = if label == 9 { 0.0 } else { label as f64 / 9.0 };
            let _ = x.get(i as i64).get(0).get(0).get(0).f_fill_(written)?;
        }
        let y = Tensor::from_slice(&labels);
        let first = Fools::new(&[1, 2]);
        let second = Fools::new(&[2, 3, 4]);
        let third = Fools::new(&[]);
        let stages: [&dyn CascadeStage; 3] = [&first, &second, &third];
        let result = cascade(
            &model,
            &x,
            &y,
            Budget::pixel(0.1),
            &stages,
            3,
            &mut Rng::new(1),
        )?;
        assert_eq!(result.clean_correct, 18);
        let counts: Vec<i64> = result.after_stage.iter().map(|s| s.robust).collect();
        assert_eq!(counts, [14, 10, 10]);
        // The second stage never saw the label-2 images (fooled by the first) nor label 9.
        let seen = second.seen.borrow();
        assert!(!seen.contains(&2) && !seen.contains(&9) && seen.len() == 14);
        assert!(second.batches.borrow().iter().all(|&b| b <= 3));
        assert_eq!(third.seen.borrow().len(), 10);
        let robust = Vec::<bool>::try_from(&result.robust)?;
        for (i, &label) in labels.iter().enumerate() {
            assert_eq!(robust[i], ![1, 2, 3, 4, 9].contains(&label), "image {i}");
        }
        // Fooled images carry their adversarial, robust ones the clean image.
        let predicted = model.forward(&result.images, false)?.f_argmax(1, false)?;
        let wrong = Vec::<bool>::try_from(&predicted.f_ne_tensor(&y)?)?;
        assert!(robust.iter().zip(&wrong).all(|(r, w)| r != w));
        let unchanged = result
            .images
            .f_eq_tensor(&x)?
            .f_view([20, -1])?
            .f_all_dim(1, false)?;
        let unchanged = Vec::<bool>::try_from(&unchanged)?;
        assert!(robust.iter().zip(&unchanged).all(|(r, u)| !r || *u));
        Ok(())
    }

    #[test]
    fn bad_cascades_are_permanent_errors() -> anyhow::Result<()> {
        let unknown = Version::parse("plus-plus").err().map(|e| e.to_string());
        assert!(
            unknown
                .as_deref()
                .is_some_and(|e| e.contains("standard, plus, rand")),
            "{unknown:?}"
        );
        assert_eq!(Version::parse("rand")?.stages(Norm::L2)?.len(), 2);
        let standard = Version::Standard.stages(Norm::Linf)?;
        let names: Vec<&str> = standard.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["apgd-ce", "apgd-t", "fab-t", "square"]);
        let model = BasicNet::new(Device::Cpu)?;
        let (x, y) = crate::attacks::testing::inputs(2)?;
        let bad = |stages: Vec<Stage>, batch_size: i64| {
            let cfg = CascadeConfig { stages, batch_size };
            autoattack(&model, &x, &y, Budget::pixel(0.03), &cfg, &mut Rng::new(1)).err()
        };
        let zero_steps = Stage::Apgd(ApgdConfig {
            steps: 0,
            ..ApgdConfig::new(Norm::Linf, ApgdLoss::CrossEntropy)
        });
        let many_targets = Stage::Fab(FabConfig {
            targets: 12,
            ..FabConfig::new(Norm::Linf)
        });
        let no_queries = Stage::Square(SquareConfig {
            queries: 0,
            ..SquareConfig::new(Norm::Linf)
        });
        for (stages, batch) in [
            (vec![zero_steps], 10),
            (vec![many_targets], 10),
            (vec![no_queries], 10),
            (vec![], 10),
            (standard.clone(), 0),
        ] {
            let err = bad(stages, batch);
            assert!(
                err.as_ref().is_some_and(|e| !crate::error::is_retryable(e)),
                "{err:?}"
            );
        }
        Ok(())
    }

    /// The plus version is the reference's `set_version('plus')`, configured as the worker
    /// runs it: its six stages in order, the untargeted FAB named `fab` beside FAB-T, five
    /// runs of APGD-CE, APGD-DLR and FAB, Square's schedule of p not rescaled.
    #[test]
    fn the_plus_version_runs_the_reference_stages() -> anyhow::Result<()> {
        for norm in [Norm::Linf, Norm::L2] {
            let plus = Version::parse("plus")?.stages(norm)?;
            let names: Vec<&str> = plus.iter().map(|s| s.name()).collect();
            assert_eq!(
                names,
                ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
            );
            assert_eq!(
                plus[0],
                Stage::Apgd(ApgdConfig {
                    restarts: 5,
                    ..ApgdConfig::new(norm, ApgdLoss::CrossEntropy)
                })
            );
            assert_eq!(
                plus[1],
                Stage::Apgd(ApgdConfig {
                    restarts: 5,
                    ..ApgdConfig::new(norm, ApgdLoss::Dlr)
                })
            );
            assert_eq!(
                plus[2],
                Stage::Fab(FabConfig {
                    restarts: 5,
                    ..FabConfig::untargeted(norm)
                })
            );
            assert_eq!(
                plus[3],
                Stage::Square(SquareConfig {
                    rescale_schedule: false,
                    ..SquareConfig::new(norm)
                })
            );
            assert_eq!(
                plus[4],
                Stage::Apgd(ApgdConfig::new(norm, ApgdLoss::TargetedDlr { targets: 9 }))
            );
            assert_eq!(plus[5], Stage::Fab(FabConfig::new(norm)));
            assert_eq!(plus.iter().map(Stage::targets).max(), Some(9));
        }
        // The standard version is unchanged by being read from the catalogue.
        assert_eq!(
            Version::Standard.stages(Norm::L2)?,
            [
                Stage::Apgd(ApgdConfig::new(Norm::L2, ApgdLoss::CrossEntropy)),
                Stage::Apgd(ApgdConfig::new(
                    Norm::L2,
                    ApgdLoss::TargetedDlr { targets: 9 }
                )),
                Stage::Fab(FabConfig::new(Norm::L2)),
                Stage::Square(SquareConfig {
                    rescale_schedule: false,
                    ..SquareConfig::new(Norm::L2)
                }),
            ]
        );
        Ok(())
    }
}
