//! Writing result files: an output directory whose errors name the path, and atomic JSON
//! (`report.json`, `sweep.json`, the target's `--stats-json`), so a script that watches for a
//! file never reads half of one.
//!
//! Nothing a run measured is lost to a bad path: [`OutDir::prepare`] proves the directory
//! writable before anything fires, and [`OutDir::fallback`] gives results that still fail to
//! be written a named place of their own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Writes `value` as pretty JSON to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over the target, so a reader never sees half a file.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes `contents` to `path` atomically (temporary file, sync, rename); errors name the path.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// An output directory for report files: created on demand; every file is written
/// atomically and errors name the path.
#[derive(Debug, Clone)]
pub struct OutDir(PathBuf);

impl OutDir {
    /// Creates `dir` (and its parents) if needed.
    pub fn create(dir: &Path) -> io::Result<OutDir> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
        Ok(OutDir(dir.to_owned()))
    }

    /// Creates `dir` if needed and proves it writable: a probe file is created, written,
    /// synced and removed. Called before a run starts, so an unusable `--out` is refused at
    /// once instead of after the run.
    pub fn prepare(dir: &Path) -> io::Result<OutDir> {
        let out = OutDir::create(dir)?;
        let probe = dir.join(format!(".stampede-probe.{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"probe")?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        result
            .map_err(|e| io::Error::new(e.kind(), format!("writing in {}: {e}", dir.display())))?;
        Ok(out)
    }

    /// A new directory for results that could not be written where asked:
    /// `stampede-NAME` under the system's temporary directory (`$TMPDIR`, else `/tmp`), with
    /// a number added if that exists. Never an existing directory, so nothing is overwritten.
    pub fn fallback(name: &str) -> io::Result<OutDir> {
        let base = std::env::temp_dir();
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let mut last = None;
        for n in 0..100u32 {
            let dir = match n {
                0 => base.join(format!("stampede-{name}")),
                n => base.join(format!("stampede-{name}-{n}")),
            };
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(OutDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", dir.display()),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free fallback directory")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` as JSON.
    pub fn json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        write_json_atomic(&self.0.join(name), value)
    }

    /// Writes `name`.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> io::Result<()> {
        write_atomic(&self.0.join(name), contents.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("stampede-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        std::fs::write(&path, "old contents that are longer than the new ones").unwrap();
        write_json_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temp file left"
        );
        let err = write_json_atomic(&dir.join("no/such/dir/x.json"), &1).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
        let out = OutDir::create(&dir.join("out")).unwrap();
        out.file("a.txt", "x").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("out/a.txt")).unwrap(), "x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prepare_proves_the_directory_writable() {
        let dir = std::env::temp_dir().join(format!("stampede-prepare-{}", std::process::id()));
        let out = OutDir::prepare(&dir.join("a/b")).unwrap();
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "probe left"
        );
        // Under a regular file no directory can be made; /proc refuses new files.
        std::fs::write(dir.join("file"), "x").unwrap();
        for bad in [dir.join("file/out"), "/proc/stampede-out".into()] {
            let e = OutDir::prepare(&bad).unwrap_err().to_string();
            assert!(e.contains(&bad.display().to_string()), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fallbacks_are_new_directories() {
        let name = format!("fallback-test-{}/..", std::process::id());
        let a = OutDir::fallback(&name).unwrap();
        let b = OutDir::fallback(&name).unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().starts_with(std::env::temp_dir()), "{:?}", a.path());
        assert!(!a.path().to_string_lossy().contains(".."), "{:?}", a.path());
        std::fs::remove_dir(a.path()).unwrap();
        std::fs::remove_dir(b.path()).unwrap();
    }
}
