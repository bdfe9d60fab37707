//! Files a person names (a scenario, a token file): read whole, but only regular files and
//! only up to a bound, so a wrong path is refused in one line instead of filling memory
//! (`stampede run /dev/zero` once grew to 23.8 GB) or blocking forever (a FIFO).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file could not be read; the caller's message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A directory, device, FIFO or socket.
    #[error("not a regular file but {0}")]
    NotAFile(&'static str),
    /// Larger than the bound.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The bound, bytes.
        max: u64,
    },
}

/// A file's contents with its metadata (for permission checks).
#[derive(Debug)]
pub struct SmallFile {
    /// The contents, at most the bound given to [`read_bounded`].
    pub bytes: Vec<u8>,
    /// The open file's metadata (`fstat`): what was read is what was checked.
    pub metadata: Metadata,
}

/// Reads `path` whole if it is a regular file of at most `max` bytes. The file is opened
/// non-blocking (so a FIFO cannot hang the open), then checked through the open descriptor,
/// then read with the bound enforced on the bytes themselves (a file growing meanwhile is
/// still refused).
pub fn read_bounded(path: &Path, max: u64) -> Result<SmallFile, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotAFile(if kind.is_dir() {
            "a directory"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something else"
        }));
    }
    if metadata.len() > max {
        return Err(ReadError::TooLarge { max });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    File::take(file, max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(SmallFile { bytes, metadata })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn reads_small_regular_files_only() {
        let dir = std::env::temp_dir().join(format!("stampede-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        std::fs::write(&ok, b"agents = 2\n").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o640)).unwrap();
        let f = read_bounded(&ok, 64).unwrap();
        assert_eq!(f.bytes, b"agents = 2\n");
        assert_eq!(f.metadata.permissions().mode() & 0o777, 0o640);
        let e = read_bounded(&ok, 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { max: 4 }), "{e}");
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (dir.as_path(), "a directory"),
        ] {
            let e = read_bounded(path, 1 << 20).unwrap_err().to_string();
            assert_eq!(e, format!("not a regular file but {kind}"));
        }
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, 64).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = read_bounded(&dir.join("missing"), 64).unwrap_err();
        assert!(matches!(e, ReadError::Io(ref io) if io.kind() == io::ErrorKind::NotFound));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
