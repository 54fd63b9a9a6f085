use super::*;

#[test]
fn a_pixel_budget_in_0_to_255_units_suggests_the_fraction() {
    let e =
        epsilon_within("grid.epsilons", 8.0, Norm::Linf, EpsilonSpace::Pixel).expect_err("8 > 1");
    assert!(e.to_string().contains("did you mean \"8/255\"?"), "{e}");
    // Not for ℓ2 (its diameter is not 1) nor for values no fraction of 255 explains.
    let l2 = epsilon_within("grid.epsilons", 100.0, Norm::L2, EpsilonSpace::Pixel)
        .expect_err("beyond the diameter");
    assert!(!l2.to_string().contains("did you mean"), "{l2}");
    let huge =
        epsilon_within("grid.epsilons", 1e6, Norm::Linf, EpsilonSpace::Pixel).expect_err("huge");
    assert!(!huge.to_string().contains("did you mean"), "{huge}");
}

#[test]
fn names_refuse_control_and_bidi_characters() {
    for bad in [
        "a\u{1b}[31mred",
        "sweep-\u{202E}lmot.exe",
        "x\u{2066}y",
        "x\u{200F}",
    ] {
        assert!(name("name", bad).is_err(), "{bad:?}");
    }
    for good in ["quickstart", "wörker-ü", "ε-sweep 8/255"] {
        assert!(name("name", good).is_ok(), "{good:?}");
    }
}

#[test]
fn reasons_start_with_the_value() {
    let e = in_range("attack.pgd.steps", 0, 1, 10).expect_err("0 steps");
    assert_eq!(
        e.to_string(),
        "field `attack.pgd.steps` is invalid: 0 must be in 1..=10"
    );
    assert_eq!(e.field(), "attack.pgd.steps");
    assert!(positive("x", f64::NAN).is_err());
    assert!(epsilon("x", -0.0).is_ok());
    assert!(fraction("x", 0.0).is_err());
    assert!(decay_rate("x", 1.0).is_err());
}

#[test]
fn a_mixed_slot_names_the_norm_it_wants() {
    let l2 = Attack::Fgsm {
        norm: Norm::L2,
        random_start: false,
        step_fraction: 1.0,
        eot: 1,
    };
    let e = l2
        .validate_for_training("defense.mixed.linf", Some(Norm::Linf))
        .expect_err("l2 in the linf slot");
    assert!(e.to_string().contains("not an linf attack"), "{e}");
    assert!(
        Attack::None
            .validate_for_training("defense.adversarial.attack", None)
            .is_err()
    );
}

#[test]
fn mixed_training_with_swapped_slots_or_a_bad_fraction_is_refused() {
    let pgd = |norm| Attack::Pgd {
        norm,
        steps: 3,
        step: StepSize::FractionOfEpsilon(0.25),
        random_start: false,
        restarts: 1,
        eot: 1,
    };
    let mixed = |linf, l2, fraction| TrainingMethod::Mixed {
        linf,
        l2,
        epsilon_linf: 8.0 / 255.0,
        epsilon_l2: 0.5,
        strategy: crate::MixStrategy::WorstPerExample,
        fraction,
    };
    let swapped = mixed(pgd(Norm::L2), pgd(Norm::Linf), 0.5)
        .validate()
        .expect_err("swapped slots");
    assert_eq!(swapped.field(), "defense.mixed.linf");
    assert!(
        swapped.to_string().contains("not an linf attack"),
        "{swapped}"
    );
    assert!(
        mixed(pgd(Norm::Linf), pgd(Norm::L2), 0.0)
            .validate()
            .is_err()
    );
    assert!(
        mixed(pgd(Norm::Linf), pgd(Norm::L2), 1.0)
            .validate()
            .is_ok()
    );
}

#[test]
fn shown_cuts_at_a_character_boundary() {
    let long = "é".repeat(100);
    let s = shown(&long, 63);
    assert!(s.ends_with("(200 bytes)"), "{s}");
    assert_eq!(shown("ab", 64), "\"ab\"");
}

fn torchscript(normalize: Option<InputNormalization>) -> Model {
    Model {
        name: crate::experiment::TORCHSCRIPT.into(),
        noise: None,
        file: Some(ModelFile {
            format: ModelFormat::TorchScript,
            sha256: "ab".repeat(32),
            bytes: 1000,
            normalize,
        }),
    }
}

#[test]
fn a_model_file_is_a_sha256_a_size_and_a_normalization_per_channel() {
    assert!(torchscript(None).validate().is_ok());
    let stats = |mean: Vec<f64>, std: Vec<f64>| Some(InputNormalization { mean, std });
    assert!(
        torchscript(stats(vec![0.5; 3], vec![0.25; 3]))
            .validate()
            .is_ok()
    );
    let bad = torchscript(stats(vec![0.5; 3], vec![0.25; 2]))
        .validate()
        .expect_err("2 stds for 3 means");
    assert!(
        bad.to_string()
            .contains("3 means and 2 standard deviations"),
        "{bad}"
    );
    assert!(torchscript(stats(vec![0.5], vec![0.0])).validate().is_err());

    let mut upper = torchscript(None);
    if let Some(f) = upper.file.as_mut() {
        f.sha256 = "AB".repeat(32);
    }
    let e = upper.validate().expect_err("upper-case hash");
    assert_eq!(e.field(), "run.model.file.sha256");

    let mut noisy = torchscript(None);
    noisy.noise = Some(NoiseInjection {
        sigma: 0.1,
        layers: vec!["input".into()],
        learnable: false,
    });
    assert_eq!(
        noisy.validate().expect_err("noise").field(),
        "run.model.noise"
    );

    let mut weights = Model::plain("resnet18");
    weights.file = torchscript(stats(vec![0.5; 3], vec![0.25; 3])).file;
    // A TorchScript file under an architecture's name: refused (name and format disagree).
    assert!(weights.validate().is_err());
    if let Some(f) = weights.file.as_mut() {
        f.format = ModelFormat::Safetensors;
    }
    let e = weights.validate().expect_err("normalize beside weights");
    assert_eq!(e.field(), "run.model.file.normalize");
    if let Some(f) = weights.file.as_mut() {
        f.normalize = None;
    }
    assert!(weights.validate().is_ok());
}
