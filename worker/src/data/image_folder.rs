//! Image folders: `<path>/train/<class>/*` and `<path>/test/<class>/*` (PNG or JPEG).
//!
//! * Classes are the sub-folder names of `train/`, sorted (byte order of the UTF-8 names);
//!   class `i` is label `i`. `test/` must have exactly the same sub-folders, and there must be
//!   2 to [`MAX_CLASSES`] of them (the models get one output per class). Hidden entries
//!   (names starting with `.`) are ignored.
//! * Images are the files of a class folder whose extension is `png`, `jpg` or `jpeg` (any
//!   case), sorted by file name; other files are skipped (and counted in the log). The format
//!   is detected from the file's contents. Every image must be 32×32; any colour type is
//!   converted to 8-bit RGB (grey is replicated, alpha dropped).
//! * Limits (`train_limit`, `eval_limit`, 0 = all) take a class-balanced, deterministic
//!   subset: examples are ordered round-robin over the classes — the first image of every
//!   class, then the second of every class, … (a class that runs out is skipped) — and the
//!   first `limit` of that order are kept, in that order. So every prefix is balanced to within
//!   one image per class wherever the classes are large enough, and a smaller limit is a prefix
//!   of a larger one. Without a limit the whole folder is loaded in the same order.
//! * Only the selected files are read; they are decoded in parallel (scoped threads, one
//!   contiguous share of the list each), straight into the `u8` NCHW buffer.
//!
//! Every structural problem (missing folder, class mismatch, wrong size, undecodable file) is
//! a permanent [`DataError`] naming the path; I/O errors other than "not found" stay
//! retryable.

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// Most classes an image folder may have.
pub const MAX_CLASSES: usize = 1000;

use super::{DataError, HEIGHT, HostSplit, IMAGE_BYTES, WIDTH, apply_limit};

/// Extensions (lower-case) of the files taken as images.
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Most decoding threads.
const MAX_THREADS: usize = 16;
/// Fewest images per thread worth a thread of its own.
const IMAGES_PER_THREAD: usize = 256;

/// Loads `<path>/train` and `<path>/test` with the given limits (0 = all); also returns the
/// class names (label order).
pub fn load(
    path: &Path,
    train_limit: u32,
    eval_limit: u32,
) -> Result<(HostSplit, HostSplit, Vec<String>), DataError> {
    if !path.is_dir() {
        return Err(DataError::not_a_dir(path));
    }
    let train_dir = path.join("train");
    let test_dir = path.join("test");
    for dir in [&train_dir, &test_dir] {
        if !dir.is_dir() {
            return Err(DataError::not_a_dir(dir));
        }
    }
    let classes = class_names(&train_dir)?;
    let test_classes = class_names(&test_dir)?;
    if classes != test_classes {
        return Err(DataError::Invalid(format!(
            "image folder {}: train/ has classes [{}] but test/ has [{}]; they must be the same",
            path.display(),
            classes.join(", "),
            test_classes.join(", ")
        )));
    }
    if !(2..=MAX_CLASSES).contains(&classes.len()) {
        return Err(DataError::Invalid(format!(
            "image folder {} has {} classes ([{}]); a classification data set needs 2..={MAX_CLASSES}",
            path.display(),
            classes.len(),
            classes.join(", ")
        )));
    }
    let train = load_split(&train_dir, &classes, train_limit)?;
    let test = load_split(&test_dir, &classes, eval_limit)?;
    Ok((train, test, classes))
}

/// Sorted names of the non-hidden sub-folders of `dir`.
fn class_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in read_dir(dir)? {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DataError::Invalid(format!(
                "{}: folder name {:?} is not UTF-8",
                dir.display(),
                entry.file_name()
            )));
        };
        if name.starts_with('.') {
            continue;
        }
        // Follows symbolic links, like `is_dir`.
        if entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

/// Sorted image files of one class folder.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    let mut skipped = 0usize;
    for entry in read_dir(dir)? {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if !hidden && is_image && path.is_file() {
            files.push(path);
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        debug!(dir = %dir.display(), skipped, "entries that are not PNG/JPEG files skipped");
    }
    if files.is_empty() {
        return Err(DataError::Invalid(format!(
            "{} holds no PNG or JPEG image",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// The first `limit` (0 = all) examples of the round-robin order over `per_class`.
fn balanced_selection(per_class: &[Vec<PathBuf>], limit: u32) -> Vec<(PathBuf, i64)> {
    let total: usize = per_class.iter().map(Vec::len).sum();
    let wanted = apply_limit(total, limit);
    let longest = per_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(wanted);
    'rounds: for i in 0..longest {
        for (label, files) in per_class.iter().enumerate() {
            if out.len() == wanted {
                break 'rounds;
            }
            if let Some(f) = files.get(i) {
                out.push((f.clone(), label as i64));
            }
        }
    }
    out
}

fn load_split(dir: &Path, classes: &[String], limit: u32) -> Result<HostSplit, DataError> {
    let per_class = classes
        .iter()
        .map(|c| image_files(&dir.join(c)))
        .collect::<Result<Vec<_>, _>>()?;
    let counts: Vec<usize> = per_class.iter().map(Vec::len).collect();
    let selected = balanced_selection(&per_class, limit);
    if limit > 0 && (limit as usize) > selected.len() {
        warn!(
            dir = %dir.display(),
            limit,
            available = selected.len(),
            "limit larger than the folder; using every image"
        );
    }
    let smallest = counts.iter().copied().min().unwrap_or(0);
    let largest = counts.iter().copied().max().unwrap_or(0);
    if largest > 2 * smallest {
        warn!(dir = %dir.display(), ?counts, "class sizes are very unbalanced");
    }
    let mut images = vec![0u8; selected.len() * IMAGE_BYTES];
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, MAX_THREADS)
        .min(selected.len().div_ceil(IMAGES_PER_THREAD))
        .max(1);
    let per_thread = selected.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = images
            .chunks_mut(per_thread * IMAGE_BYTES)
            .zip(selected.chunks(per_thread))
            .map(|(out, files)| {
                scope.spawn(move || -> Result<(), DataError> {
                    for (pixels, (path, _)) in out.chunks_exact_mut(IMAGE_BYTES).zip(files) {
                        decode_into(path, pixels)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_error = None;
        for w in workers {
            let result = w.join().unwrap_or_else(|_| {
                Err(DataError::Invalid(
                    "an image decoding thread panicked".into(),
                ))
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })?;
    Ok(HostSplit {
        images,
        labels: selected.iter().map(|(_, label)| *label).collect(),
    })
}

/// Reads and decodes one image into `pixels` (3072 bytes, CHW).
fn decode_into(path: &Path, pixels: &mut [u8]) -> Result<(), DataError> {
    let bad = |reason: String| DataError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read the header: {e}")))
    };
    let probe = reader()?;
    match probe.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => return Err(bad(format!("is {other:?}, not PNG or JPEG"))),
        None => return Err(bad("is not a PNG or JPEG image".into())),
    }
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| bad(format!("cannot read the size: {e}")))?;
    if i64::from(w) != WIDTH || i64::from(h) != HEIGHT {
        return Err(bad(format!("is {w}×{h}, expected {WIDTH}×{HEIGHT}")));
    }
    let rgb = reader()?
        .decode()
        .map_err(|e| bad(format!("cannot decode: {e}")))?
        .to_rgb8();
    let plane = (WIDTH * HEIGHT) as usize;
    for (i, px) in rgb.pixels().enumerate() {
        for (c, &v) in px.0.iter().enumerate() {
            if let Some(slot) = pixels.get_mut(c * plane + i) {
                *slot = v;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_balanced_and_prefix_stable() {
        let per_class: Vec<Vec<PathBuf>> = (0..3)
            .map(|c| {
                (0..[4, 1, 3][c])
                    .map(|i| PathBuf::from(format!("{c}/{i}")))
                    .collect()
            })
            .collect();
        let all = balanced_selection(&per_class, 0);
        let labels: Vec<i64> = all.iter().map(|(_, l)| *l).collect();
        assert_eq!(labels, vec![0, 1, 2, 0, 2, 0, 2, 0]);
        let five = balanced_selection(&per_class, 5);
        assert_eq!(five[..], all[..5]);
        assert_eq!(balanced_selection(&per_class, 100).len(), 8);
    }
}
