//! Researchers' own models (issue 20): a TorchScript module exported by PyTorch from the
//! reference definitions (`tests/reference/models.py torchscript`) behaves exactly like the
//! built-in model with the same weights — logits, gradients (so training), attacks, whole
//! evaluate-only runs — and the broken modules users make are refused with a permanent error
//! that names the model and the problem.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod reference;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use advsweep_core::{
    Attack, CellId, CellResult, CellSpec, DataSource, DataSpec, Defense, EpsilonSpace,
    InferenceDefense, InputNormalization, LrSchedule, Model, ModelFile, ModelFormat, Norm,
    Optimizer, Precision, RunId, RunSpec, StepSize, TrainingMethod, TrainingSpec,
};
use advsweep_worker::error::is_retryable;
use advsweep_worker::job::{Executor, Progress};
use advsweep_worker::model_files::ModelFileCache;
use advsweep_worker::models::{self, CIFAR10_MEAN, CIFAR10_STD, Classifier};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// Reference BasicNet weights (seed 0, batch-norm-free) exported by PyTorch, and one module
/// per `mode` of `models.py torchscript` made from them.
struct Exported {
    dir: tempfile::TempDir,
}

impl Exported {
    fn new() -> Exported {
        let dir = tempfile::tempdir().unwrap();
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("x", &x)], dir.path().join("input.safetensors")).unwrap();
        reference::run(&[
            "export",
            "basic",
            &path_str(&dir.path().join("basic.safetensors")),
            &path_str(&dir.path().join("input.safetensors")),
            &path_str(&dir.path().join("logits.safetensors")),
        ]);
        Exported { dir }
    }

    fn weights(&self) -> PathBuf {
        self.dir.path().join("basic.safetensors")
    }

    /// The module `models.py torchscript basic … MODE` writes.
    fn module(&self, mode: &str) -> PathBuf {
        let out = self.dir.path().join(format!("{mode}.pt"));
        reference::run(&[
            "torchscript",
            "basic",
            &path_str(&self.weights()),
            &path_str(&out),
            mode,
        ]);
        out
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn model_file(path: &Path, format: ModelFormat, normalize: Option<InputNormalization>) -> Model {
    Model {
        name: match format {
            ModelFormat::TorchScript => "torchscript".into(),
            ModelFormat::Safetensors => "basic".into(),
        },
        noise: None,
        file: Some(ModelFile {
            format,
            sha256: sha256(path),
            bytes: std::fs::metadata(path).unwrap().len(),
            normalize,
        }),
    }
}

fn cifar_normalization() -> InputNormalization {
    InputNormalization {
        mean: CIFAR10_MEAN.iter().map(|&m| f64::from(m)).collect(),
        std: CIFAR10_STD.iter().map(|&s| f64::from(s)).collect(),
    }
}

fn load(path: &Path, normalize: Option<InputNormalization>) -> anyhow::Result<Box<dyn Classifier>> {
    let spec = model_file(path, ModelFormat::TorchScript, normalize);
    models::load(&spec, Some(path), "model `mine`", (10, Device::Cpu))
}

fn builtin_with(weights: &Path) -> Box<dyn Classifier> {
    let spec = model_file(weights, ModelFormat::Safetensors, None);
    models::load(&spec, Some(weights), "model `basic`", (10, Device::Cpu)).unwrap()
}

fn logits(model: &dyn Classifier, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward(x, false).unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn images(n: i64) -> Tensor {
    Tensor::rand([n, 3, 32, 32], (Kind::Float, Device::Cpu))
}

#[test]
fn scripted_traced_and_unnormalized_modules_give_the_builtin_logits() {
    let e = Exported::new();
    let builtin = builtin_with(&e.weights());
    let x = images(16);
    let want = logits(builtin.as_ref(), &x);
    for (mode, normalize) in [
        ("script", None),
        ("trace", None),
        ("unnormalized", Some(cifar_normalization())),
    ] {
        let module = load(&e.module(mode), normalize).unwrap();
        module.check_contract(&x.narrow(0, 0, 4), 10).unwrap();
        let got = logits(module.as_ref(), &x);
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "{mode}: logits differ by {diff}");
    }
    // The weights the built-in model loaded are PyTorch's: its logits are the reference's.
    let reference = Tensor::read_safetensors(e.dir.path().join("logits.safetensors")).unwrap();
    let x4 = Tensor::read_safetensors(e.dir.path().join("input.safetensors")).unwrap();
    let diff = max_abs_diff(&logits(builtin.as_ref(), &x4[0].1), &reference[0].1);
    assert!(diff < 1e-4, "built-in with PyTorch's weights: {diff}");
}

#[test]
fn gradients_and_so_training_steps_match_the_builtin_model() {
    let e = Exported::new();
    let builtin = builtin_with(&e.weights());
    let module = load(&e.module("script"), None).unwrap();
    let x = images(8);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    let grads = |m: &dyn Classifier| {
        let loss = m.forward(&x, true).unwrap().cross_entropy_for_logits(&y);
        loss.backward();
        m.weights()
            .named_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.grad().copy()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let want = grads(builtin.as_ref());
    let got = grads(module.as_ref());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the module's parameters carry PyTorch's names"
    );
    for (key, g) in &want {
        let diff = max_abs_diff(&got[key], g);
        assert!(diff < 1e-4, "{key}: gradients differ by {diff}");
    }
    // Its parameters are the optimizer's: a step on them changes what the module computes.
    let before = logits(module.as_ref(), &x);
    tch::no_grad(|| {
        for mut p in module.weights().parameters() {
            let step = p.grad() * 0.5;
            let _ = p.f_sub_(&step).unwrap();
        }
    });
    assert!(max_abs_diff(&logits(module.as_ref(), &x), &before) > 1e-3);
}

fn run_spec(model: Model, epochs: u32) -> RunSpec {
    RunSpec {
        id: "r-00000000000000aa".parse().unwrap(),
        model_name: "mine".into(),
        model,
        defense_name: "none".into(),
        defense: Defense {
            method: TrainingMethod::Standard,
        },
        training: TrainingSpec {
            epochs,
            batch_size: 50,
            learning_rate: 0.01,
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            },
            schedule: LrSchedule::Constant,
            augment: false,
            eval_batch_size: 50,
            checkpoint_every: 1,
            precision: Precision::Fp32,
        },
        data: DataSpec {
            source: DataSource::Synthetic {
                seed: 3,
                train_size: 100,
                test_size: 100,
            },
            eval_limit: 0,
            train_limit: 0,
            shard: None,
        },
        seed: 1,
        epsilon_space: EpsilonSpace::Pixel,
    }
}

fn cells() -> Vec<CellSpec> {
    let cell = |id: &str, attack: Attack, epsilon: f64| CellSpec {
        id: id.parse::<CellId>().unwrap(),
        run_id: "r-00000000000000aa".parse::<RunId>().unwrap(),
        attack_name: "a".into(),
        attack,
        epsilon,
        defense_name: "d".into(),
        inference: InferenceDefense::default(),
    };
    vec![
        cell("c-0000000000000001", Attack::None, 0.0),
        cell("c-0000000000000002", fgsm(), 2.0 / 255.0),
        cell(
            "c-0000000000000003",
            Attack::Pgd {
                norm: Norm::L2,
                steps: 5,
                step: StepSize::FractionOfEpsilon(0.5),
                random_start: false,
                restarts: 1,
                eot: 1,
            },
            0.1,
        ),
    ]
}

/// The cell results of `run` on an executor whose model cache holds `files`.
fn execute(run: &RunSpec, files: &[&Path]) -> anyhow::Result<(Vec<CellResult>, usize)> {
    execute_cells(run, files, &cells())
}

fn execute_cells(
    run: &RunSpec,
    files: &[&Path],
    cells: &[CellSpec],
) -> anyhow::Result<(Vec<CellResult>, usize)> {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModelFileCache::new(cache_dir.path());
    for f in files {
        std::fs::copy(f, cache_dir.path().join(sha256(f))).unwrap();
    }
    let executor = Executor::new(Device::Cpu, 2).with_model_files(cache);
    let mut results = Vec::new();
    let mut epochs = 0;
    executor.run_catching(run, cells, &AtomicBool::new(false), &mut |p| {
        match p {
            Progress::Cell { result, .. } => results.push(result),
            Progress::Epoch(_) => epochs += 1,
            _ => {}
        }
        Ok(())
    })?;
    Ok((results, epochs))
}

#[test]
fn an_evaluate_only_run_of_the_module_reports_the_builtin_models_cells() {
    let e = Exported::new();
    let weights = e.weights();
    let module = e.module("script");
    let (builtin, builtin_epochs) = execute(
        &run_spec(model_file(&weights, ModelFormat::Safetensors, None), 0),
        &[&weights],
    )
    .unwrap();
    let (mine, epochs) = execute(
        &run_spec(model_file(&module, ModelFormat::TorchScript, None), 0),
        &[&module],
    )
    .unwrap();
    assert_eq!(
        (builtin_epochs, epochs),
        (0, 0),
        "epochs = 0 trains nothing"
    );
    assert_eq!(mine.len(), 3);
    for (m, b) in mine.iter().zip(&builtin) {
        assert_eq!(m.examples, b.examples);
        // Logits agree to ~1e-6; an image exactly on a decision boundary could still tip, so
        // one image in a hundred is allowed.
        assert!(
            (m.accuracy - b.accuracy).abs() <= 0.01 + 1e-9,
            "module {} vs built-in {}",
            m.accuracy,
            b.accuracy
        );
    }
    // A TorchScript module trains too (its parameters are the optimizer's).
    let (_, trained) = execute(
        &run_spec(model_file(&module, ModelFormat::TorchScript, None), 1),
        &[&module],
    )
    .unwrap();
    assert_eq!(trained, 1);
}

/// The permanent error loading (and probing) `path` gives.
fn refused(path: &Path) -> String {
    let x = images(4);
    let Err(err) = load(path, None).and_then(|m| m.check_contract(&x, 10)) else {
        panic!("a broken module must be refused: {}", path.display());
    };
    assert!(!is_retryable(&err), "not retryable: {err:#}");
    let text = format!("{err:#}");
    assert!(text.contains("model `mine`"), "names the model: {text}");
    text
}

#[test]
fn broken_modules_are_refused_with_what_is_wrong() {
    let e = Exported::new();
    let dir = e.dir.path();
    let cases = [
        ("pickle", "not a TorchScript module"),
        ("flat", "shape [40]"),
        ("classes-100", "[4, 100]"),
        ("nan", "NaN"),
        ("detached", "no finite gradient"),
    ];
    for (mode, says) in cases {
        let text = refused(&e.module(mode));
        assert!(text.contains(says), "{mode}: expected `{says}` in: {text}");
    }
    // Batch norm traced in training mode keeps using batch statistics (ResNet-18 has some).
    let resnet_weights = dir.join("resnet18.safetensors");
    reference::run(&[
        "export",
        "resnet18",
        &path_str(&resnet_weights),
        &path_str(&dir.join("input.safetensors")),
        &path_str(&dir.join("resnet-logits.safetensors")),
    ]);
    let traced_train = dir.join("resnet-trace-train.pt");
    reference::run(&[
        "torchscript",
        "resnet18",
        &path_str(&resnet_weights),
        &path_str(&traced_train),
        "trace-train",
    ]);
    assert!(refused(&traced_train).contains("traced in training mode"));

    // A 10-class module on 100-class data: both shapes named.
    let Err(err) = load(&e.module("script"), None).and_then(|m| m.check_contract(&images(4), 100))
    else {
        panic!("a 10-class module passed on 100-class data");
    };
    assert!(!is_retryable(&err));
    let text = format!("{err:#}");
    assert!(
        text.contains("[4, 10]") && text.contains("[4, 100]"),
        "{text}"
    );

    let garbage = dir.join("garbage.pt");
    std::fs::write(&garbage, b"definitely not a zip archive").unwrap();
    assert!(refused(&garbage).contains("not a TorchScript module"));
    let script = std::fs::read(e.module("script")).unwrap();
    let truncated = dir.join("truncated.pt");
    std::fs::write(&truncated, &script[..script.len() / 2]).unwrap();
    assert!(refused(&truncated).contains("not a TorchScript module"));

    // Weights of another architecture: the missing and unexpected keys are named.
    let wrong = model_file(&e.weights(), ModelFormat::Safetensors, None);
    let wrong = Model {
        name: "resnet18".into(),
        ..wrong
    };
    let Err(err) = models::load(&wrong, Some(&e.weights()), "model `r`", (10, Device::Cpu)) else {
        panic!("basic weights loaded into a resnet18");
    };
    assert!(!is_retryable(&err));
    assert!(format!("{err:#}").contains("model `r`"), "{err:#}");

    // A file the cache does not have.
    let Err(err) = models::load(
        &wrong,
        Some(&dir.join("absent")),
        "model `r`",
        (10, Device::Cpu),
    ) else {
        panic!("a model without its file loaded");
    };
    assert!(
        format!("{err:#}").contains("not in this worker's model cache"),
        "{err:#}"
    );
}

fn fgsm() -> Attack {
    Attack::Fgsm {
        norm: Norm::Linf,
        random_start: false,
        step_fraction: 1.0,
        eot: 1,
    }
}

/// Every defense advsweep has applies to a TorchScript module as to a built-in model:
/// adversarial training through its parameters, a denoiser trained in front of it, inference
/// noise around it.
#[test]
fn a_module_trains_adversarially_behind_a_denoiser_and_inference_noise() {
    let e = Exported::new();
    let module = e.module("script");
    let mut run = run_spec(model_file(&module, ModelFormat::TorchScript, None), 1);
    run.defense = Defense {
        method: TrainingMethod::Adversarial {
            attack: fgsm(),
            epsilon: 2.0 / 255.0,
            fraction: 0.5,
        },
    };
    let inference = InferenceDefense {
        inference_noise: Some(0.02),
        denoiser: Some(advsweep_core::DenoiserSpec {
            blocks: 1,
            channels: 8,
            attack: fgsm(),
            epsilon: 2.0 / 255.0,
            epochs: 1,
            learning_rate: 1e-3,
            pairs_per_epoch: 0,
        }),
    };
    let cells: Vec<CellSpec> = cells()
        .into_iter()
        .map(|c| CellSpec {
            inference: inference.clone(),
            ..c
        })
        .collect();
    let (results, epochs) = execute_cells(&run, &[&module], &cells).unwrap();
    assert_eq!((results.len(), epochs), (3, 1));
    assert!(
        results
            .iter()
            .all(|r| r.examples == 100 && r.accuracy.is_finite())
    );
}
