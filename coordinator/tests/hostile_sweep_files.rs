//! Sweep files from anyone on the network: the parser and the expansion return a plan or a
//! clean error for every input — random text, and random mutations of the real files in
//! `sweeps/` (byte flips, truncations, duplicated and dropped lines, huge / negative / NaN /
//! infinite numbers, unicode) — and never panic. Whatever expands also survives the trip to a
//! worker: every run decodes with `advsweep_core::wire::run_from_wire` (the parser's bounds are
//! the wire's), and no plan exceeds the cell limit.
//!
//! Case counts: 3,000 random texts, 4,000 mutated real files, 3,000 numeric substitutions.

use std::path::PathBuf;

use advsweep_coordinator::sweep::{
    Limits, Overrides, Plan, SweepError, expand, expand_within, parse_sweep,
};
use advsweep_core::wire;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn sweep_files() -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("budget")] {
        for entry in std::fs::read_dir(&dir)
            .expect("sweeps/ is readable")
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                files.push((path.display().to_string(), text));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "found {} sweep files", files.len());
    files
}

fn plan_of(text: &str) -> Result<Plan, SweepError> {
    parse_sweep(text, "fuzz.toml")
        .and_then(|file| expand(&file, &Overrides::default(), "fuzz.toml"))
}

/// What any plan the coordinator accepts must satisfy.
fn check_plan(plan: &Plan) -> Result<(), TestCaseError> {
    prop_assert!(plan.cells.len() as u64 <= Limits::default().max_cells);
    prop_assert!(advsweep_coordinator::sweep::expand::valid_name(&plan.name));
    for run in &plan.runs {
        let cells: Vec<_> = plan.cells_of(&run.id).cloned().collect();
        prop_assert!(!cells.is_empty(), "run {} has no cells", run.id);
        let wire_run = wire::run_to_wire(run, &plan.sweep_id, &cells);
        match wire::run_from_wire(&wire_run) {
            Ok((decoded, decoded_cells)) => {
                prop_assert_eq!(&decoded, run);
                prop_assert_eq!(decoded_cells, cells);
            }
            Err(e) => prop_assert!(false, "a worker would refuse run {}: {e}", run.id),
        }
    }
    Ok(())
}

thread_local! {
    /// Inputs of the running property that expanded to a plan.
    static EXPANDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn check_outcome(text: &str) -> Result<(), TestCaseError> {
    match plan_of(text) {
        Ok(plan) => {
            EXPANDED.with(|n| n.set(n.get() + 1));
            check_plan(&plan)
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            Ok(())
        }
    }
}

/// Runs `cases` inputs of `strategy`; at least `min_expanded` of them must expand (so the
/// property reaches expansion and the wire, not only the TOML parser).
fn property<S: Strategy>(
    cases: u32,
    min_expanded: u32,
    strategy: S,
    text_of: impl Fn(S::Value) -> String,
) {
    EXPANDED.with(|n| n.set(0));
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |value| check_outcome(&text_of(value)))
        .unwrap_or_else(|e| panic!("{e}"));
    let expanded = EXPANDED.with(|n| n.get());
    eprintln!("{cases} cases, {expanded} expanded");
    assert!(
        expanded >= min_expanded,
        "only {expanded} of {cases} expanded"
    );
}

/// One edit of a sweep file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipByte { at: usize, to: u8 },
    Truncate { at: usize },
    DuplicateLine { line: usize },
    DropLine { line: usize },
    SwapLines { a: usize, b: usize },
    ReplaceNumber { nth: usize, with: String },
    Insert { at: usize, text: String },
}

fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("nan"), Just("+nan"), Just("-nan"), Just("inf"), Just("+inf"), Just("-inf"),
            Just("1e400"), Just("-1e400"), Just("1e-400"), Just("-0.0"), Just("-1"), Just("0"),
            Just("4294967295"), Just("4294967296"), Just("9223372036854775807"),
            Just("-9223372036854775808"), Just("99999999999999999999"), Just("0x7fffffff"),
            Just("\"1/0\""), Just("\"0/0\""), Just("\"nan/1\""), Just("\"1e308/1e-308\""),
            Just("\"inf\""), Just("\"tied\""), Just("[]"), Just("{}"), Just("true"),
            Just("\"\""), Just("1_000_000"), Just("1979-05-27T07:32:00Z"),
        ]
        .prop_map(str::to_owned),
        2 => any::<f64>().prop_map(|v| format!("{v:e}")),
        2 => any::<i64>().prop_map(|v| v.to_string()),
        1 => (0u32..300).prop_map(|v| v.to_string()),
    ]
}

fn unicode() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,12}",
        Just("é".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{202e}".to_owned()),
        Just("\"".to_owned()),
        Just("\n[grid]\n".to_owned()),
        Just("\nname = \"x\"\n".to_owned()),
        Just("\n[models.\"../x\"]\narch = \"basic\"\n".to_owned()),
        Just("[[[[".to_owned()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, to)| Mutation::FlipByte { at, to }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        2 => any::<usize>().prop_map(|line| Mutation::DropLine { line }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        4 => (any::<usize>(), hostile_number())
            .prop_map(|(nth, with)| Mutation::ReplaceNumber { nth, with }),
        2 => (any::<usize>(), unicode()).prop_map(|(at, text)| Mutation::Insert { at, text }),
    ]
}

/// Byte offsets of the numbers in `text` (runs of digits, '.', 'e', '-', '+', '_').
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit()
                    || matches!(bytes[i], b'.' | b'e' | b'-' | b'+' | b'_'))
            {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let pick = |n: usize, len: usize| n % len.max(1);
    match m {
        Mutation::FlipByte { at, to } => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = pick(*at, bytes.len());
                bytes[i] = *to;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Truncate { at } => {
            let bytes = &text.as_bytes()[..pick(*at, text.len() + 1)];
            String::from_utf8_lossy(bytes).into_owned()
        }
        Mutation::DuplicateLine { line } if !lines.is_empty() => {
            let i = pick(*line, lines.len());
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Mutation::DropLine { line } if !lines.is_empty() => {
            lines.remove(pick(*line, lines.len()));
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } if !lines.is_empty() => {
            let (a, b) = (pick(*a, lines.len()), pick(*b, lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        Mutation::ReplaceNumber { nth, with } => {
            let spans = numbers(text);
            if spans.is_empty() {
                return text.to_owned();
            }
            let (start, end) = spans[pick(*nth, spans.len())];
            format!("{}{with}{}", &text[..start], &text[end..])
        }
        Mutation::Insert { at, text: insert } => {
            let mut i = pick(*at, text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            format!("{}{insert}{}", &text[..i], &text[i..])
        }
        _ => text.to_owned(),
    }
}

#[test]
fn random_text_3000_cases() {
    let strategy = prop_oneof![
        "\\PC{0,400}",
        ".{0,200}",
        "\\PC{0,200}".prop_map(|t| format!("version = 1\n{t}")),
        "[\\[\\]{}=\"'a-z0-9., \n#]{0,300}".prop_map(|t| format!("version = 1\nname = \"x\"\n{t}")),
    ];
    property(3000, 0, strategy, |text| text);
}

/// One edit of a sweep file.
#[test]
fn mutated_real_files_4000_cases() {
    let strategy = (
        any::<prop::sample::Index>(),
        proptest::collection::vec(mutation(), 1..5),
    );
    property(4000, 400, strategy, |(file, edits)| {
        let files = sweep_files_cached();
        let (_, original) = &files[file.index(files.len())];
        let mut text = original.clone();
        for m in &edits {
            text = apply(&text, m);
        }
        text
    });
}

/// The template of [`numbers_anywhere_3000_cases`]: every numeric setting in one file.
const TEMPLATE: &str = r#"
version = 1
name = "numbers"
[data]
source = "synthetic"
seed = {0}
train_size = {1}
test_size = {2}
train_limit = {3}
[training]
epochs = {4}
batch_size = {5}
learning_rate = {6}
momentum = {7}
weight_decay = {8}
schedule = "step"
step_every = {9}
step_gamma = {10}
checkpoint_every = {11}
[retry]
max_attempts = {12}
[evaluation]
limit = {13}
batch_size = {14}
eot_samples = {15}
[grid]
models = ["noisy-basic", "m"]
defenses = ["d", "mix"]
attacks = ["none", "p", "f"]
epsilons = [0.0, {16}, "8/255"]
seeds = [0, {17}]
[models.m]
arch = "basic"
noise = {{ sigma = {18}, layers = ["input"] }}
[attacks.p]
kind = "pgd"
steps = {19}
step_fraction = {20}
restarts = {21}
eot = {22}
[attacks.f]
kind = "fgsm"
step_fraction = {23}
[defenses.d]
kind = "adversarial"
attack = "p"
epsilon = {24}
fraction = {25}
inference_noise = {26}
denoiser = {{ blocks = {27}, channels = {28}, epochs = {29}, learning_rate = {30}, epsilon = {31} }}
[defenses.mix]
kind = "mixed"
epsilon_linf = {32}
epsilon_l2 = {33}
"#;

/// A value for each `{i}` of [`TEMPLATE`] with which the file expands.
const PLAUSIBLE: [&str; 34] = [
    "1",
    "100",
    "50",
    "0", // data
    "2",
    "16",
    "0.05",
    "0.9",
    "5e-4",
    "1",
    "0.1",
    "1", // training
    "3", // retry
    "20",
    "10",
    "2", // evaluation
    "0.03",
    "1",   // grid ε, seed
    "0.1", // noise σ
    "3",
    "0.5",
    "1",
    "2",    // pgd
    "1.25", // fgsm
    "\"tied\"",
    "0.5",
    "0.05",
    "2",
    "4",
    "1",
    "1e-3",
    "\"8/255\"", // adversarial + denoiser
    "0.03",
    "0.5", // mixed
];

/// Up to 3 settings of [`PLAUSIBLE`] replaced by hostile values (none in a quarter of the cases,
/// so that expansion and the wire round trip run too).
fn settings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec((any::<prop::sample::Index>(), hostile_number()), 0..4).prop_map(
        |edits| {
            let mut values: Vec<String> = PLAUSIBLE.iter().map(|v| (*v).to_owned()).collect();
            for (slot, value) in edits {
                let i = slot.index(values.len());
                values[i] = value;
            }
            values
        },
    )
}

fn fill(template: &str, values: &[String]) -> String {
    let mut out = template.replace("{{", "\u{1}").replace("}}", "\u{2}");
    for (i, v) in values.iter().enumerate() {
        out = out.replace(&format!("{{{i}}}"), v);
    }
    out.replace('\u{1}', "{").replace('\u{2}', "}")
}

#[test]
fn numbers_anywhere_3000_cases() {
    property(3000, 600, settings(), |values| fill(TEMPLATE, &values));
}

fn sweep_files_cached() -> &'static [(String, String)] {
    static FILES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    FILES.get_or_init(sweep_files)
}

#[test]
fn the_template_expands_when_every_value_is_plausible() {
    let values: Vec<String> = PLAUSIBLE.iter().map(|v| (*v).to_owned()).collect();
    let plan = plan_of(&fill(TEMPLATE, &values)).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.cells.len() > 10, "{} cells", plan.cells.len());
}

#[test]
fn every_real_file_is_counted_exactly_against_the_limit() {
    for (path, text) in sweep_files() {
        let file = parse_sweep(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        // Files naming model files (sweeps/own-model.toml) expand with stand-ins for them.
        let overrides = Overrides {
            model_files: advsweep_coordinator::sweep::model_files::stand_ins(&file),
            ..Overrides::default()
        };
        let plan = expand(&file, &overrides, &path).unwrap_or_else(|e| panic!("{e}"));
        let n = plan.cells.len() as u64;
        let at_limit = Limits {
            max_cells: n,
            ..Limits::default()
        };
        expand_within(&file, &overrides, &path, &at_limit)
            .unwrap_or_else(|e| panic!("{path} at its own size: {e}"));
        let below = Limits {
            max_cells: n - 1,
            ..Limits::default()
        };
        let e =
            expand_within(&file, &overrides, &path, &below).expect_err("one cell over the limit");
        assert!(
            e.to_string().contains(&format!(
                "sweep expands to {n} cells, more than the coordinator's max_cells_per_sweep = {}",
                n - 1
            )),
            "{path}: {e}"
        );
    }
}

#[test]
fn a_grid_of_ten_to_the_eight_cells_is_refused_without_building_it() {
    let models: Vec<String> = (0..10_000).map(|i| format!("\"m{i}\"")).collect();
    let presets: String = (0..10_000)
        .map(|i| format!("[models.m{i}]\narch = \"basic\"\n"))
        .collect();
    let epsilons: Vec<String> = (1..=10_000)
        .map(|i| format!("{}", f64::from(i) / 1e5))
        .collect();
    let text = format!(
        "version = 1\nname = \"huge\"\n[data]\nsource = \"synthetic\"\n[grid]\nmodels = [{}]\ndefenses = [\"standard\", \"at-fgsm\"]\nattacks = [\"none\", \"fgsm\"]\nepsilons = [{}]\nseeds = [0, 1, 2]\n{presets}",
        models.join(","),
        epsilons.join(",")
    );
    let e = plan_of(&text).expect_err("far too big");
    // standard: 10⁴ models × 3 seeds × (1 + 10⁴) cells; at-fgsm: 10⁴ × 3 × 10⁴ runs × 2 cells.
    let expected: u64 = 10_000 * 3 * 10_001 + 10_000 * 3 * 10_000 * 2;
    assert!(
        e.to_string().contains(&format!(
            "sweep expands to {expected} cells, more than the coordinator's max_cells_per_sweep = 100000"
        )),
        "{e}"
    );
}

#[test]
fn names_that_would_escape_a_directory_or_break_a_table_are_refused() {
    let good = r#"
version = 1
name = "ok"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none"]
epsilons = [0.0]
"#;
    assert!(plan_of(good).is_ok());
    for name in [
        "..",
        ".",
        ".hidden",
        "a/b",
        "a b",
        "ü",
        "a|b",
        "",
        &"n".repeat(65),
    ] {
        let text = good.replace("name = \"ok\"", &format!("name = {name:?}"));
        let e = plan_of(&text).expect_err(name);
        assert!(e.to_string().contains("name = "), "{name}: {e}");
    }
    for (table, axis) in [
        ("models", "models"),
        ("attacks", "attacks"),
        ("defenses", "defenses"),
    ] {
        let body = match table {
            "models" => "arch = \"basic\"",
            "attacks" => "kind = \"none\"",
            _ => "kind = \"standard\"",
        };
        let text = format!(
            "{}\n[{table}.\"../x\"]\n{body}\n",
            good.replace(
                &format!(
                    "{axis} = [\"{}\"]",
                    match axis {
                        "models" => "basic",
                        "attacks" => "none",
                        _ => "standard",
                    }
                ),
                &format!("{axis} = [\"../x\"]")
            )
        );
        let e = plan_of(&text).expect_err("refused");
        assert!(e.to_string().contains(&format!("grid.{axis}[0]")), "{e}");
    }
}

#[test]
fn deeply_nested_values_are_refused_without_overflowing_the_stack() {
    for text in [
        format!("version = 1\na = {}", "[".repeat(200_000)),
        format!(
            "version = 1\na = {}1{}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        ),
        format!("version = 1\na = {}", "{b=".repeat(100_000)),
        format!("version = 1\n{}= 1", "a.".repeat(100_000)),
    ] {
        assert!(plan_of(&text).is_err());
    }
}

#[test]
fn bounds_shared_with_the_wire_are_enforced_in_the_file() {
    let base = r#"
version = 1
name = "b"
[data]
source = "synthetic"
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["p"]
epsilons = ["8/255"]
[attacks.p]
kind = "pgd"
"#;
    for (edit, fragment) in [
        (
            "steps = 4294967295",
            "steps = 4294967295 must be in 1..=10000",
        ),
        ("restarts = 100000", "restarts = 100000 must be in 1..=1000"),
    ] {
        let e = plan_of(&format!("{base}{edit}\n")).expect_err(edit);
        assert!(e.to_string().contains(fragment), "{e}");
    }
    for (section, fragment) in [
        (
            "[training]\nepochs = 1000000",
            "training.epochs = 1000000 must be in 0..=100000",
        ),
        ("[training]\nbatch_size = 4000000000", "training.batch_size"),
        (
            "[evaluation]\nbatch_size = 4000000000",
            "evaluation.batch_size",
        ),
    ] {
        let e = plan_of(&format!("{base}\n{section}\n")).expect_err(section);
        assert!(e.to_string().contains(fragment), "{e}");
    }
    let cifar = base.replace(
        "source = \"synthetic\"",
        "source = \"cifar10\"\npath = \"/data\\u0000x\"",
    );
    let e = plan_of(&cifar).expect_err("NUL in a path");
    assert!(e.to_string().contains("data.path"), "{e}");
    let zero = base.replace("epsilons = [\"8/255\"]", "epsilons = [0.0, -0.0]");
    let e = plan_of(&zero).expect_err("-0.0 is 0.0");
    assert!(e.to_string().contains("twice"), "{e}");
}

/// A small valid file; `version` on line 2, `epochs` on line 7 (the leading newline is line 1).
const STRICT_BASE: &str = r#"
version = 1
name = "strict"
[data]
source = "synthetic"
[training]
epochs = 1
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm", "pgd-l2"]
epsilons = ["8/255"]
"#;

fn error_text(text: &str) -> String {
    plan_of(text).map_or_else(|e| e.to_string(), |_| panic!("accepted:\n{text}"))
}

/// Issue 18: the `config` crate coerced types (`version = "1"`, `epochs = "5"`, `nesterov =
/// "yes"` accepted; `version = 1.5` read as 2). Strict TOML refuses each, naming the key path
/// and its `line:column`.
#[test]
fn wrong_types_are_refused_naming_the_key_and_its_line() {
    assert!(plan_of(STRICT_BASE).is_ok());
    for (from, to, expected) in [
        (
            "version = 1",
            "version = \"1\"",
            "fuzz.toml:2:11: version: expected an integer",
        ),
        (
            "version = 1",
            "version = 1.4",
            "fuzz.toml:2:11: version: expected an integer",
        ),
        ("version = 1", "version = 1.5", "found a float 1.5"),
        ("version = 1", "version = true", "found a boolean true"),
        (
            "version = 1",
            "version = 2",
            "unsupported sweep file version 2",
        ),
        (
            "epochs = 1",
            "epochs = \"5\"",
            "fuzz.toml:7:10: training.epochs: expected an integer in 0..=4294967295, found a string \"5\"",
        ),
        (
            "epochs = 1",
            "epochs = 1.0",
            "training.epochs: expected an integer",
        ),
        (
            "epochs = 1",
            "epochs = 1\nnesterov = \"yes\"",
            "fuzz.toml:8:12: training.nesterov: expected a boolean, found a string \"yes\"",
        ),
        (
            "source = \"synthetic\"",
            "source = \"synthetic\"\ntrain_size = 4294967296",
            "fuzz.toml:6:14: data.train_size: an integer `4294967296` is out of range",
        ),
        (
            "epochs = 1",
            "epochs = 99999999999999999999",
            "training.epochs: expected an integer in 0..=4294967295, found an integer `99999999999999999999`",
        ),
        (
            "epochs = 1",
            "precision = \"fp16\"",
            "training.precision: precision = \"fp16\" is unknown (known: fp32, bf16)",
        ),
        (
            "epsilons = [\"8/255\"]",
            "epsilons = [0.1, true]",
            "grid.epsilons[1]: expected a number or a fraction",
        ),
        (
            "source = \"synthetic\"",
            "source = \"synthetic\"\npath = \"/data\"",
            "data: key `path` does not apply to source = \"synthetic\"",
        ),
        (
            "epochs = 1",
            "epoch = 1",
            "training.epoch: unknown field `epoch`",
        ),
    ] {
        assert!(STRICT_BASE.contains(from), "{from}");
        let e = error_text(&STRICT_BASE.replacen(from, to, 1));
        assert!(e.contains(expected), "{to}: {e}");
        assert!(!e.contains("as i128"), "{e}");
    }
    let attack = format!("{STRICT_BASE}[attacks.f]\nkind = \"fgsm\"\nsteps = 3\n");
    let e = error_text(&attack);
    assert!(
        e.contains("attacks.f: key `steps` does not apply to kind = \"fgsm\""),
        "{e}"
    );
    let noise = format!("{STRICT_BASE}[models.m]\narch = \"basic\"\nnoise = {{ sigma = \"x\" }}\n");
    let e = error_text(&noise);
    assert!(e.contains("models.m.noise.sigma: expected a number"), "{e}");
}

/// Issue 18: nesting past the parser's limit printed the whole 200 KB line and named no key;
/// a long value is quoted cut short.
#[test]
fn errors_quote_little_and_name_the_key() {
    for (text, key) in [
        (format!("version = 1\na = {}", "[".repeat(200_000)), "a"),
        (
            format!("version = 1\n[grid]\nepsilons = {}", "[".repeat(200_000)),
            "grid.epsilons",
        ),
        (
            STRICT_BASE.replace(
                "name = \"strict\"",
                &format!("name = {}", "7".repeat(200_000)),
            ),
            "name",
        ),
        (
            STRICT_BASE.replace(
                "epochs = 1",
                &format!("epochs = \"{}\"", "x".repeat(200_000)),
            ),
            "training.epochs",
        ),
    ] {
        let e = error_text(&text);
        assert!(e.len() < 1_000, "{} bytes: {}", e.len(), &e[..200]);
        assert!(e.contains(&format!(": {key}: ")), "{e}");
    }
}

/// Issue 18: `[attacks."../../evil"]` was stored because the grid did not use it. Every preset
/// table is checked: its name, and the preset itself.
#[test]
fn unused_presets_are_validated_too() {
    for (table, body) in [
        ("models", "arch = \"basic\""),
        ("attacks", "kind = \"none\""),
        ("defenses", "kind = \"standard\""),
    ] {
        for name in ["../../evil", "a b", "\u{202e}x", ".hidden"] {
            let text = format!("{STRICT_BASE}[{table}.\"{name}\"]\n{body}\n");
            let e = error_text(&text);
            assert!(
                e.contains(&format!("[{table}.")) && e.contains("names use"),
                "{e}"
            );
        }
    }
    for (preset, fragment) in [
        (
            "[attacks.q]\nkind = \"pgd\"\nsteps = 0",
            "attack preset `q`: steps = 0",
        ),
        ("[models.m]\narch = \"resnet9000\"", "model `m`"),
        (
            "[defenses.d]\nkind = \"adversarial\"\nattack = \"nope\"\nepsilon = 0.1",
            "nope",
        ),
        (
            "[defenses.d]\nkind = \"adversarial\"\nattack = \"fgsm\"\nepsilon = 3.0",
            "defense preset `d`: epsilon = 3: an ℓ∞ budget in pixel space must be at most 1",
        ),
    ] {
        let e = error_text(&format!("{STRICT_BASE}{preset}\n"));
        assert!(e.contains(fragment), "{preset}: {e}");
    }
}

/// Issue 18: `epsilons = [1e300]` was accepted (only finiteness was checked). ε is bounded by
/// the image's diameter in the attack's norm and the file's ε space.
#[test]
fn budgets_are_bounded_by_the_image() {
    let with = |space: &str, attacks: &str, eps: &str| {
        STRICT_BASE
            .replace(
                "name = \"strict\"",
                &format!("name = \"strict\"\nepsilon_space = \"{space}\""),
            )
            .replace("[\"none\", \"fgsm\", \"pgd-l2\"]", attacks)
            .replace("[\"8/255\"]", &format!("[{eps}]"))
    };
    let linf = "[\"none\", \"pgd-linf\"]";
    let l2 = "[\"none\", \"pgd-l2\"]";
    for (space, attacks, ok, too_big) in [
        ("pixel", linf, "1.0", "1.001"),
        ("pixel", l2, "55.4", "55.5"),
        ("normalized", linf, "4.1", "4.2"),
        ("normalized", l2, "221", "222"),
    ] {
        plan_of(&with(space, attacks, ok)).unwrap_or_else(|e| panic!("{space} {ok}: {e}"));
        let e = error_text(&with(space, attacks, too_big));
        assert!(
            e.contains(&format!("grid.epsilons = {too_big}")) && e.contains("diameter"),
            "{e}"
        );
    }
    let e = error_text(&with("pixel", linf, "1e300"));
    assert!(
        e.contains("grid.epsilons = 1e300: an ℓ∞ budget in pixel space must be at most 1"),
        "{e}"
    );
    // The same bound holds on the wire: a worker refuses such a cell.
    let plan = plan_of(&with("pixel", l2, "2.0")).expect("ℓ2 at 2 is fine");
    let run = &plan.runs[0];
    let mut cells: Vec<_> = plan.cells_of(&run.id).cloned().collect();
    cells.iter_mut().for_each(|c| c.epsilon = 100.0);
    let wire_run = wire::run_to_wire(run, &plan.sweep_id, &cells);
    let e = wire::run_from_wire(&wire_run).expect_err("ε 100 in ℓ2 pixel space");
    assert!(e.to_string().contains("cell.epsilon"), "{e}");
}

/// Issue 18: `plan` read any size; one cap for `plan` and `submit`.
#[test]
fn files_over_the_cap_are_refused_before_parsing() {
    let max = advsweep_core::limits::MAX_SWEEP_FILE_BYTES;
    let padded = |len: usize| format!("{STRICT_BASE}{}", "#".repeat(len - STRICT_BASE.len()));
    plan_of(&padded(max)).expect("at the cap");
    let e = error_text(&padded(max + 1));
    assert!(
        e.contains(&format!(
            "the file is {} bytes, more than the limit of {max} bytes",
            max + 1
        )),
        "{e}"
    );
}

/// AutoAttack's vocabulary: the presets expand, and bad attack tables are refused with an error
/// naming the field, before anything is submitted.
#[test]
fn autoattack_tables_expand_or_name_the_bad_field() {
    let file = |attacks: &str, grid: &str| {
        format!(
            r#"
version = 1
name = "aa"
[data]
source = "synthetic"
{attacks}
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = [{grid}]
epsilons = ["8/255"]
"#
        )
    };
    let good = file(
        r#"
[attacks.quick]
kind = "autoattack"
stages = ["apgd-ce", "square"]
[attacks.l2]
kind = "autoattack"
norm = "l2"
version = "standard"
"#,
        r#""autoattack", "autoattack-rand", "apgd-t", "fab-t", "square", "quick""#,
    );
    let plan = plan_of(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.cells.len(), 6);
    let aa = plan
        .cells
        .iter()
        .find(|c| c.attack_name == "autoattack")
        .expect("an autoattack cell");
    let labels: Vec<String> = aa.attack.stages().iter().map(|s| s.label()).collect();
    assert_eq!(labels, ["apgd-ce", "apgd-t", "fab-t", "square"]);
    let quick = plan
        .cells
        .iter()
        .find(|c| c.attack_name == "quick")
        .expect("quick");
    assert_eq!(quick.attack.stages().len(), 2);

    for (attacks, grid, wanted) in [
        (
            "[attacks.a]\nkind = \"apgd\"\nsteps = 0",
            "\"a\"",
            &["steps", "0"][..],
        ),
        (
            "[attacks.a]\nkind = \"apgd\"\ntargets = 10",
            "\"a\"",
            &["targets", "10"],
        ),
        (
            "[attacks.a]\nkind = \"fab\"\ntargets = 10",
            "\"a\"",
            &["targets", "10"],
        ),
        (
            "[attacks.a]\nkind = \"square\"\nqueries = 0",
            "\"a\"",
            &["queries", "0"],
        ),
        (
            "[attacks.a]\nkind = \"square\"\np_init = 1.5",
            "\"a\"",
            &["p_init"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nversion = \"plus-plus\"",
            "\"a\"",
            &["version", "plus-plus", "standard, plus, rand"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nversion = \"strong\"",
            "\"a\"",
            &["version", "strong"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nstages = [\"apgd-ce\", \"apgd-x\"]",
            "\"a\"",
            &["attacks.a.stages", "apgd-x"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nstages = [\"pgd-linf\"]",
            "\"a\"",
            &["stages", "pgd"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nstages = [\"a\"]",
            "\"a\"",
            &["attacks.a.stages", "cascade"],
        ),
        (
            "[attacks.a]\nkind = \"autoattack\"\nversion = [\"apgd-ce\"]\nstages = [\"square\"]",
            "\"a\"",
            &["either version or stages"],
        ),
        (
            "[attacks.a]\nkind = \"apgd\"\nqueries = 5",
            "\"a\"",
            &["queries"],
        ),
        // An unused preset is checked too.
        (
            "[attacks.a]\nkind = \"fab\"\nsteps = 0",
            "\"autoattack\"",
            &["steps"],
        ),
    ] {
        let text = file(attacks, grid);
        let e = match plan_of(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        for w in wanted {
            assert!(e.contains(w), "{attacks}: `{w}` not in: {e}");
        }
    }
}
