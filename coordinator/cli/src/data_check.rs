//! The data a sweep names, checked on this machine before anything starts: `advsweep run`
//! refuses a missing CIFAR-10 or image-folder path (its workers run here, and every run would
//! fail for good minutes later); `plan` and `submit` warn, since a cluster's workers may see
//! paths this machine does not.

use std::collections::BTreeSet;
use std::path::Path;

use advsweep_coordinator::sweep::Plan;
use advsweep_core::DataSource;

/// The CIFAR-10 binary layout's test file, in the directory or in its `cifar-10-batches-bin/`.
const CIFAR10_TEST_FILE: &str = "test_batch.bin";
const CIFAR10_ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// What is wrong with the plan's local data paths, one line each (empty: all present).
pub fn problems(plan: &Plan) -> Vec<String> {
    let sources: BTreeSet<(bool, String)> = plan
        .runs
        .iter()
        .filter_map(|r| match &r.data.source {
            DataSource::Cifar10Binary { path } => Some((true, path.clone())),
            DataSource::ImageFolder { path } => Some((false, path.clone())),
            DataSource::Synthetic { .. } => None,
        })
        .collect();
    sources
        .into_iter()
        .filter_map(|(cifar, path)| {
            let dir = Path::new(&path);
            if !dir.is_dir() {
                return Some(format!(
                    "data.path `{path}`: no such directory on this machine (--data-path or \
                     ADVSWEEP_CIFAR10_DIR sets it)"
                ));
            }
            if cifar
                && !dir.join(CIFAR10_TEST_FILE).is_file()
                && !dir
                    .join(CIFAR10_ARCHIVE_DIR)
                    .join(CIFAR10_TEST_FILE)
                    .is_file()
            {
                return Some(format!(
                    "data.path `{path}`: no {CIFAR10_TEST_FILE} there or in \
                     {CIFAR10_ARCHIVE_DIR}/ (the CIFAR-10 binary layout: data_batch_1.bin … \
                     data_batch_5.bin, test_batch.bin)"
                ));
            }
            if !cifar && !(dir.join("train").is_dir() && dir.join("test").is_dir()) {
                return Some(format!(
                    "data.path `{path}`: an image folder needs train/<class>/ and test/<class>/"
                ));
            }
            None
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use advsweep_coordinator::sweep::{Overrides, expand, parse_sweep};

    fn plan_with(path: &str) -> Plan {
        let text = format!(
            "version = 1\nname = \"d\"\n[data]\nsource = \"cifar10\"\npath = \"{path}\"\n\
             [grid]\nmodels = [\"basic\"]\ndefenses = [\"standard\"]\nattacks = [\"none\"]\n\
             epsilons = [\"8/255\"]\n"
        );
        let file = parse_sweep(&text, "d.toml").expect("parses");
        expand(&file, &Overrides::default(), "d.toml").expect("expands")
    }

    #[test]
    fn missing_and_misshapen_data_directories_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let p = problems(&plan_with(&missing.display().to_string()));
        assert!(p.len() == 1 && p[0].contains("no such directory"), "{p:?}");
        let p = problems(&plan_with(&dir.path().display().to_string()));
        assert!(p.len() == 1 && p[0].contains("no test_batch.bin"), "{p:?}");
        let nested = dir.path().join(CIFAR10_ARCHIVE_DIR);
        std::fs::create_dir(&nested).expect("mkdir");
        std::fs::write(nested.join(CIFAR10_TEST_FILE), b"").expect("touch");
        assert!(problems(&plan_with(&dir.path().display().to_string())).is_empty());
    }
}
