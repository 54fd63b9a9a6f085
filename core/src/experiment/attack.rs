//! The attack vocabulary: norms, step sizes and the attacks a cell evaluates (and training
//! uses to make adversarial examples), with the questions the rest of the system asks of them.

use serde::{Deserialize, Serialize};

/// The norm of a perturbation budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    Linf,
    L2,
}

impl Norm {
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

/// Step size of an iterative attack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// The same step whatever the epsilon.
    Absolute(f64),
    /// A multiple of the epsilon the attack runs at (Madry et al. use 2.5 ε / steps).
    FractionOfEpsilon(f64),
}

impl StepSize {
    pub fn resolve(self, epsilon: f64) -> f64 {
        match self {
            StepSize::Absolute(step) => step,
            StepSize::FractionOfEpsilon(fraction) => fraction * epsilon,
        }
    }
}

/// A white-box attack with all its parameters except the budget ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attack {
    /// Clean evaluation.
    None,
    /// One signed-gradient (ℓ∞) or normalized-gradient (ℓ2) step.
    Fgsm {
        norm: Norm,
        random_start: bool,
        /// Step as a multiple of ε: 1.0 for FGSM, 1.25 for FGSM with random start.
        step_fraction: f64,
        /// Expectation over Transformation: gradients averaged over this many forward passes
        /// (1 = plain gradient). Resolved by the coordinator: randomized models get more.
        eot: u32,
    },
    /// Projected gradient descent with optional random start and restarts.
    Pgd {
        norm: Norm,
        steps: u32,
        step: StepSize,
        random_start: bool,
        restarts: u32,
        eot: u32,
    },
    /// APGD, Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum 0.75 and the step-size
    /// schedule of the paper, maximizing `loss`; with `targets` > 0, APGD-T: one pass per
    /// target class (the classes ranked 2nd, 3rd, … by the clean scores) with the targeted
    /// DLR loss (`loss` is then `dlr`).
    Apgd {
        norm: Norm,
        loss: ApgdLoss,
        /// 0 = untargeted; k > 0 = APGD-T with the top-k wrong classes.
        targets: u32,
        steps: u32,
        restarts: u32,
        eot: u32,
    },
    /// FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020), with the paper's
    /// α_max, η and β: untargeted with `targets` = 0 (each step towards the closest
    /// linearized decision boundary of all classes), else FAB-T (one run per target class,
    /// the classes ranked 2nd, 3rd, … by the clean scores).
    Fab {
        norm: Norm,
        /// 0 = untargeted; k > 0 = FAB-T with the top-k wrong classes.
        targets: u32,
        steps: u32,
        restarts: u32,
        eot: u32,
    },
    /// Square Attack (Andriushchenko et al., ECCV 2020): score-based, forward passes only.
    Square {
        norm: Norm,
        queries: u32,
        p_init: f64,
        restarts: u32,
    },
    /// AutoAttack's cascade: `stages` run in order, each on the images every earlier stage
    /// failed on; the cell's result is the worst case, and the robust accuracy after each
    /// stage is reported too.
    AutoAttack {
        norm: Norm,
        version: CascadeVersion,
        /// APGD, FAB or Square attacks of norm `norm`.
        stages: Vec<Attack>,
    },
}

/// What APGD maximizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApgdLoss {
    /// Cross-entropy (APGD-CE).
    Ce,
    /// The difference of logits ratio (APGD-DLR; targeted DLR in APGD-T).
    Dlr,
}

impl ApgdLoss {
    /// The name sweep files use (`ce`, `dlr`).
    pub fn as_str(self) -> &'static str {
        match self {
            ApgdLoss::Ce => "ce",
            ApgdLoss::Dlr => "dlr",
        }
    }
}

/// Which AutoAttack cascade an [`Attack::AutoAttack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CascadeVersion {
    /// APGD-CE, APGD-T, FAB-T, Square (the reference's `standard`).
    Standard,
    /// APGD-CE and APGD-DLR with EOT, for randomized models (the reference's `rand`).
    Rand,
    /// APGD-CE and APGD-DLR (5 restarts each), FAB (untargeted, 5 restarts), Square, APGD-T,
    /// FAB-T (the reference's `plus`).
    Plus,
    /// A list of stages named in the sweep file.
    Custom,
}

impl CascadeVersion {
    /// The named versions, as sweep files and the wire spell them (`custom` is a list of
    /// stages instead).
    pub const NAMED: [CascadeVersion; 3] = [
        CascadeVersion::Standard,
        CascadeVersion::Plus,
        CascadeVersion::Rand,
    ];

    /// The name sweep files use (`standard`, `plus`, `rand`, `custom`).
    pub fn as_str(self) -> &'static str {
        match self {
            CascadeVersion::Standard => "standard",
            CascadeVersion::Rand => "rand",
            CascadeVersion::Plus => "plus",
            CascadeVersion::Custom => "custom",
        }
    }

    /// The named version called `name` (`standard`, `plus`, `rand`; not `custom`).
    pub fn named(name: &str) -> Option<CascadeVersion> {
        CascadeVersion::NAMED
            .into_iter()
            .find(|v| v.as_str() == name)
    }
}

impl Attack {
    pub fn is_none(&self) -> bool {
        matches!(self, Attack::None)
    }

    /// Gradient samples per step (1 for `none`).
    /// (A cascade: the most of its stages; Square, which takes no gradient, 1.)
    pub fn eot(&self) -> u32 {
        match self {
            Attack::None | Attack::Square { .. } => 1,
            Attack::Fgsm { eot, .. }
            | Attack::Pgd { eot, .. }
            | Attack::Apgd { eot, .. }
            | Attack::Fab { eot, .. } => *eot,
            Attack::AutoAttack { stages, .. } => stages.iter().map(Attack::eot).max().unwrap_or(1),
        }
    }

    pub fn norm(&self) -> Option<Norm> {
        match self {
            Attack::None => None,
            Attack::Fgsm { norm, .. }
            | Attack::Pgd { norm, .. }
            | Attack::Apgd { norm, .. }
            | Attack::Fab { norm, .. }
            | Attack::Square { norm, .. }
            | Attack::AutoAttack { norm, .. } => Some(*norm),
        }
    }

    /// The same attack with `eot` gradient samples (a cascade: every stage that takes
    /// gradients; Square takes none).
    pub fn with_eot(&self, samples: u32) -> Attack {
        let mut a = self.clone();
        match &mut a {
            Attack::None | Attack::Square { .. } => {}
            Attack::Fgsm { eot, .. }
            | Attack::Pgd { eot, .. }
            | Attack::Apgd { eot, .. }
            | Attack::Fab { eot, .. } => *eot = samples.max(1),
            Attack::AutoAttack { stages, .. } => {
                for stage in stages {
                    *stage = stage.with_eot(samples);
                }
            }
        }
        a
    }

    /// Whether the attack is an AutoAttack cascade.
    pub fn is_cascade(&self) -> bool {
        matches!(self, Attack::AutoAttack { .. })
    }

    /// The stages of a cascade (empty for any other attack).
    pub fn stages(&self) -> &[Attack] {
        match self {
            Attack::AutoAttack { stages, .. } => stages,
            _ => &[],
        }
    }

    /// The attack's kind, as `[attacks.NAME] kind = …` spells it: `none`, `fgsm`, `pgd`,
    /// `apgd`, `fab`, `square`, `autoattack`.
    pub fn kind(&self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Fgsm { .. } => "fgsm",
            Attack::Pgd { .. } => "pgd",
            Attack::Apgd { .. } => "apgd",
            Attack::Fab { .. } => "fab",
            Attack::Square { .. } => "square",
            Attack::AutoAttack { .. } => "autoattack",
        }
    }

    /// The attack's label in tables and stage lists: `apgd-ce`, `apgd-dlr`, `apgd-t`, `fab`
    /// (untargeted), `fab-t`, `square`, `autoattack` (`-l2` for the ℓ2 versions, `-rand` for
    /// the randomized cascade, `-plus` for the plus version), `pgd-linf`, `fgsm`, … — without
    /// its parameters (the cell's preset name carries those).
    pub fn label(&self) -> String {
        let l2 = |base: &str, norm: &Norm| match norm {
            Norm::Linf => base.to_owned(),
            Norm::L2 => format!("{base}-l2"),
        };
        match self {
            Attack::None => "none".to_owned(),
            Attack::Fgsm { norm, .. } => l2("fgsm", norm),
            Attack::Pgd { norm, .. } => format!("pgd-{}", norm.as_str()),
            Attack::Apgd {
                norm,
                loss,
                targets,
                ..
            } => match (targets, loss) {
                (0, _) => l2(&format!("apgd-{}", loss.as_str()), norm),
                _ => l2("apgd-t", norm),
            },
            Attack::Fab {
                norm, targets: 0, ..
            } => l2("fab", norm),
            Attack::Fab { norm, .. } => l2("fab-t", norm),
            Attack::Square { norm, .. } => l2("square", norm),
            Attack::AutoAttack { norm, version, .. } => match version {
                CascadeVersion::Standard => l2("autoattack", norm),
                CascadeVersion::Rand => l2("autoattack-rand", norm),
                CascadeVersion::Plus => l2("autoattack-plus", norm),
                CascadeVersion::Custom => l2("autoattack-custom", norm),
            },
        }
    }

    /// A stage's name as reports show it: `APGD-CE`, `APGD-DLR`, `APGD-T`, `FAB`, `FAB-T`,
    /// `Square`.
    pub fn stage_title(&self) -> String {
        crate::results::stage_title(&self.label())
    }

    /// Whether the attack queries only the model's scores (no gradients): Square.
    pub fn is_black_box(&self) -> bool {
        matches!(self, Attack::Square { .. })
    }
}
