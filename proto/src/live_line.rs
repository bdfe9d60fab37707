//! A live status line on a terminal for the binaries without a progress bar library
//! (`stampede-agent fire`, `stampede-target`): one line redrawn in place (`\r`, the text,
//! erase to the end of the line). While it is drawn it is the process's live line
//! ([`logging::set_live_line`]), so a log line is written inside its suspend: the line
//! erased, the log line written whole, the line drawn again; a log line never tears it.
//! [`LiveLine::stderr`] draws only when stderr is a terminal and `--quiet` was not given;
//! elsewhere it is off (draws nothing) and the callers keep to plain log lines (or none).

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};

use crate::logging;

/// Moves to the start of the line and erases it.
const ERASE: &str = "\r\x1b[K";

/// The line's text and where it is drawn, behind one lock: a redraw and a log line's
/// suspend never run at once.
struct Screen {
    text: String,
    out: Box<dyn Write + Send>,
    /// The terminal's width now, if known: a longer line would wrap, and erasing the last
    /// row would leave the rows above it behind.
    width: fn() -> Option<usize>,
}

impl Screen {
    /// Writes `bytes` in one piece (a terminal sees whole control sequences).
    fn put(&mut self, bytes: &str) {
        let _ = self.out.write_all(bytes.as_bytes());
        let _ = self.out.flush();
    }

    fn draw(&mut self) {
        if !self.text.is_empty() {
            let line = format!("\r{}\x1b[K", self.text);
            self.put(&line);
        }
    }
}

/// A live status line; erased (or, with [`LiveLine::keep`], left as the last line) when done.
pub struct LiveLine {
    /// `None`: off, nothing drawn.
    screen: Option<Arc<Mutex<Screen>>>,
    /// Whether log lines go through this line's suspend (only the process's stderr line).
    registered: bool,
}

impl LiveLine {
    /// A live line on stderr when it is a terminal and not `--quiet`; off otherwise.
    pub fn stderr() -> LiveLine {
        if !std::io::stderr().is_terminal() || logging::quiet() {
            return LiveLine {
                screen: None,
                registered: false,
            };
        }
        let mut line = LiveLine::to(std::io::stderr());
        if let Some(screen) = &line.screen {
            lock(screen).width = stderr_width;
        }
        if let Some(screen) = line.screen.clone() {
            logging::set_live_line(Some(Arc::new(move |write: &mut dyn FnMut()| {
                suspend(&screen, write)
            })));
            line.registered = true;
        }
        line
    }

    /// A live line drawn on `out`, not the process's live line (tests).
    fn to(out: impl Write + Send + 'static) -> LiveLine {
        LiveLine {
            screen: Some(Arc::new(Mutex::new(Screen {
                text: String::new(),
                out: Box::new(out),
                width: || None,
            }))),
            registered: false,
        }
    }

    /// Whether it draws (stderr is a terminal, not `--quiet`): when not, callers that want
    /// progress off a terminal write log lines instead.
    pub fn is_on(&self) -> bool {
        self.screen.is_some()
    }

    /// Draws `text` in place of the line's last text (off: nothing).
    pub fn set(&self, text: &str) {
        let Some(screen) = &self.screen else {
            return;
        };
        let mut screen = lock(screen);
        screen.text.clear();
        // One line: a newline in the text would leave a torn copy above, and so would a
        // line wider than the terminal (cut one short of the width: no wrap at the edge).
        let fits = (screen.width)().map_or(usize::MAX, |w| w.saturating_sub(1));
        let shown = text.chars().filter(|c| !c.is_control()).take(fits);
        screen.text.extend(shown);
        screen.draw();
    }

    /// Runs `write` (a log line's write) with the line erased, then draws it again.
    pub fn suspend(&self, write: &mut dyn FnMut()) {
        match &self.screen {
            Some(screen) => suspend(screen, write),
            None => write(),
        }
    }

    /// Ends the line, leaving its last text on the terminal as a finished line.
    pub fn keep(mut self) {
        self.end(true);
    }

    fn end(&mut self, keep: bool) {
        if self.registered {
            logging::set_live_line(None);
            self.registered = false;
        }
        let Some(screen) = &self.screen else {
            return;
        };
        let mut screen = lock(screen);
        if screen.text.is_empty() {
            return;
        }
        screen.put(if keep { "\n" } else { ERASE });
        screen.text.clear();
    }
}

impl Drop for LiveLine {
    /// Erases the line (unless [`LiveLine::keep`] ended it) and stops taking log lines.
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Columns of the terminal on stderr, if it says.
fn stderr_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into `ws`, which outlives the call; on any
    // error nothing is read from it.
    let ws = unsafe {
        let mut ws = std::mem::zeroed::<libc::winsize>();
        (libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) == 0).then_some(ws)
    }?;
    (ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

fn lock(screen: &Mutex<Screen>) -> std::sync::MutexGuard<'_, Screen> {
    screen.lock().unwrap_or_else(|p| p.into_inner())
}

fn suspend(screen: &Mutex<Screen>, write: &mut dyn FnMut()) {
    let mut screen = lock(screen);
    let drawn = !screen.text.is_empty();
    if drawn {
        screen.put(ERASE);
    }
    write();
    if drawn {
        screen.draw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What was written, by the line and the log alike, in order.
    #[derive(Clone, Default)]
    struct Tty(Arc<Mutex<Vec<u8>>>);

    impl Write for Tty {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Tty {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A log line while the line is drawn: erased first, the log line whole, drawn again;
    /// with nothing drawn the log line goes alone; `keep` ends the last text with a newline,
    /// dropping erases it.
    #[test]
    fn a_log_line_erases_and_redraws_the_line() {
        let tty = Tty::default();
        let line = LiveLine::to(tty.clone());
        let mut log = tty.clone();
        line.suspend(&mut || log.write_all(b"INFO before\n").unwrap());
        line.set("1.0s: 5/10 attempts classified");
        line.suspend(&mut || log.write_all(b"WARN slow\n").unwrap());
        line.set("2.0s: 10/10\nattempts");
        line.keep();
        assert_eq!(
            tty.text(),
            "INFO before\n\
             \r1.0s: 5/10 attempts classified\x1b[K\
             \r\x1b[KWARN slow\n\
             \r1.0s: 5/10 attempts classified\x1b[K\
             \r2.0s: 10/10attempts\x1b[K\n"
        );
        let tty = Tty::default();
        let line = LiveLine::to(tty.clone());
        line.set("listening");
        drop(line);
        assert_eq!(tty.text(), "\rlistening\x1b[K\r\x1b[K");
    }

    /// A line wider than the terminal would wrap, and its erase would leave the rows above
    /// behind: it is cut one column short of the width.
    #[test]
    fn a_wide_line_is_cut_to_the_terminal() {
        let tty = Tty::default();
        let line = LiveLine::to(tty.clone());
        if let Some(screen) = &line.screen {
            lock(screen).width = || Some(10);
        }
        line.set("accepted 1234 queue 5 of 4097");
        line.keep();
        assert_eq!(tty.text(), "\raccepted \x1b[K\n");
    }

    /// Redraws from one thread and log lines from others, at once: every log line comes
    /// out whole, at the start of a freshly erased line (never in the middle of the live
    /// line's text), and the live line is drawn again after each.
    #[test]
    fn concurrent_log_lines_never_tear_the_line() {
        let tty = Tty::default();
        let line = Arc::new(LiveLine::to(tty.clone()));
        let loggers: Vec<_> = (0..4)
            .map(|t| {
                let (line, tty) = (line.clone(), tty.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let mut out = tty.clone();
                        let text = format!("LOG {t}-{i}\n");
                        line.suspend(&mut || {
                            // In pieces, as a formatter might write.
                            for piece in text.as_bytes().chunks(3) {
                                out.write_all(piece).unwrap();
                            }
                        });
                    }
                })
            })
            .collect();
        for i in 0..2000 {
            line.set(&format!("{i} attempts classified"));
        }
        for t in loggers {
            t.join().unwrap();
        }
        let text = tty.text();
        assert_eq!(text.matches("LOG ").count(), 800, "every log line written");
        for (at, _) in text.match_indices("LOG ") {
            let whole = &text[at..];
            let end = whole.find('\n').expect("a log line ends with its newline");
            let body = &whole[4..end];
            assert!(
                body.split_once('-')
                    .is_some_and(|(t, i)| t.parse::<u8>().is_ok() && i.parse::<u16>().is_ok()),
                "a log line torn: {:?}",
                &whole[..end]
            );
            let before = &text[..at];
            assert!(
                before.is_empty() || before.ends_with('\n') || before.ends_with(ERASE),
                "a log line written into the live line: {:?}",
                &before[before.len().saturating_sub(40)..]
            );
            let after = &whole[end + 1..];
            assert!(
                after.is_empty() || after.starts_with('\r') || after.starts_with("LOG "),
                "{:?}",
                &after[..after.len().min(40)]
            );
        }
    }
}
