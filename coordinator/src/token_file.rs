//! `stampede token new [FILE]`: a new bearer token for `--token-file`, the secret the
//! coordinator, its agents and the target's control service share
//! (`stampede_proto::token` reads it).
//!
//! Format: 64 lowercase hex digits (256 bits from the kernel's random source, /dev/urandom)
//! and a newline: printable ASCII without spaces, as every token file must be. FILE is created
//! with mode 0600 and never replaced without `--force` (then atomically: a new 0600 file is
//! renamed over the old one, so a reader sees the old token or the new one, never half).
//! Without FILE the token goes to stdout, for a secret store (`kubectl create secret ...
//! --from-file=token=/dev/stdin`); a file made by shell redirection gets the umask's mode.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::scenario::ConfigError;

/// Random bytes in a token: 256 bits, 64 hex digits.
pub const TOKEN_BYTES: usize = 32;

/// Where the randomness comes from: the kernel's CSPRNG (never blocks once seeded at boot).
const RANDOM_SOURCE: &str = "/dev/urandom";

/// `stampede token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random bearer token (64 hex digits) for --token-file: written to FILE
    /// with mode 0600, or to stdout without FILE.
    New(NewArgs),
}

/// `stampede token new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// File to create, mode 0600 (default: print the token to stdout).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace FILE if it exists (whoever holds the old token is refused from then on).
    #[arg(long)]
    pub force: bool,
}

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// FILE exists and `--force` was not given: a usage error (exit 64).
    #[error(transparent)]
    Exists(#[from] ConfigError),
    /// The random source could not be read, or is not the kernel's.
    #[error("reading random bytes from {RANDOM_SOURCE}: {0}")]
    Random(io::Error),
    /// FILE could not be written (its directory missing or not writable): a usage error
    /// (exit 64), as an `--out` that is not writable is.
    #[error("writing token file {path}: {cause}")]
    Write {
        /// The file.
        path: String,
        /// Why (in the message, so not a `source`: said once however it is printed).
        cause: io::Error,
    },
}

/// Runs a `token` command; returns what goes to stdout.
pub fn run(command: &TokenCommand) -> Result<String, TokenFileError> {
    let TokenCommand::New(args) = command;
    let token = generate()?;
    let Some(path) = &args.file else {
        return Ok(format!("{token}\n"));
    };
    write_new(path, &token, args.force)?;
    Ok(format!(
        "new token written to {} (mode 0600): give the same file to --token-file of stampede, \
         every stampede-agent and stampede-target\n",
        path.display()
    ))
}

/// A new token: [`TOKEN_BYTES`] random bytes as lowercase hex.
pub fn generate() -> Result<String, TokenFileError> {
    let mut file = File::open(RANDOM_SOURCE).map_err(TokenFileError::Random)?;
    // A regular file planted at the path would give a predictable token.
    let is_device = file
        .metadata()
        .map_err(TokenFileError::Random)?
        .file_type()
        .is_char_device();
    if !is_device {
        return Err(TokenFileError::Random(io::Error::other(
            "not a character device",
        )));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    file.read_exact(&mut bytes)
        .map_err(TokenFileError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `token` and a newline to a new file `path`, mode 0600. An existing `path` is
/// refused unless `force`; then it is replaced atomically.
pub fn write_new(path: &Path, token: &str, force: bool) -> Result<(), TokenFileError> {
    let failed = |cause: io::Error| TokenFileError::Write {
        path: path.display().to_string(),
        cause,
    };
    let target = if force {
        temp_path(path)
    } else {
        path.to_owned()
    };
    let written = write_0600(&target, token);
    match written {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !force => Err(ConfigError::Invalid {
            name: "token file",
            value: stampede_proto::usage::cut(&path.display().to_string()).into_owned(),
            expected: "a file that does not exist yet (--force replaces it)",
        }
        .into()),
        Err(e) => {
            let _ = std::fs::remove_file(&target);
            Err(failed(e))
        }
        Ok(()) if force => std::fs::rename(&target, path).map_err(|e| {
            let _ = std::fs::remove_file(&target);
            failed(e)
        }),
        Ok(()) => Ok(()),
    }
}

/// Creates `path` (it must not exist), mode exactly 0600 whatever the umask, and writes the
/// token to it, synced.
fn write_0600(path: &Path, token: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()
}

/// A fresh name beside `path` for the replacement file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "token".into(), |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.new.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stampede_proto::token::{Token, loose_mode};

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_new_file_is_0600_read_back_and_never_overwritten_without_force() {
        let dir = std::env::temp_dir().join(format!("stampede-token-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let first = generate().unwrap();
        write_new(&path, &first, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!loose_mode(mode));
        // The reader every binary uses takes it, and it authenticates as itself.
        let token = Token::from_file(&path).unwrap();
        assert_eq!(token.header_value(), format!("Bearer {first}"));

        let second = generate().unwrap();
        let e = write_new(&path, &second, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("token file") && msg.contains("--force"),
            "{msg}"
        );
        assert!(matches!(e, TokenFileError::Exists(_)), "exit 64: {e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{first}\n")
        );

        // --force replaces it, still 0600, even over a loose old file; nothing left beside.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_new(&path, &second, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{second}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // A directory that does not exist: the error names the file.
        let e = write_new(&dir.join("no/such/token"), &second, false).unwrap_err();
        assert!(matches!(e, TokenFileError::Write { .. }), "{e}");
        assert!(e.to_string().contains("no/such/token"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
