//! The model catalogue against the PyTorch reference (`tests/reference/models.py`): parameter
//! counts, state_dict keys, dtypes and shapes for every architecture; forward passes; batch
//! norm; noise injection.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod reference;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use advsweep_core::{Model, NoiseInjection};
use advsweep_worker::checkpoint;
use advsweep_worker::models::{self, Classifier};
use tch::{Device, Kind, Reduction, Tensor};

/// Trainable parameters of each architecture, as PyTorch counts them
/// (`sum(p.numel() for p in model.parameters())`).
const PARAMETERS: &[(&str, i64)] = &[
    ("basic", 62_006),
    ("resnet18", 11_173_962),
    ("wrn-16-4", 2_748_890),
    ("wrn-28-10", 36_479_194),
    ("vgg11", 9_231_114),
    ("vgg16", 14_728_266),
];

fn build(name: &str) -> Box<dyn Classifier> {
    models::build(name, Device::Cpu).unwrap()
}

fn noisy(name: &str, sigma: f64, layers: &[&str], learnable: bool) -> Model {
    Model {
        name: name.into(),
        noise: Some(NoiseInjection {
            sigma,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            learnable,
        }),
        file: None,
    }
}

/// Copies every variable `from` has into `to` (which may have more, e.g. noise scales); tests
/// run in parallel on torch's one global generator, so seeding is no way to get equal weights.
fn copy_weights(from: &dyn Classifier, to: &dyn Classifier) {
    let dst = to.weights().named_tensors();
    tch::no_grad(|| {
        for (key, src) in from.weights().named_tensors() {
            dst[&key].shallow_clone().copy_(&src);
        }
    });
}

fn input(n: i64) -> Tensor {
    tch::manual_seed(1);
    Tensor::rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))
}

/// (key → "dtype shape") of one architecture's state_dict, and its parameter count.
type Spec = (BTreeMap<String, String>, i64);

fn python_spec() -> BTreeMap<String, Spec> {
    let out = reference::run(&["spec"]);
    let mut specs: BTreeMap<String, Spec> = BTreeMap::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let entry = specs.entry(parts[0].to_owned()).or_default();
        match parts[..] {
            [_, "#params", n] => entry.1 = n.parse().unwrap(),
            [_, key, dtype, shape] => {
                entry.0.insert(key.to_owned(), format!("{dtype} {shape}"));
            }
            _ => panic!("unexpected line from models.py spec: {line}"),
        }
    }
    specs
}

fn rust_spec(model: &dyn Classifier) -> BTreeMap<String, String> {
    checkpoint::state_dict(model)
        .unwrap()
        .into_iter()
        .map(|(key, t)| {
            let dtype = match t.kind() {
                Kind::Float => "float32",
                Kind::Int64 => "int64",
                k => panic!("{key}: unexpected kind {k:?}"),
            };
            let shape = t
                .size()
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join("x");
            let shape = if shape.is_empty() {
                "scalar".into()
            } else {
                shape
            };
            (key, format!("{dtype} {shape}"))
        })
        .collect()
}

#[test]
fn parameter_counts_and_state_dict_keys_match_pytorch() {
    let python = python_spec();
    assert_eq!(
        python.keys().collect::<Vec<_>>().len(),
        PARAMETERS.len(),
        "models.py spec covers {:?}",
        python.keys().collect::<Vec<_>>()
    );
    for &(name, expected) in PARAMETERS {
        let model = build(name);
        assert_eq!(model.name(), name);
        let (py_keys, py_count) = &python[name];
        assert_eq!(
            *py_count, expected,
            "{name}: PyTorch count vs pinned constant"
        );
        assert_eq!(
            models::trainable_parameters(model.as_ref()),
            expected,
            "{name}: Rust count"
        );
        let rust_keys = rust_spec(model.as_ref());
        let only_rust: Vec<_> = rust_keys
            .iter()
            .filter(|(k, v)| py_keys.get(*k) != Some(v))
            .collect();
        let only_py: Vec<_> = py_keys
            .iter()
            .filter(|(k, v)| rust_keys.get(*k) != Some(v))
            .collect();
        assert!(
            only_rust.is_empty() && only_py.is_empty(),
            "{name}: state_dict differs\nonly in Rust: {only_rust:?}\nonly in PyTorch: {only_py:?}"
        );
    }
}

#[test]
fn forward_passes_give_logits_and_batch_norm_tracks_statistics() {
    let x = input(2);
    for name in ["resnet18", "vgg11", "vgg16", "wrn-16-4"] {
        tch::manual_seed(0);
        let model = build(name);
        assert!(!model.randomized(), "{name}");
        let counter = model
            .batches_tracked()
            .expect("batch-norm model counts batches");
        let vars = model.weights().named_tensors();
        let running = vars
            .iter()
            .find(|(k, _)| k.ends_with("running_mean"))
            .map(|(_, t)| t.shallow_clone())
            .unwrap();
        let before = running.copy();

        let eval1 = model.forward(&x, false).unwrap();
        assert_eq!(eval1.size(), [2, 10], "{name}");
        assert!(
            running.equal(&before),
            "{name}: eval mode must not touch running stats"
        );
        assert_eq!(counter.load(Ordering::Relaxed), 0);

        let train = model.forward(&x, true).unwrap();
        assert_eq!(train.size(), [2, 10], "{name}");
        assert!(bool::try_from(train.isfinite().all()).unwrap(), "{name}");
        assert!(
            !running.equal(&before),
            "{name}: train mode updates running stats"
        );
        assert_eq!(counter.load(Ordering::Relaxed), 1);

        // Eval mode is deterministic and now uses the updated statistics.
        let eval2 = model.forward(&x, false).unwrap();
        assert!(eval2.equal(&model.forward(&x, false).unwrap()), "{name}");
        assert!(!eval2.equal(&eval1), "{name}");
    }
}

/// Eval mode runs each convolution + batch norm as one folded convolution, kept between calls;
/// weights copied in afterwards (a checkpoint loaded into a model that already evaluated) must
/// be what the next evaluation uses.
#[test]
fn eval_mode_uses_weights_loaded_after_a_first_evaluation() {
    let x = input(2);
    for name in ["resnet18", "vgg11"] {
        let trained = build(name);
        // Give the source model statistics of its own (a training-mode pass).
        let _ = trained.forward(&x, true).unwrap();
        let expected = trained.forward(&x, false).unwrap();

        let loaded = build(name);
        let stale = loaded.forward(&x, false).unwrap();
        copy_weights(trained.as_ref(), loaded.as_ref());
        let now = loaded.forward(&x, false).unwrap();
        assert!(now.allclose(&expected, 1e-5, 1e-6, false), "{name}");
        assert!(!now.allclose(&stale, 1e-3, 1e-3, false), "{name}");
    }
}

#[test]
fn basic_has_no_batch_norm_and_is_deterministic() {
    let model = build("basic");
    assert!(model.batches_tracked().is_none());
    let x = input(3);
    assert!(
        model
            .forward(&x, false)
            .unwrap()
            .equal(&model.forward(&x, true).unwrap())
    );
}

#[test]
fn noise_makes_forward_passes_random_at_every_point() {
    let x = input(2);
    for (name, points) in [
        ("basic", &["input", "conv1", "conv2", "fc1", "fc2"][..]),
        (
            "resnet18",
            &["input", "stem", "layer1", "layer2", "layer3", "layer4"][..],
        ),
        (
            "wrn-16-4",
            &["input", "stem", "block1", "block2", "block3"][..],
        ),
        (
            "vgg11",
            &["input", "stage1", "stage2", "stage3", "stage4", "stage5"][..],
        ),
    ] {
        for &point in points {
            let model = models::build(&noisy(name, 0.1, &[point], false), Device::Cpu).unwrap();
            assert!(model.randomized(), "{name}/{point}");
            let a = model.forward(&x, false).unwrap();
            let b = model.forward(&x, false).unwrap();
            assert_eq!(a.size(), [2, 10]);
            assert!(
                !a.equal(&b),
                "{name}/{point}: two eval forwards should differ"
            );
        }
        // All points at once, training mode too.
        let model = models::build(&noisy(name, 0.05, points, false), Device::Cpu).unwrap();
        assert!(
            !model
                .forward(&x, true)
                .unwrap()
                .equal(&model.forward(&x, true).unwrap())
        );
    }
}

#[test]
fn zero_sigma_is_exactly_deterministic() {
    let x = input(2);
    let plain = build("resnet18");
    for learnable in [false, true] {
        let spec = noisy("resnet18", 0.0, &["input", "stem", "layer3"], learnable);
        let model = models::build(&spec, Device::Cpu).unwrap();
        copy_weights(plain.as_ref(), model.as_ref());
        // A learnable scale at 0 adds nothing yet, but training can move it off 0: it counts
        // as random (evaluation then seeds every draw and reuses no clean pass).
        assert_eq!(model.randomized(), learnable);
        let a = model.forward(&x, false).unwrap();
        assert!(a.equal(&model.forward(&x, false).unwrap()));
        assert!(
            a.equal(&plain.forward(&x, false).unwrap()),
            "same weights, no noise"
        );
    }
}

#[test]
fn noise_grows_with_sigma() {
    // The spread of the logits grows with σ (same weights, only σ differs).
    let x = input(4);
    let weights = build("basic");
    let spread = |sigma: f64, point: &str| {
        let model = models::build(&noisy("basic", sigma, &[point], false), Device::Cpu).unwrap();
        copy_weights(weights.as_ref(), model.as_ref());
        let runs: Vec<Tensor> = (0..8).map(|_| model.forward(&x, false).unwrap()).collect();
        let stacked = Tensor::stack(&runs, 0);
        f64::try_from(stacked.std_dim(0, true, false).mean(Kind::Float)).unwrap()
    };
    for point in ["input", "fc1"] {
        let small = spread(0.01, point);
        let large = spread(0.1, point);
        assert!(
            small > 0.0 && large > 5.0 * small,
            "{point}: {small} vs {large}"
        );
    }
}

#[test]
fn unknown_or_repeated_noise_points_are_errors_naming_them() {
    let err = models::build(
        &noisy("resnet18", 0.1, &["input", "block2"], false),
        Device::Cpu,
    )
    .err()
    .expect("block2 is not a resnet18 point")
    .to_string();
    assert!(err.contains("`block2`"), "{err}");
    assert!(
        err.contains("stem") && err.contains("layer4"),
        "lists the valid points: {err}"
    );
    let err = models::build(
        &noisy("vgg16", 0.1, &["stage1", "stage1"], false),
        Device::Cpu,
    )
    .err()
    .expect("repeated point")
    .to_string();
    assert!(err.contains("stage1"), "{err}");
    let err = models::build(&Model::plain("wrn-28-0"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrn-28-0"), "{err}");
}

#[test]
fn learnable_noise_scales_are_trainable_and_get_gradients() {
    let spec = noisy("resnet18", 0.2, &["input", "layer2"], true);
    let model = models::build(&spec, Device::Cpu).unwrap();
    assert!(model.randomized());
    let vars = model.weights().named_tensors();
    let alphas: Vec<&str> = vars
        .keys()
        .filter(|k| k.starts_with("noise."))
        .map(String::as_str)
        .collect();
    let mut alphas = alphas;
    alphas.sort_unstable();
    assert_eq!(alphas, ["noise.input.alpha", "noise.layer2.alpha"]);
    let alpha = &vars["noise.layer2.alpha"];
    assert_eq!(
        alpha.size(),
        Vec::<i64>::new(),
        "a 0-dimensional scalar like PyTorch's"
    );
    assert!((f64::try_from(alpha).unwrap() - 0.2).abs() < 1e-7);
    let trainable = model.weights().parameters();
    assert!(
        trainable.iter().any(|t| t.data_ptr() == alpha.data_ptr()),
        "alpha is trainable"
    );
    assert_eq!(
        models::trainable_parameters(model.as_ref()),
        11_173_962 + 2,
        "two scalars on top of resnet18"
    );

    let x = input(2);
    let y = Tensor::from_slice(&[3i64, 7]);
    let loss = model
        .forward(&x, true)
        .unwrap()
        .cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
    loss.backward();
    for key in ["noise.input.alpha", "noise.layer2.alpha"] {
        let g = vars[key].grad();
        assert!(g.defined(), "{key} has a gradient");
        assert!(
            f64::try_from(&g).unwrap().abs() > 0.0,
            "{key}: non-zero gradient"
        );
    }

    // max(α, 0): a negative α switches the point off.
    tch::no_grad(|| {
        for key in ["noise.input.alpha", "noise.layer2.alpha"] {
            let _ = vars[key].shallow_clone().fill_(-1.0);
        }
    });
    let a = model.forward(&x, false).unwrap();
    assert!(a.equal(&model.forward(&x, false).unwrap()));
}
