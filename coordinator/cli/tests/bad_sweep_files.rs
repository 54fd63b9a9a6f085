//! Bad sweep files: an error that names the problem, a non-zero exit, nothing written.

use std::process::Command;

use advsweep_coordinator::sweep::{Overrides, expand, parse_sweep};

const GOOD: &str = r#"
version = 1
name = "ok"
[data]
source = "synthetic"
[training]
epochs = 1
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

fn error_of(text: &str) -> String {
    match parse_sweep(text, "bad.toml").and_then(|f| expand(&f, &Overrides::default(), "bad.toml"))
    {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// (what is wrong, the file, a fragment the message must contain)
fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "unknown top-level key",
            format!("{GOOD}\nbogus = 1\n"),
            "bogus",
        ),
        (
            "unknown nested key",
            GOOD.replace("epochs = 1", "epoch = 1"),
            "epoch",
        ),
        (
            "unknown attack preset",
            GOOD.replace(r#""none", "fgsm""#, r#""none", "deepfool""#),
            "deepfool",
        ),
        (
            "unknown defense preset",
            GOOD.replace(r#"["standard"]"#, r#"["magic-shield"]"#),
            "magic-shield",
        ),
        (
            "unknown model",
            GOOD.replace(r#"["basic"]"#, r#"["resnet9000"]"#),
            "resnet9000",
        ),
        (
            "empty axis",
            GOOD.replace(r#"attacks = ["none", "fgsm"]"#, "attacks = []"),
            "grid.attacks is empty",
        ),
        (
            "negative epsilon",
            GOOD.replace(r#"["8/255"]"#, "[-0.1]"),
            "ε must be a non-negative",
        ),
        (
            "wrong type",
            GOOD.replace("epochs = 1", r#"epochs = "five""#),
            "epochs",
        ),
        (
            "epsilon that is not a number",
            GOOD.replace(r#"["8/255"]"#, r#"["eight"]"#),
            "eight",
        ),
        (
            "missing version",
            GOOD.replace("version = 1", ""),
            "version",
        ),
        (
            "future version",
            GOOD.replace("version = 1", "version = 9"),
            "version 9",
        ),
        (
            "duplicate value on an axis",
            GOOD.replace(r#""none", "fgsm""#, r#""fgsm", "fgsm""#),
            "twice",
        ),
        (
            "zero epochs",
            GOOD.replace("epochs = 1", "epochs = 0"),
            "training.epochs",
        ),
        ("not TOML", "version = 1\nname = [".to_owned(), "bad.toml"),
        ("bad WideResNet depth", GOOD.replace(r#"["basic"]"#, r#"["wrn-27-10"]"#), "6n+4"),
        ("unknown noise point", format!("{GOOD}\n[models.n]\narch = \"basic\"\nnoise = {{ sigma = 0.1, layers = [\"layer9\"] }}\n").replace(r#"models = ["basic"]"#, r#"models = ["n"]"#), "layer9"),
        ("key that does not apply to the kind", format!("{GOOD}\n[defenses.s]\nkind = \"standard\"\nattack = \"fgsm\"\n").replace(r#"["standard"]"#, r#"["s"]"#), "key `attack` does not apply"),
        ("unknown defense kind", format!("{GOOD}\n[defenses.s]\nkind = \"magic\"\n").replace(r#"["standard"]"#, r#"["s"]"#), "kind = \"magic\""),
        ("mixed with an l2 attack in the linf slot", format!("{GOOD}\n[defenses.m]\nkind = \"mixed\"\nepsilon = \"tied\"\nlinf = \"pgd-l2\"\n").replace(r#"["standard"]"#, r#"["m"]"#), "not an linf attack"),
        ("bad eot", format!("{GOOD}\n[attacks.e]\nkind = \"pgd\"\neot = 0\n").replace(r#""none", "fgsm""#, r#""none", "e""#), "eot"),
        ("unknown optimizer", GOOD.replace("epochs = 1", "epochs = 1\noptimizer = \"lbfgs\""), "lbfgs"),
        ("unknown schedule", GOOD.replace("epochs = 1", "epochs = 1\nschedule = \"warmup\""), "warmup"),
        ("unknown epsilon space", GOOD.replace("name = \"ok\"", "name = \"ok\"\nepsilon_space = \"logit\""), "logit"),
        // Issue 18: types are not coerced; errors name the key path and line:column.
        ("version as a string", GOOD.replace("version = 1", "version = \"1\""), "bad.toml:2:11: version: expected an integer"),
        ("fractional version", GOOD.replace("version = 1", "version = 1.5"), "found a float 1.5"),
        ("epochs as a string", GOOD.replace("epochs = 1", "epochs = \"5\""), "bad.toml:7:10: training.epochs: expected an integer"),
        ("nesterov as a string", GOOD.replace("epochs = 1", "epochs = 1\nnesterov = \"yes\""), "training.nesterov: expected a boolean"),
        ("train_size past u32", GOOD.replace("source = \"synthetic\"", "source = \"synthetic\"\ntrain_size = 4294967296"), "data.train_size: an integer `4294967296` is out of range"),
        ("unknown precision", GOOD.replace("epochs = 1", "epochs = 1\nprecision = \"fp16\""), "training.precision"),
        ("unused preset with a hostile name", format!("{GOOD}\n[attacks.\"../../evil\"]\nkind = \"none\"\n"), "[attacks.\"../../evil\"]: names use"),
        ("epsilon past the image", GOOD.replace(r#"["8/255"]"#, "[1e300]"), "grid.epsilons = 1e300: an ℓ∞ budget in pixel space must be at most 1"),
        // Issue 21: a mistyped name gets the name that was meant.
        ("mistyped attack preset", GOOD.replace(r#""none", "fgsm""#, r#""none", "fgms""#), "unknown attack preset `fgms` (did you mean `fgsm`?"),
        ("mistyped own preset", format!("{GOOD}\n[attacks.pgd5-fast]\nkind = \"pgd\"\nsteps = 5\n").replace(r#""none", "fgsm""#, r#""none", "pgd5-fats""#), "did you mean `pgd5-fast`?"),
        ("model with a dash", GOOD.replace(r#"["basic"]"#, r#"["resnet-18"]"#), "did you mean `resnet18`?"),
        ("norm in capitals", format!("{GOOD}\n[attacks.e]\nkind = \"pgd\"\nnorm = \"Linf\"\n").replace(r#""none", "fgsm""#, r#""none", "e""#), "(did you mean `linf`?)"),
        ("mistyped optimizer", GOOD.replace("epochs = 1", "epochs = 1\noptimizer = \"adma\""), "(did you mean `adam`?)"),
    ]
}

#[test]
fn every_bad_file_gets_an_error_naming_the_problem() {
    let mut failures = Vec::new();
    for (what, text, fragment) in cases() {
        let message = error_of(&text);
        if !message.contains(fragment) {
            failures.push(format!("{what}: {message:?} does not mention {fragment:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_good_file_is_accepted() {
    let file = parse_sweep(GOOD, "ok.toml").expect("parses");
    let plan = expand(&file, &Overrides::default(), "ok.toml").expect("expands");
    assert_eq!(plan.cells.len(), 2);
}

#[test]
fn cli_refuses_bad_files_with_exit_code_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, text, fragment) in cases() {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, &text).expect("write");
        let state = dir.path().join("state");
        for args in [
            vec!["plan".into(), file.display().to_string()],
            vec![
                "run".into(),
                file.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
                "--worker-bin".into(),
                "/bin/false".into(),
            ],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
                .args(&args)
                .output()
                .expect("advsweep runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} ({}): {stderr}", args[0]);
            assert!(stderr.contains(fragment), "{what}: {stderr}");
            assert!(
                !state.exists(),
                "{what}: `advsweep run` wrote {}",
                state.display()
            );
        }
    }
}

#[test]
fn plan_prints_the_expansion_without_running_anything() {
    let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .args([
            "plan",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/quickstart.toml"),
        ])
        .output()
        .expect("advsweep runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 runs (training jobs), 11 cells (evaluations)"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("\nrun r-").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("  cell c-").count(), 11, "{stdout}");
}

#[test]
fn plan_names_a_noisy_model_and_its_eot_in_the_right_grammar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("one.toml");
    std::fs::write(
        &file,
        "version = 1\nname = \"one\"\n[data]\nsource = \"synthetic\"\n\
         [models.noisy-basic]\narch = \"basic\"\nnoise = { sigma = 0.1, layers = [\"input\"] }\n\
         [grid]\nmodels = [\"noisy-basic\"]\ndefenses = [\"standard\"]\nattacks = [\"fgsm\"]\n\
         epsilons = [\"8/255\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .arg("plan")
        .arg(&file)
        .output()
        .expect("advsweep runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 run (training jobs), 1 cell (evaluations)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("model=noisy-basic (basic, noise σ=0.1 at input)")
            && stdout.contains("(1 cell)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fgsm (fgsm, EOT 10)"),
        "the noisy model is attacked with EOT: {stdout}"
    );
}

fn advsweep(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .args(args)
        .env_remove("ADVSWEEP_CONFIG")
        .output()
        .expect("advsweep runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 18: `plan /dev/zero`, `submit /dev/urandom` and `--token-file /dev/zero` read until
/// memory ran out; a 10 MB `submit` exited 1 with a raw decode error while `plan` accepted it.
/// Every local read is a regular file under a cap: exit 2, a message that says why, before any
/// connection is tried (nothing listens on the address given).
#[test]
fn devices_and_oversized_files_are_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).expect("write");
    let good = good.display().to_string();
    let big = dir.path().join("big.toml");
    let max = advsweep_core::limits::MAX_SWEEP_FILE_BYTES;
    std::fs::write(&big, format!("{GOOD}{}", "#".repeat(10_000_000))).expect("write");
    let big = big.display().to_string();
    let two_mb = dir.path().join("two.toml");
    std::fs::write(&two_mb, format!("{GOOD}{}", "#".repeat(2_000_000))).expect("write");
    let two_mb = two_mb.display().to_string();
    let nowhere = ["--coordinator", "http://127.0.0.1:9"];
    let dir_path = dir.path().display().to_string();
    for (args, fragment) in [
        (
            vec!["plan", "/dev/zero"],
            "/dev/zero: it is a character device, not a regular file",
        ),
        (
            vec!["plan", &dir_path],
            "it is a directory, not a regular file",
        ),
        (
            vec!["submit", "/dev/urandom", nowhere[0], nowhere[1]],
            "/dev/urandom: it is a character device",
        ),
        (vec!["plan", &two_mb], "more than the limit of"),
        (vec!["plan", &big], "more than the limit of"),
        (
            vec!["submit", &big, nowhere[0], nowhere[1]],
            "more than the limit of",
        ),
        (
            vec![
                "submit",
                &good,
                nowhere[0],
                nowhere[1],
                "--token-file",
                "/dev/zero",
            ],
            "token_file /dev/zero: it is a character device",
        ),
        (
            vec!["status", nowhere[0], nowhere[1], "--config", "/dev/zero"],
            "config file /dev/zero: it is a character device",
        ),
    ] {
        let (code, stderr) = advsweep(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(fragment), "{args:?}: {stderr}");
        assert!(stderr.len() < 2_000, "{args:?}: {} bytes", stderr.len());
    }
    let (code, stderr) = advsweep(&["plan", &big]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(&format!("{max} bytes")), "{stderr}");
}

/// Missing data is found before anything starts: `run` refuses it (exit 2, no state
/// directory), `plan` warns and still prints the plan (a cluster's workers may see the path).
#[test]
fn a_missing_data_path_is_refused_by_run_and_flagged_by_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c10.toml");
    std::fs::write(
        &file,
        "version = 1\nname = \"c10\"\n[data]\nsource = \"cifar10\"\npath = \"/nonexistent/cifar\"\n\
         [grid]\nmodels = [\"basic\"]\ndefenses = [\"standard\"]\nattacks = [\"none\"]\n\
         epsilons = [\"8/255\"]\n",
    )
    .expect("write");
    let state = dir.path().join("state");
    let run = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .arg("run")
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .args(["--worker-bin", "/bin/false"])
        .output()
        .expect("advsweep runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("data.path `/nonexistent/cifar`: no such directory"),
        "{stderr}"
    );
    assert!(!state.exists(), "run wrote {}", state.display());
    let plan = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .arg("plan")
        .arg(&file)
        .output()
        .expect("advsweep runs");
    assert!(plan.status.success());
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains("warning: data.path `/nonexistent/cifar`"),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

/// Output that nobody reads any more (`advsweep plan … 2>&1 | head` once `head` is done) ends
/// the command quietly, never with a panic: here stderr is a pipe whose reader is gone before
/// `plan` warns there that the seed's CIFAR-10 directory is missing on this machine.
#[test]
fn a_closed_stderr_gets_no_panic() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_advsweep"))
        .args([
            "plan",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../sweeps/seed-vgg-capacity.toml"
            ),
        ])
        .env_remove("ADVSWEEP_CIFAR10_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(writer)
        .output()
        .expect("advsweep runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("sweep seed-vgg-capacity"), "{stdout}");
}
