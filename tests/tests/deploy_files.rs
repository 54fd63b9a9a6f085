//! The settings files shipped under deploy/ (examples, Kubernetes ConfigMaps) use only tables
//! and keys the binaries know: a key renamed in `advsweep-settings` must be renamed there too.

use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("deploy/ is readable")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_deploy_settings_file_uses_known_tables_and_keys() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = Vec::new();
    toml_files(&deploy, &mut files);
    assert!(
        files.len() >= 3,
        "expected the example settings under deploy/: {files:?}"
    );
    for file in &files {
        if let Err(e) = advsweep_settings::load::check_file(file) {
            panic!("{e}");
        }
    }
}
