//! Runs the PyTorch reference (`models.py` beside this file, and `autoattack.py`, torchattacks'
//! attacks on a BasicNet checkpoint) from the Rust tests, with the Python of `scripts/env.sh`
//! (`ADVSWEEP_TORCH_PYTHON`: torch 2.13, safetensors, numpy, torchattacks).

#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;
use std::process::Command;

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/models.py")
}

/// Runs `models.py ARGS…` and returns its stdout; panics with its stderr when it fails.
pub fn run(args: &[&str]) -> String {
    run_script(&script(), args)
}

/// Runs another script of this folder (e.g. `autoattack.py`) with `ARGS…`; as [`run`].
pub fn run_file(file: &str, args: &[&str]) -> String {
    run_script(&script().with_file_name(file), args)
}

fn run_script(script: &std::path::Path, args: &[&str]) -> String {
    let Some(python) = std::env::var_os("ADVSWEEP_TORCH_PYTHON") else {
        panic!(
            "ADVSWEEP_TORCH_PYTHON is unset: these tests compare against PyTorch; run \
             `source scripts/env.sh` (it installs torch and sets the variable) and retry"
        );
    };
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?} {script:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script:?} {args:?} failed ({:?})\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
