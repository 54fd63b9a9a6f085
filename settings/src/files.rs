//! Reading a local file whose size nobody promised: a config file, a token file, a PEM
//! certificate, a sweep file. Every such read goes through [`read_bounded`], because a path is
//! user input too: `/dev/zero`, `/dev/urandom` or a FIFO would otherwise be read until memory
//! runs out, and a multi-gigabyte file would be loaded whole before anything looked at it.
//!
//! Only regular files are read (after following symbolic links), and at most `max` bytes: the
//! size is checked before reading and the read itself stops one byte past `max`, so a file that
//! grows while it is read is refused too.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Largest config, token or PEM file read (a certificate chain is a few KiB; 1 MiB leaves room
/// for a long token list).
pub const MAX_SETTINGS_FILE_BYTES: u64 = 1 << 20;

/// Why a bounded read failed. Its message names no path; callers say which file it was.
#[derive(Debug)]
pub enum ReadError {
    /// Opening or reading failed (missing file, permissions).
    Io(std::io::Error),
    /// A directory, a device (`/dev/zero`), a FIFO or a socket.
    NotRegular(&'static str),
    /// Larger than the cap; `size` is what the file system reported (or at least `max + 1`).
    TooLarge { size: u64, max: u64 },
    /// Not UTF-8 text (from [`read_bounded_text`]).
    NotText,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(kind) => {
                write!(f, "it is {kind}, not a regular file")
            }
            ReadError::TooLarge { size, max } => {
                write!(f, "it is {size} bytes, more than the limit of {max} bytes")
            }
            ReadError::NotText => f.write_str("it is not UTF-8 text"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// What a file that is not a regular file is, in words.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_fifo() {
            return "a pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path`, at most `max` of them.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // Check the kind before opening: opening a FIFO for reading blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    // The path may have been replaced between the two calls: judge what was opened.
    let opened = file.metadata().map_err(ReadError::Io)?;
    if !opened.is_file() {
        return Err(ReadError::NotRegular(kind_of(opened.file_type())));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(opened.len().min(max)).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > max {
        return Err(ReadError::TooLarge { size: read, max });
    }
    Ok(bytes)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, max: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, max)?).map_err(|_| ReadError::NotText)
}

/// The last `max` bytes (or fewer) of the regular file at `path`, as lossy text: for showing
/// the end of a log that may be any size.
pub fn read_tail(path: &Path, max: u64) -> Result<String, ReadError> {
    use std::io::{Seek, SeekFrom};
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(meta.file_type())));
    }
    let mut file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let len = file.metadata().map_err(ReadError::Io)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))
        .map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "hello").expect("write");
        assert_eq!(read_bounded_text(&path, 5).expect("read"), "hello");
        let e = read_bounded(&path, 4).expect_err("over the cap");
        assert_eq!(
            e.to_string(),
            "it is 5 bytes, more than the limit of 4 bytes"
        );
        assert_eq!(read_tail(&path, 3).expect("tail"), "llo");
    }

    #[test]
    fn devices_directories_and_pipes_are_refused_without_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_bounded(dir.path(), 10).expect_err("a directory");
        assert!(e.to_string().contains("a directory"), "{e}");
        #[cfg(unix)]
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let e = read_bounded(Path::new(dev), 10).expect_err(dev);
            assert!(e.to_string().contains("a character device"), "{dev}: {e}");
            assert!(read_tail(Path::new(dev), 10).is_err());
        }
        let e = read_bounded(&dir.path().join("missing"), 10).expect_err("missing");
        assert!(matches!(e, ReadError::Io(_)), "{e}");
    }

    #[test]
    fn invalid_utf8_is_not_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert!(matches!(
            read_bounded_text(&path, 10),
            Err(ReadError::NotText)
        ));
    }
}
