//! Safetensors checkpoints: Rust round trips, and exchange with PyTorch in both directions
//! (`tests/reference/models.py` loads with `load_state_dict(load_file(p))`, strict).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod reference;

use std::path::Path;
use std::sync::atomic::Ordering;

use advsweep_core::{Model, NoiseInjection};
use advsweep_worker::checkpoint;
use advsweep_worker::models::{self, Classifier};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

fn build(name: &str) -> Box<dyn Classifier> {
    models::build(name, Device::Cpu).unwrap()
}

/// A few training-mode forward passes, so batch-norm running statistics are not trivial.
fn warm_up(model: &dyn Classifier) {
    tch::no_grad(|| {
        for _ in 0..3 {
            let x = Tensor::rand([8, 3, 32, 32], (Kind::Float, Device::Cpu));
            let _ = model.forward(&x, true).unwrap();
        }
    });
}

fn logits(model: &dyn Classifier, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward(x, false).unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn save_input(dir: &Path) -> Tensor {
    let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("x", &x)], dir.join("input.safetensors")).unwrap();
    x
}

fn read_logits(path: &Path) -> Tensor {
    let mut tensors = Tensor::read_safetensors(path).unwrap();
    assert_eq!(tensors.len(), 1);
    let (key, t) = tensors.remove(0);
    assert_eq!(key, "logits");
    t
}

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

#[test]
fn a_saved_checkpoint_reloads_to_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    for name in ["basic", "resnet18"] {
        let model = build(name);
        warm_up(model.as_ref());
        let path = dir.path().join(format!("{name}.safetensors"));
        checkpoint::save(model.as_ref(), &path).unwrap();
        assert!(!dir.path().join(format!("{name}.safetensors.tmp")).exists());

        let fresh = build(name);
        assert!(!logits(fresh.as_ref(), &x).equal(&logits(model.as_ref(), &x)));
        checkpoint::load(fresh.as_ref(), &path).unwrap();
        assert!(
            logits(fresh.as_ref(), &x).equal(&logits(model.as_ref(), &x)),
            "{name}: reloaded logits must be identical"
        );
        if let Some(counter) = fresh.batches_tracked() {
            assert_eq!(
                counter.load(Ordering::Relaxed),
                3,
                "num_batches_tracked restored"
            );
        }
        // Every variable is restored, including non-trainable running statistics.
        let (a, b) = (
            model.weights().named_tensors(),
            fresh.weights().named_tensors(),
        );
        for (key, t) in &a {
            assert!(t.equal(&b[key]), "{name}: {key}");
        }
    }
}

#[test]
fn checkpoints_have_pytorch_keys_including_num_batches_tracked() {
    let dir = tempfile::tempdir().unwrap();
    let model = build("resnet18");
    warm_up(model.as_ref());
    let path = dir.path().join("r.safetensors");
    checkpoint::save(model.as_ref(), &path).unwrap();
    let file: std::collections::BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.running_mean",
        "linear.bias",
    ] {
        assert_eq!(file[key].kind(), Kind::Float, "{key}");
    }
    let n = &file["layer4.1.bn2.num_batches_tracked"];
    assert_eq!((n.kind(), n.size()), (Kind::Int64, vec![]));
    assert_eq!(i64::try_from(n).unwrap(), 3);
    assert!(
        !file.contains_key("layer1.0.shortcut.0.weight"),
        "identity shortcut"
    );
}

#[test]
fn mismatched_checkpoints_are_errors_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let basic = dir.path().join("basic.safetensors");
    checkpoint::save(build("basic").as_ref(), &basic).unwrap();

    // Wrong architecture: nothing fits.
    let resnet = build("resnet18");
    let before = resnet.weights().named_tensors()["conv1.weight"].copy();
    let err = checkpoint::load(resnet.as_ref(), &basic).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("missing keys") && msg.contains("bn1.bias"),
        "{msg}"
    );
    assert!(
        msg.contains("unexpected keys") && msg.contains("fc1.weight"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "conv1.weight: checkpoint float32 [6, 3, 5, 5] vs model float32 [64, 3, 3, 3]"
        ),
        "{msg}"
    );
    assert!(
        !advsweep_worker::error::is_retryable(&err),
        "a mismatch is permanent"
    );
    assert!(
        resnet.weights().named_tensors()["conv1.weight"].equal(&before),
        "a failed load changes nothing"
    );

    // Same keys, other widths.
    let narrow = dir.path().join("wrn-10-2.safetensors");
    checkpoint::save(build("wrn-10-2").as_ref(), &narrow).unwrap();
    let msg = checkpoint::load(build("wrn-10-3").as_ref(), &narrow)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("block1.layer.0.conv1.weight") && !msg.contains("missing"),
        "{msg}"
    );

    // A noisy model's alpha is required by it and unexpected elsewhere.
    let noisy = Model {
        name: "basic".into(),
        noise: Some(NoiseInjection {
            sigma: 0.1,
            layers: vec!["fc1".into()],
            learnable: true,
        }),
        file: None,
    };
    let noisy = models::build(&noisy, Device::Cpu).unwrap();
    let msg = checkpoint::load(noisy.as_ref(), &basic)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing key (noise.fc1.alpha)"), "{msg}");
    let with_alpha = dir.path().join("noisy.safetensors");
    checkpoint::save(noisy.as_ref(), &with_alpha).unwrap();
    let msg = checkpoint::load(build("basic").as_ref(), &with_alpha)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unexpected key (noise.fc1.alpha)"), "{msg}");

    // Not a checkpoint at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    assert!(checkpoint::load(build("basic").as_ref(), &junk).is_err());
    assert!(checkpoint::load(build("basic").as_ref(), dir.path().join("absent")).is_err());
}

#[test]
fn var_stores_round_trip_with_extra_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let make = || {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = nn::conv2d(&root / "body" / 0, 1, 4, 3, Default::default());
        let _ = nn::batch_norm2d(&root / "body" / 1, 4, Default::default());
        vs
    };
    let vs = make();
    let sigma = Tensor::from_slice(&[0.25f32]);
    let path = dir.path().join("denoiser.safetensors");
    checkpoint::save_weights(&vs, &[("sigma", &sigma)], &path).unwrap();
    let file: std::collections::BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    assert!(file.contains_key("body.1.num_batches_tracked"));

    let other = make();
    let extra = checkpoint::load_weights(&other, &path).unwrap();
    assert_eq!(extra.keys().collect::<Vec<_>>(), ["sigma"]);
    assert!(extra["sigma"].equal(&sigma));
    for (key, t) in vs.variables() {
        assert!(t.equal(&other.variables()[&key]), "{key}");
    }
    let clash = checkpoint::save_weights(&vs, &[("body.0.weight", &sigma)], &path);
    assert!(clash.is_err());
}

/// Rust saves (after training-mode forwards), PyTorch loads strictly and computes the same
/// eval-mode logits.
fn rust_to_pytorch(name: &str, model: &dyn Classifier, noise: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let x = save_input(dir.path());
    let ckpt = p(dir.path(), "model.safetensors");
    checkpoint::save(model, &ckpt).unwrap();
    let expected = logits(model, &x);
    let (input, out) = (
        p(dir.path(), "input.safetensors"),
        p(dir.path(), "out.safetensors"),
    );
    let mut args = vec!["logits", name, &ckpt, &input, &out];
    if let Some(noise) = noise {
        args.extend(["--noise", noise]);
    }
    reference::run(&args);
    let theirs = read_logits(Path::new(&out));
    assert_eq!(theirs.size(), expected.size());
    let scale = f64::try_from(expected.abs().max()).unwrap().max(1.0);
    let diff = max_abs_diff(&theirs, &expected);
    eprintln!("{name}: Rust → PyTorch max |Δlogit| = {diff:e} (logits up to {scale})");
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |Δlogit| = {diff} (logits up to {scale})"
    );
}

#[test]
fn pytorch_loads_rust_checkpoints_basic() {
    let model = build("basic");
    rust_to_pytorch("basic", model.as_ref(), None);
}

#[test]
fn pytorch_loads_rust_checkpoints_resnet18() {
    let model = build("resnet18");
    warm_up(model.as_ref());
    rust_to_pytorch("resnet18", model.as_ref(), None);
}

#[test]
fn pytorch_loads_rust_checkpoints_with_noise_scales() {
    // Learnable scales set to 0 (max(α, 0) = 0): both sides deterministic, and the keys
    // `noise.<point>.alpha` must be exactly where PyTorch expects them.
    let spec = Model {
        name: "basic".into(),
        noise: Some(NoiseInjection {
            sigma: 0.1,
            layers: vec!["input".into(), "conv2".into()],
            learnable: true,
        }),
        file: None,
    };
    let model = models::build(&spec, Device::Cpu).unwrap();
    let vars = model.weights().named_tensors();
    tch::no_grad(|| {
        for key in ["noise.input.alpha", "noise.conv2.alpha"] {
            let _ = vars[key].shallow_clone().fill_(0.0);
        }
    });
    rust_to_pytorch("basic", model.as_ref(), Some("0.1:input,conv2:learnable"));
}

/// PyTorch saves its own state_dict (with num_batches_tracked); Rust loads it and computes the
/// same eval-mode logits.
fn pytorch_to_rust(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let x = save_input(dir.path());
    let (ckpt, input, out) = (
        p(dir.path(), "torch.safetensors"),
        p(dir.path(), "input.safetensors"),
        p(dir.path(), "out.safetensors"),
    );
    reference::run(&["export", name, &ckpt, &input, &out]);
    let model = build(name);
    checkpoint::load(model.as_ref(), &ckpt).unwrap();
    if let Some(counter) = model.batches_tracked() {
        assert_eq!(counter.load(Ordering::Relaxed), 3);
    }
    let expected = read_logits(Path::new(&out));
    let ours = logits(model.as_ref(), &x);
    let scale = f64::try_from(expected.abs().max()).unwrap().max(1.0);
    let diff = max_abs_diff(&ours, &expected);
    eprintln!("{name}: PyTorch → Rust max |Δlogit| = {diff:e} (logits up to {scale})");
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |Δlogit| = {diff} (logits up to {scale})"
    );
}

#[test]
fn rust_loads_pytorch_checkpoints_basic() {
    pytorch_to_rust("basic");
}

#[test]
fn rust_loads_pytorch_checkpoints_resnet18() {
    pytorch_to_rust("resnet18");
}
