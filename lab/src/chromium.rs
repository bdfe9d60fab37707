//! Headless Chromium for tests of the HTML pages stampede writes: [`Chromium::find`] locates
//! the browser (Debian's `chromium`, or `STAMPEDE_CHROMIUM`), [`Chromium::load`] opens a page
//! the way a user's browser would and returns the DOM after load (`--dump-dom`) and every
//! console line the page produced (`--enable-logging=stderr`: pages without scripts must have
//! none). A test adds its own checks as a script appended to a copy of the page
//! ([`with_script`]); the script's findings come back in the dumped DOM.
//!
//! Like the kernel tests' gate: a test that cannot find Chromium never passes silently. In CI
//! (`CI` true) it fails; elsewhere [`chromium_or_skip`] prints a loud SKIPPED line past
//! libtest's capture and the test returns early.

use std::io::{self, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::gate::env_flag;

/// Names to look for on `PATH`, in order.
const NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// The longest a page load may take (Chromium starts in about 1 s; a loaded CI box is slower).
const LOAD_LIMIT: Duration = Duration::from_secs(90);

/// A Chromium binary.
#[derive(Debug, Clone)]
pub struct Chromium {
    path: PathBuf,
}

/// What loading a page produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The DOM after load, serialized (`--dump-dom`).
    pub dom: String,
    /// Every console line (`CONSOLE` in Chromium's log): messages, uncaught errors.
    pub console: Vec<String>,
}

impl Chromium {
    /// `STAMPEDE_CHROMIUM` if set, else the first of `chromium`, `chromium-browser`,
    /// `google-chrome` on `PATH`.
    pub fn find() -> Option<Chromium> {
        if let Some(p) = std::env::var_os("STAMPEDE_CHROMIUM") {
            return Some(Chromium { path: p.into() });
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| NAMES.map(|n| dir.join(n)))
            .find(|p| p.is_file())
            .map(|path| Chromium { path })
    }

    /// Loads `page` (a file) headless and returns its DOM and console lines. Chromium runs
    /// in its own process group with a fresh profile; if it has not finished within
    /// [`LOAD_LIMIT`], the group is killed and this is an error.
    pub fn load(&self, page: &Path) -> io::Result<Loaded> {
        let dir = scratch_dir()?;
        let out = std::fs::File::create(dir.join("dom.html"))?;
        let err = std::fs::File::create(dir.join("stderr.txt"))?;
        let url = format!("file://{}", std::path::absolute(page)?.display());
        let mut cmd = Command::new(&self.path);
        cmd.args([
            "--headless",
            // Tests run as root in CI, where Chromium's sandbox refuses to start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1280,4000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
        let mut child = crate::ChildGuard::spawn(&mut cmd)?;
        let status = child.wait_exit(LOAD_LIMIT);
        if status.is_none() {
            let pgid = child.0.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group this function created (process_group(0)
            // made the child its leader, and the guard has not reaped it); no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        drop(child);
        let dom = std::fs::read_to_string(dir.join("dom.html"))?;
        let log = std::fs::read_to_string(dir.join("stderr.txt"))?;
        let _ = std::fs::remove_dir_all(&dir);
        match status {
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("chromium did not finish loading {url} within {LOAD_LIMIT:?}"),
            )),
            Some(s) if !s.success() || dom.trim().is_empty() => Err(io::Error::other(format!(
                "chromium failed on {url} ({s}): {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ))),
            Some(_) => Ok(Loaded {
                dom,
                console: log
                    .lines()
                    .filter(|l| l.contains(":CONSOLE"))
                    .map(str::to_owned)
                    .collect(),
            }),
        }
    }
}

/// A copy of `page` with `script` run at the end of its body, written into `dir`.
pub fn with_script(page: &str, script: &str, dir: &Path) -> io::Result<PathBuf> {
    let at = page
        .rfind("</body>")
        .ok_or_else(|| io::Error::other("the page has no </body>"))?;
    let copy = format!("{}<script>{script}</script>{}", &page[..at], &page[at..]);
    let path = dir.join(format!("checked-{}.html", unique()));
    std::fs::write(&path, copy)?;
    Ok(path)
}

/// The browser, or `None` after a loud skip notice when it is missing outside CI. In CI
/// (`CI` true) a missing browser fails the test: CI installs `chromium` (.ci/run).
pub fn chromium_or_skip(test: &str) -> Option<Chromium> {
    if let Some(c) = Chromium::find() {
        return Some(c);
    }
    if env_flag("CI") {
        panic!(
            "browser test {test} cannot run in CI: no chromium on PATH (.ci/run installs \
             Debian's chromium; STAMPEDE_CHROMIUM names another binary)"
        );
    }
    // Past libtest's capture, so the skip shows in `cargo test`'s output.
    let _ = io::stderr().lock().write_all(
        format!(
            "SKIPPED browser test {test}: no chromium on PATH (install Debian's `chromium` or \
             set STAMPEDE_CHROMIUM); it did not run\n"
        )
        .as_bytes(),
    );
    None
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory for one browser run.
fn scratch_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stampede-chromium-{}", unique()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
