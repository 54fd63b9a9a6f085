//! The built binary runs on its own: libtorch is found through the embedded rpath, without
//! `LD_LIBRARY_PATH`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_advsweep-worker");

#[test]
fn self_check_runs_without_ld_library_path() {
    let out = Command::new(BIN)
        .args(["--self-check", "--device", "cpu", "--threads", "1"])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("ADVSWEEP_COORDINATOR")
        .output()
        .expect("failed to start advsweep-worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.contains("ok"), "stdout: {stdout}");
    assert!(stdout.contains("cpu"), "stdout: {stdout}");
}

#[test]
fn the_binary_embeds_a_runpath_to_libtorch() {
    let Ok(out) = Command::new("readelf").args(["-d", BIN]).output() else {
        eprintln!("readelf not available; skipping the RUNPATH check");
        return;
    };
    if !out.status.success() {
        eprintln!("readelf failed; skipping the RUNPATH check");
        return;
    }
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .collect();
    assert!(!paths.is_empty(), "no RUNPATH/RPATH in:\n{dynamic}");
    // The path must point at a directory that really holds libtorch.
    let holds_libtorch = paths.iter().any(|line| {
        line.split(['[', ']', ':'])
            .map(str::trim)
            .any(|dir| std::path::Path::new(dir).join("libtorch_cpu.so").exists())
    });
    assert!(
        holds_libtorch,
        "no RUNPATH entry holds libtorch_cpu.so: {paths:?}"
    );
    assert!(
        dynamic.contains("libtorch"),
        "libtorch is not NEEDED:\n{dynamic}"
    );
    // A CUDA build of libtorch must stay linked even though no symbol of it is referenced
    // directly (the default --as-needed link would drop it and CUDA would silently vanish).
    let cuda_available = paths.iter().any(|line| {
        line.split(['[', ']', ':'])
            .map(str::trim)
            .any(|dir| std::path::Path::new(dir).join("libtorch_cuda.so").exists())
    });
    if cuda_available {
        assert!(
            dynamic.contains("[libtorch_cuda.so]"),
            "libtorch_cuda.so exists but is not NEEDED:\n{dynamic}"
        );
    }
}

#[test]
fn version_and_help_work() {
    let out = Command::new(BIN)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("failed to start advsweep-worker");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");

    let out = Command::new(BIN)
        .arg("--help")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("failed to start advsweep-worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--coordinator",
        "--device",
        "--threads",
        "--exit-when-idle",
        "--self-check",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
}

#[test]
fn cuda_on_a_cpu_machine_fails_cleanly_or_works() {
    let out = Command::new(BIN)
        .args(["--self-check", "--device", "cuda"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("failed to start advsweep-worker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(
            stdout.contains("cuda:0") && stdout.contains("ok"),
            "{stdout}"
        );
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("CUDA"), "{stderr}");
    }
}
