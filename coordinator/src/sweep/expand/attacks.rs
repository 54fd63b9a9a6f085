//! Attack presets → attacks (their EOT may still depend on the run they attack).

use advsweep_core::catalogue::defaults;
use advsweep_core::catalogue::presets as catalogue;
use advsweep_core::{Attack, CascadeVersion, StepSize};

use super::SweepError;
use super::check::{Validator, unknown_preset};
use crate::sweep::file::{AttackPreset, CascadeSetting, EotSetting, SweepFile};
use crate::sweep::presets;

/// A resolved attack whose EOT may still depend on the run it attacks.
#[derive(Debug, Clone)]
pub(super) struct AttackTemplate {
    pub(super) attack: Attack,
    eot: EotSetting,
}

impl AttackTemplate {
    /// The attack against a model that is (or is not) randomized; `auto_samples` is what
    /// `eot = "auto"` means against a randomized model.
    ///
    /// An AutoAttack `standard` or `rand` cascade with `eot = "auto"` against a randomized
    /// model is the reference's `rand` version (APGD-CE and APGD-DLR with
    /// [`defaults::RAND_EOT_SAMPLES`] gradient samples), as AutoAttack prescribes for
    /// randomized defenses; the `plus` version (asked for by name: the most thorough one) and
    /// a custom list keep their stages, each gradient stage with `auto_samples`.
    pub(super) fn resolve(&self, randomized: bool, auto_samples: u32) -> Attack {
        if let (
            EotSetting::Auto,
            true,
            Attack::AutoAttack {
                norm,
                version: CascadeVersion::Standard | CascadeVersion::Rand,
                ..
            },
        ) = (self.eot, randomized, &self.attack)
        {
            return catalogue::cascade(*norm, CascadeVersion::Rand);
        }
        match self.eot {
            EotSetting::Samples(k) => self.attack.with_eot(k),
            EotSetting::Auto if randomized => self.attack.with_eot(auto_samples),
            EotSetting::Auto => self.attack.with_eot(1),
        }
    }

    /// For training-time attacks, `auto` means a single sample (EOT is an evaluation tool).
    pub(super) fn for_training(&self) -> Attack {
        self.resolve(false, 1)
    }
}

/// The preset called `name`: the file's own, else a built-in one.
fn lookup(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<AttackPreset, SweepError> {
    if let Some(p) = file.attacks.get(name) {
        return Ok(p.clone());
    }
    presets::builtin_attack(name).map_or_else(
        || {
            v.fail(unknown_preset(
                "attack preset",
                key,
                name,
                &presets::builtin_attacks(),
                file.attacks.keys().map(String::as_str).collect(),
            ))
        },
        Ok,
    )
}

/// The attack preset `name` (named at `key` of the file), validated.
pub(super) fn resolve_attack(
    v: &Validator,
    file: &SweepFile,
    name: &str,
    key: &str,
) -> Result<AttackTemplate, SweepError> {
    let at = format!("attack preset `{name}`");
    let (attack, eot) = match lookup(v, file, name, key)? {
        AttackPreset::None => (Attack::None, EotSetting::Samples(1)),
        AttackPreset::Fgsm {
            norm,
            random_start,
            step_fraction,
            eot,
        } => (
            Attack::Fgsm {
                norm,
                random_start,
                step_fraction: step_fraction.unwrap_or(defaults::FGSM_STEP_FRACTION),
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Pgd {
            norm,
            steps,
            step_size,
            step_fraction,
            random_start,
            restarts,
            eot,
        } => {
            let step = match (step_size, step_fraction) {
                (Some(_), Some(_)) => {
                    return v.fail(format!(
                        "{at}: set either step_size or step_fraction, not both"
                    ));
                }
                (Some(s), None) => StepSize::Absolute(s),
                (None, Some(f)) => StepSize::FractionOfEpsilon(f),
                (None, None) => StepSize::FractionOfEpsilon(defaults::pgd_step_fraction(steps)),
            };
            (
                Attack::Pgd {
                    norm,
                    steps,
                    step,
                    random_start,
                    restarts,
                    eot: 1,
                },
                eot,
            )
        }
        AttackPreset::Apgd {
            norm,
            loss,
            targets,
            steps,
            restarts,
            eot,
        } => (
            Attack::Apgd {
                norm,
                loss,
                targets,
                steps,
                restarts,
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Fab {
            norm,
            targets,
            steps,
            restarts,
            eot,
        } => (
            Attack::Fab {
                norm,
                targets,
                steps,
                restarts,
                eot: 1,
            },
            eot,
        ),
        AttackPreset::Square {
            norm,
            queries,
            p_init,
            restarts,
        } => (
            Attack::Square {
                norm,
                queries,
                p_init,
                restarts,
            },
            EotSetting::Samples(1),
        ),
        AttackPreset::AutoAttack { norm, version, eot } => {
            let attack = match version {
                CascadeSetting::Version(version) => catalogue::cascade(norm, version),
                CascadeSetting::Stages(names) => Attack::AutoAttack {
                    norm,
                    version: CascadeVersion::Custom,
                    stages: names
                        .iter()
                        .map(|stage| resolve_stage(v, file, name, stage))
                        .collect::<Result<_, _>>()?,
                },
            };
            (attack, eot)
        }
    };
    let samples = match eot {
        EotSetting::Samples(k) => k,
        EotSetting::Auto => 1,
    };
    v.rule(Some(&at), attack.with_eot(samples).validate())?;
    Ok(AttackTemplate { attack, eot })
}

/// The stage `stage` of the cascade preset `cascade` (one gradient sample: the cascade's
/// `eot` applies to every stage). A stage that is itself a cascade is refused before it is
/// resolved, so no list can name itself.
fn resolve_stage(
    v: &Validator,
    file: &SweepFile,
    cascade: &str,
    stage: &str,
) -> Result<Attack, SweepError> {
    let key = format!("attacks.{cascade}.stages");
    if let AttackPreset::AutoAttack { .. } = lookup(v, file, stage, &key)? {
        return v.fail(format!(
            "{key}: `{stage}` is an autoattack cascade; a stage is an apgd, fab or square attack"
        ));
    }
    Ok(resolve_attack(v, file, stage, &key)?.resolve(false, 1))
}

#[cfg(test)]
mod tests {
    use advsweep_core::{Attack, CascadeVersion, Norm};

    use crate::sweep::{Overrides, Plan, expand, parse_sweep};

    fn plan(attacks: &str, grid: &str) -> Result<Plan, String> {
        let text = format!(
            r#"
version = 1
name = "plus"
[data]
source = "synthetic"
[evaluation]
eot_samples = 6
{attacks}
[grid]
models = ["basic", "noisy-basic"]
defenses = ["standard"]
attacks = [{grid}]
epsilons = ["8/255"]
"#
        );
        parse_sweep(&text, "plus.toml")
            .and_then(|file| expand(&file, &Overrides::default(), "plus.toml"))
            .map_err(|e| e.to_string())
    }

    fn labels(attack: &Attack) -> Vec<String> {
        attack.stages().iter().map(Attack::label).collect()
    }

    /// `version = "plus"` and the built-in `autoattack-plus` are the catalogue's plus cascade;
    /// against a randomized model `eot = "auto"` keeps the plus stages (unlike `standard`, which
    /// becomes `rand`) with the file's gradient samples.
    #[test]
    fn the_plus_version_expands_to_the_catalogue_cascade() {
        let p = plan(
            "[attacks.aa-plus-l2]\nkind = \"autoattack\"\nnorm = \"l2\"\nversion = \"plus\"",
            r#""autoattack-plus", "aa-plus-l2", "autoattack""#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for cell in &p.cells {
            let run = p
                .runs
                .iter()
                .find(|r| r.id == cell.run_id)
                .expect("its run");
            match (cell.attack_name.as_str(), run.randomized()) {
                ("autoattack-plus", false) => assert_eq!(
                    cell.attack,
                    advsweep_core::catalogue::presets::cascade(Norm::Linf, CascadeVersion::Plus)
                ),
                ("aa-plus-l2", randomized) => {
                    assert_eq!(cell.attack.label(), "autoattack-plus-l2");
                    assert_eq!(
                        labels(&cell.attack),
                        [
                            "apgd-ce-l2",
                            "apgd-dlr-l2",
                            "fab-l2",
                            "square-l2",
                            "apgd-t-l2",
                            "fab-t-l2"
                        ]
                    );
                    assert_eq!(cell.attack.eot(), if randomized { 6 } else { 1 });
                }
                ("autoattack-plus", true) => {
                    assert_eq!(cell.attack.label(), "autoattack-plus");
                    assert_eq!(
                        labels(&cell.attack),
                        ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
                    );
                    assert!(
                        cell.attack
                            .stages()
                            .iter()
                            .all(|s| s.is_black_box() || s.eot() == 6)
                    );
                }
                ("autoattack", true) => assert_eq!(cell.attack.label(), "autoattack-rand"),
                ("autoattack", false) => assert_eq!(cell.attack.label(), "autoattack"),
                (other, _) => panic!("unexpected cell {other}"),
            }
        }
        assert_eq!(p.cells.len(), 6);
    }

    /// `kind = "fab"` with `targets = 0` is the untargeted FAB (`fab`), usable as a stage; a
    /// version that does not exist is refused with the list of those that do.
    #[test]
    fn untargeted_fab_tables_and_unknown_versions() {
        let p = plan(
            "[attacks.fab5]\nkind = \"fab\"\ntargets = 0\nrestarts = 5\n\
             [attacks.mine]\nkind = \"autoattack\"\nstages = [\"apgd-ce\", \"fab5\"]",
            r#""fab5", "mine""#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let fab = p
            .cells
            .iter()
            .find(|c| c.attack_name == "fab5")
            .expect("fab5");
        assert_eq!(fab.attack.label(), "fab");
        assert_eq!(fab.attack.stage_title(), "FAB");
        let mine = p
            .cells
            .iter()
            .find(|c| c.attack_name == "mine")
            .expect("mine");
        assert_eq!(labels(&mine.attack), ["apgd-ce", "fab"]);
        let e = plan(
            "[attacks.a]\nkind = \"autoattack\"\nversion = \"plus-plus\"",
            r#""a""#,
        )
        .expect_err("unknown version");
        for wanted in ["version", "plus-plus", "standard, plus, rand"] {
            assert!(e.contains(wanted), "`{wanted}` not in: {e}");
        }
        let e =
            plan("[attacks.a]\nkind = \"fab\"\ntargets = 10", r#""a""#).expect_err("10 targets");
        for wanted in ["targets", "10", "0 (untargeted)"] {
            assert!(e.contains(wanted), "`{wanted}` not in: {e}");
        }
    }
}
