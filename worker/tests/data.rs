//! Image-folder data sets, written with the `image` crate into a temporary directory.

use std::path::Path;

use advsweep_core::{DataSource, DataSpec};
use advsweep_worker::data::image_folder;
use advsweep_worker::data::{DataError, Dataset, IMAGE_BYTES};
use advsweep_worker::error::is_retryable;
use image::{ImageFormat, Rgb, RgbImage};
use tch::Device;

const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Image `i` of class `c`: red = 20·c + i, green = 7·x, blue = 5·y (exact in PNG).
fn picture(c: usize, i: usize, size: u32) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        Rgb([(20 * c + i) as u8, (7 * x) as u8, (5 * y) as u8])
    })
}

/// `per_class[c]` images for class `c` in `split`; PNG, except that every third image of the
/// training split is a JPEG (named `.jpg`) and the odd classes of the test split use `.JPEG`.
fn write_split(root: &Path, split: &str, per_class: &[usize]) -> anyhow::Result<()> {
    for (c, name) in CLASSES.iter().enumerate() {
        let dir = root.join(split).join(name);
        std::fs::create_dir_all(&dir)?;
        for i in 0..per_class[c] {
            let img = picture(c, i, 32);
            if split == "train" && i % 3 == 2 {
                img.save_with_format(dir.join(format!("img{i:03}.jpg")), ImageFormat::Jpeg)?;
            } else if split == "test" && c % 2 == 1 {
                img.save_with_format(dir.join(format!("img{i:03}.JPEG")), ImageFormat::Jpeg)?;
            } else {
                img.save_with_format(dir.join(format!("img{i:03}.png")), ImageFormat::Png)?;
            }
        }
    }
    Ok(())
}

fn fixture() -> anyhow::Result<tempfile::TempDir> {
    let root = tempfile::tempdir()?;
    // Class 0 has 6 training images, class 9 only 2, the others 4.
    let mut train = [4usize; 10];
    train[0] = 6;
    train[9] = 2;
    write_split(root.path(), "train", &train)?;
    write_split(root.path(), "test", &[3; 10])?;
    // Files that are not images are skipped.
    std::fs::write(root.path().join("train/cat/notes.txt"), "not an image")?;
    std::fs::write(
        root.path().join("train/cat/.hidden.png"),
        "not an image either",
    )?;
    std::fs::create_dir_all(root.path().join("test/.cache"))?;
    Ok(root)
}

fn pixel(split: &advsweep_worker::data::HostSplit, n: usize, c: usize, y: usize, x: usize) -> u8 {
    split.images[n * IMAGE_BYTES + c * 1024 + y * 32 + x]
}

#[test]
fn loads_labels_and_pixels_in_class_balanced_order() -> anyhow::Result<()> {
    let root = fixture()?;
    let (train, test, classes) = image_folder::load(root.path(), 0, 0)?;
    assert_eq!(classes, CLASSES);
    assert_eq!(train.len(), 6 + 2 + 8 * 4);
    assert_eq!(test.len(), 30);
    // Round-robin over the classes: the first image of each class, then the second, …
    assert_eq!(train.labels[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(train.labels[20..29], [0, 1, 2, 3, 4, 5, 6, 7, 8]); // class 9 ran out
    assert_eq!(train.labels[38..], [0, 0]);
    // Example 13 is image 1 of class 3, a PNG: exact pixels, planes in R, G, B order.
    assert_eq!(pixel(&train, 13, 0, 0, 0), 61);
    assert_eq!(pixel(&train, 13, 1, 4, 9), 63);
    assert_eq!(pixel(&train, 13, 2, 31, 2), 155);
    // Example 23 is image 2 of class 3, a JPEG: close to its pixels.
    assert_eq!(train.labels[23], 3);
    for (c, y, x, expected) in [(0, 5, 5, 62i32), (1, 10, 20, 140), (2, 30, 3, 150)] {
        let v = i32::from(pixel(&train, 23, c, y, x));
        assert!((v - expected).abs() <= 12, "channel {c}: {v} vs {expected}");
    }

    // A limit takes a balanced prefix: 25 = 3 of the first five classes, 2 of the others.
    let (limited, small_test, _) = image_folder::load(root.path(), 25, 10)?;
    assert_eq!(limited.labels[..], train.labels[..25]);
    assert_eq!(limited.images[..], train.images[..25 * IMAGE_BYTES]);
    let mut counts = [0; 10];
    limited.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    assert_eq!(small_test.labels, (0..10).collect::<Vec<i64>>());

    // Through Dataset::load, on the device as bytes.
    let spec = DataSpec {
        source: DataSource::ImageFolder {
            path: root.path().display().to_string(),
        },
        eval_limit: 20,
        train_limit: 0,
        shard: None,
    };
    let ds = Dataset::load(&spec, Device::Cpu)?;
    assert_eq!(ds.train_x.size(), vec![40, 3, 32, 32]);
    assert_eq!(ds.train_x.kind(), tch::Kind::Uint8);
    assert_eq!(ds.test_len(), 20);
    assert_eq!(
        i64::try_from(ds.train_x.f_get(13)?.f_get(2)?.f_get(31)?.f_get(2)?)?,
        155
    );
    assert!(ds.description.contains("airplane"), "{}", ds.description);
    Ok(())
}

fn load_err(root: &Path) -> anyhow::Error {
    let spec = DataSpec {
        source: DataSource::ImageFolder {
            path: root.display().to_string(),
        },
        eval_limit: 0,
        train_limit: 0,
        shard: None,
    };
    Dataset::load(&spec, Device::Cpu)
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("expected an error"))
}

#[test]
fn bad_folders_are_permanent_errors_that_say_why() -> anyhow::Result<()> {
    // A wrong-size image, named.
    let root = fixture()?;
    let bad = root.path().join("train/dog/img001.png");
    picture(5, 1, 28).save_with_format(&bad, ImageFormat::Png)?;
    let err = load_err(root.path());
    let text = format!("{err:#}");
    assert!(
        text.contains("img001.png") && text.contains("28×28") && text.contains("32×32"),
        "{text}"
    );
    assert!(!is_retryable(&err));

    // A file with an image extension that is not an image.
    let root = fixture()?;
    std::fs::write(root.path().join("test/ship/img000.png"), "garbage")?;
    let text = format!("{:#}", load_err(root.path()));
    assert!(text.contains("test/ship/img000.png"), "{text}");

    // A missing test folder.
    let root = fixture()?;
    std::fs::remove_dir_all(root.path().join("test"))?;
    let err = image_folder::load(root.path(), 0, 0).err();
    assert!(
        matches!(&err, Some(DataError::DirMissing { path }) if path.ends_with("test")),
        "{err:?}"
    );
    assert!(!is_retryable(&load_err(root.path())));

    // Class sets that differ; any number of classes from 2 (the models get one output each),
    // but not one.
    let root = fixture()?;
    std::fs::rename(root.path().join("test/frog"), root.path().join("test/toad"))?;
    let text = load_err(root.path()).to_string();
    assert!(text.contains("frog") && text.contains("toad"), "{text}");
    let root = fixture()?;
    for split in ["train", "test"] {
        std::fs::remove_dir_all(root.path().join(split).join("truck"))?;
    }
    let (_, _, classes) = image_folder::load(root.path(), 0, 0)?;
    assert_eq!(classes.len(), 9);
    for split in ["train", "test"] {
        for entry in std::fs::read_dir(root.path().join(split))? {
            let entry = entry?;
            if entry.file_name() != "airplane" {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
    }
    let text = load_err(root.path()).to_string();
    assert!(
        text.contains("1 classes") && text.contains("2..=1000"),
        "{text}"
    );

    // An empty class folder.
    let root = fixture()?;
    let horse = root.path().join("train/horse");
    std::fs::remove_dir_all(&horse)?;
    std::fs::create_dir(&horse)?;
    let text = load_err(root.path()).to_string();
    assert!(
        text.contains("horse") && text.contains("no PNG or JPEG"),
        "{text}"
    );

    // No folder at all.
    let text = load_err(Path::new("/definitely/not/here")).to_string();
    assert!(text.contains("/definitely/not/here"), "{text}");
    Ok(())
}
