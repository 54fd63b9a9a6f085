//! The data a sweep names, checked on this machine before anything starts: `advsweep run`
//! refuses a missing CIFAR-10 or image-folder path (its workers run here, and every run would
//! fail for good minutes later); `plan` and `submit` warn, since a cluster's workers may see
//! paths this machine does not.

use std::collections::BTreeSet;
use std::path::Path;

use advsweep_coordinator::sweep::Plan;
use advsweep_core::DataSource;

/// Where a data source's files are: its layout's test file, in the directory or in the
/// official archive's folder inside it (none: an image folder).
enum Layout {
    Binary {
        test_file: &'static str,
        archive_dir: &'static str,
        files: &'static str,
    },
    ImageFolder,
}

const CIFAR10: Layout = Layout::Binary {
    test_file: "test_batch.bin",
    archive_dir: "cifar-10-batches-bin",
    files: "the CIFAR-10 binary layout: data_batch_1.bin … data_batch_5.bin, test_batch.bin",
};
const CIFAR100: Layout = Layout::Binary {
    test_file: "test.bin",
    archive_dir: "cifar-100-binary",
    files: "the CIFAR-100 binary layout: train.bin, test.bin",
};

/// What is wrong with the plan's local data paths, one line each (empty: all present).
pub fn problems(plan: &Plan) -> Vec<String> {
    let sources: BTreeSet<(u8, String)> = plan
        .runs
        .iter()
        .filter_map(|r| match &r.data.source {
            DataSource::Cifar10Binary { path } => Some((10, path.clone())),
            DataSource::Cifar100Binary { path } => Some((100, path.clone())),
            DataSource::ImageFolder { path } => Some((0, path.clone())),
            DataSource::Synthetic { .. } => None,
        })
        .collect();
    sources
        .into_iter()
        .filter_map(|(kind, path)| {
            let layout = match kind {
                10 => CIFAR10,
                100 => CIFAR100,
                _ => Layout::ImageFolder,
            };
            let dir = Path::new(&path);
            if !dir.is_dir() {
                return Some(format!(
                    "data.path `{path}`: no such directory on this machine (--data-path or \
                     ADVSWEEP_CIFAR10_DIR sets it)"
                ));
            }
            if let Layout::Binary {
                test_file,
                archive_dir,
                files,
            } = layout
                && !dir.join(test_file).is_file()
                && !dir.join(archive_dir).join(test_file).is_file()
            {
                return Some(format!(
                    "data.path `{path}`: no {test_file} there or in {archive_dir}/ ({files})"
                ));
            }
            if matches!(layout, Layout::ImageFolder)
                && !(dir.join("train").is_dir() && dir.join("test").is_dir())
            {
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
        plan_of("cifar10", path)
    }

    fn plan_of(source: &str, path: &str) -> Plan {
        let text = format!(
            "version = 1\nname = \"d\"\n[data]\nsource = \"{source}\"\npath = \"{path}\"\n\
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
        let nested = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&nested).expect("mkdir");
        std::fs::write(nested.join("test_batch.bin"), b"").expect("touch");
        assert!(problems(&plan_with(&dir.path().display().to_string())).is_empty());
        // CIFAR-100 has its own layout, named when it is not there.
        let p = problems(&plan_of("cifar100", &dir.path().display().to_string()));
        assert!(
            p.len() == 1 && p[0].contains("no test.bin there or in cifar-100-binary/"),
            "{p:?}"
        );
        std::fs::write(dir.path().join("test.bin"), b"").expect("touch");
        assert!(problems(&plan_of("cifar100", &dir.path().display().to_string())).is_empty());
    }
}
