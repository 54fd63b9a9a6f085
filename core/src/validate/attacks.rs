//! The attacks' rules: each attack's parameters within their bounds (steps, step sizes,
//! restarts, EOT samples, targets, queries, a cascade's stages), and what an attack must be to
//! fill a training slot. Apart from the other types' rules because the attack vocabulary is
//! the one that grows (FGSM and PGD, then APGD, FAB, Square and AutoAttack's cascade).

use super::*;
/// How an attack is named in an error about the slot it fills: `pgd (l2)`.
fn summary(attack: &Attack) -> String {
    match attack {
        Attack::None => "none".to_owned(),
        Attack::Fgsm { norm, .. } => format!("fgsm ({})", norm.as_str()),
        Attack::Pgd { norm, .. } => format!("pgd ({})", norm.as_str()),
        other => format!(
            "{} ({})",
            other.label(),
            other.norm().map_or("", Norm::as_str)
        ),
    }
}

/// Target classes of an attack that may be targeted (APGD, FAB): 0 (untargeted) or at most
/// the classes − 1 wrong ones.
fn targets(field: &'static str, value: u32) -> Checked {
    let max = MAX_TARGETS;
    if value <= max {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value} must be 0 (untargeted) or in 1..={max} (the {CIFAR10_CLASSES} classes \
                 less the true one)"
            ),
        ))
    }
}

impl Attack {
    /// Steps, step sizes, restarts and EOT samples within their bounds.
    pub fn validate(&self) -> Checked {
        match self {
            Attack::None => Ok(()),
            Attack::Fgsm {
                step_fraction, eot, ..
            } => {
                positive("attack.fgsm.step_fraction", *step_fraction)?;
                eot_samples("attack.fgsm.eot_samples", *eot)
            }
            Attack::Pgd {
                steps,
                step,
                restarts,
                eot,
                ..
            } => {
                in_range("attack.pgd.steps", *steps, 1, MAX_PGD_STEPS)?;
                in_range("attack.pgd.restarts", *restarts, 1, MAX_RESTARTS)?;
                match step {
                    StepSize::Absolute(s) => positive("attack.pgd.step_size", *s)?,
                    StepSize::FractionOfEpsilon(f) => positive("attack.pgd.step_fraction", *f)?,
                }
                eot_samples("attack.pgd.eot_samples", *eot)
            }
            Attack::Apgd {
                loss,
                targets: k,
                steps,
                restarts,
                eot,
                ..
            } => {
                in_range("attack.apgd.steps", *steps, 1, MAX_PGD_STEPS)?;
                targets("attack.apgd.targets", *k)?;
                if *k > 0 && *loss != ApgdLoss::Dlr {
                    return Err(invalid(
                        "attack.apgd.loss",
                        format!(
                            "{}: a targeted APGD (targets = {k}) maximizes the targeted DLR loss; \
                             set loss = \"dlr\" or targets = 0",
                            loss.as_str()
                        ),
                    ));
                }
                in_range("attack.apgd.restarts", *restarts, 1, MAX_RESTARTS)?;
                eot_samples("attack.apgd.eot_samples", *eot)
            }
            Attack::Fab {
                targets: k,
                steps,
                restarts,
                eot,
                ..
            } => {
                in_range("attack.fab.steps", *steps, 1, MAX_PGD_STEPS)?;
                targets("attack.fab.targets", *k)?;
                in_range("attack.fab.restarts", *restarts, 1, MAX_RESTARTS)?;
                eot_samples("attack.fab.eot_samples", *eot)
            }
            Attack::Square {
                queries,
                p_init,
                restarts,
                ..
            } => {
                in_range("attack.square.queries", *queries, 1, MAX_SQUARE_QUERIES)?;
                fraction("attack.square.p_init", *p_init)?;
                in_range("attack.square.restarts", *restarts, 1, MAX_RESTARTS)
            }
            Attack::AutoAttack { norm, stages, .. } => {
                if stages.is_empty() {
                    return Err(FieldError::Missing("attack.autoattack.stages"));
                }
                if stages.len() > MAX_CASCADE_STAGES {
                    return Err(invalid(
                        "attack.autoattack.stages",
                        format!("{} stages, more than {MAX_CASCADE_STAGES}", stages.len()),
                    ));
                }
                for stage in stages {
                    if !matches!(
                        stage,
                        Attack::Apgd { .. } | Attack::Fab { .. } | Attack::Square { .. }
                    ) {
                        return Err(invalid(
                            "attack.autoattack.stages",
                            format!(
                                "{}: a cascade stage is an apgd, fab or square attack",
                                summary(stage)
                            ),
                        ));
                    }
                    if stage.norm() != Some(*norm) {
                        return Err(invalid(
                            "attack.autoattack.stages",
                            format!(
                                "{}: every stage of an {} cascade must be an {} attack",
                                summary(stage),
                                norm.as_str(),
                                norm.as_str()
                            ),
                        ));
                    }
                    stage.validate()?;
                }
                Ok(())
            }
        }
    }

    /// An attack that makes training examples (adversarial training, a denoiser's pairs): valid
    /// and not `none`; of norm `norm` when one is asked for (the slots of mixed training).
    pub fn validate_for_training(&self, field: &'static str, norm: Option<Norm>) -> Checked {
        if self.is_none() {
            return Err(invalid(
                field,
                "none: adversarial training needs an attack other than `none`",
            ));
        }
        if !matches!(self, Attack::Fgsm { .. } | Attack::Pgd { .. }) {
            return Err(invalid(
                field,
                format!(
                    "{}: an evaluation attack; training examples are made with fgsm or pgd",
                    summary(self)
                ),
            ));
        }
        if let Some(want) = norm
            && self.norm() != Some(want)
        {
            return Err(invalid(
                field,
                format!("{} is not an {} attack", summary(self), want.as_str()),
            ));
        }
        self.validate()
    }
}
