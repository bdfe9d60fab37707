//! The restart at one backlog, step by step: stop the running server (its stop signal, a
//! bounded wait, SIGKILL), wait until its port is free, render the templates, raise
//! `net.core.somaxconn` if asked and needed, start the command with `{backlog}` substituted,
//! then wait until a listener on the port has the kernel's effective backlog for it
//! (sock_diag), failing with the child's exit status and last stderr lines if it dies or
//! never gets there. Blocking code: the control service runs it off the async runtime.

use std::time::{Duration, Instant};

use stampede_proto::sysctl::{self, SOMAXCONN};

use super::child::{self, Child};
use super::template::{Template, substitute};
use super::{SomaxconnMode, SuperviseConfig};
use crate::Error;
use crate::diag::{Diag, ListenerInfo};

/// How often the listener is looked for while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The supervised server and what was done to the namespace for it.
#[derive(Debug)]
pub(crate) struct Supervisor {
    config: SuperviseConfig,
    /// Each template with its text, read once at start.
    templates: Vec<(Template, String)>,
    diag: Diag,
    child: Option<Child>,
    /// somaxconn before supervise changed it (`None`: never changed).
    somaxconn_before: Option<u64>,
    /// Why no server runs: its last restart failed, or it died (said once its output is all
    /// read). `None` while the server started last is up.
    down: Option<String>,
}

/// What a successful start left running.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) backlog: i32,
    pub(crate) backlog_effective: u32,
    pub(crate) somaxconn: u32,
    pub(crate) pid: u32,
}

impl Supervisor {
    /// Reads the templates (an unreadable one is refused; one without `{backlog}` warns).
    pub(crate) fn new(config: SuperviseConfig) -> Result<Supervisor, Error> {
        let templates = config
            .templates
            .iter()
            .map(|t| t.load().map(|text| (t.clone(), text)))
            .collect::<Result<_, _>>()?;
        Ok(Supervisor {
            diag: Diag::open().map_err(Error::io("opening sock_diag netlink"))?,
            config,
            templates,
            child: None,
            somaxconn_before: None,
            down: None,
        })
    }

    /// `Some(why)` when no server is up: it died since it was started, or the last restart
    /// failed (the old server stopped, no new one listening). Never blocks: it runs on the
    /// async runtime, under every Stats call.
    pub(crate) fn dead(&mut self) -> Option<String> {
        if let Some(why) = &self.down {
            return Some(why.clone());
        }
        let child = self.child.as_mut()?;
        let status = child.exited()?;
        let (death, complete) = child.death_now(status);
        let why = format!("the server died after it was started: {death}");
        // Its last stderr lines may still be on their way: kept once they are all read.
        if complete {
            self.down = Some(why.clone());
        }
        Some(why)
    }

    /// Stops the server (if running) and starts it with `backlog`. When this fails no server
    /// runs (the old one was stopped first): [`Supervisor::dead`] says so until a restart
    /// succeeds.
    pub(crate) fn start(&mut self, backlog: i32) -> Result<Started, Error> {
        let started = self.restart(backlog);
        self.down = match &started {
            Ok(_) => None,
            Err(e) => Some(format!(
                "the server is down: its restart at backlog {backlog} failed: {e}"
            )),
        };
        started
    }

    fn restart(&mut self, backlog: i32) -> Result<Started, Error> {
        self.stop()?;
        self.wait_port_free()?;
        for (t, text) in &self.templates {
            t.render(text, backlog).map_err(|e| {
                Error::Server(format!(
                    "rendering template {} into {}: {e}",
                    t.src.display(),
                    t.dst.display()
                ))
            })?;
        }
        let somaxconn = self.somaxconn_for(backlog)?;
        let expected = if backlog < 0 {
            somaxconn
        } else {
            (backlog as u32).min(somaxconn)
        };
        if expected < backlog.max(0) as u32 {
            tracing::warn!(
                backlog,
                somaxconn,
                "somaxconn caps the backlog (--somaxconn keep): the server gets {expected}"
            );
        }
        let (program, args) = self.command(backlog);
        let child = Child::spawn(&program, &args)
            .map_err(|e| Error::Server(format!("starting {program}: {e}")))?;
        let pid = child.pid();
        self.child = Some(child);
        let effective = self.wait_listening(expected)?;
        tracing::info!(
            pid,
            backlog,
            backlog_effective = effective,
            somaxconn,
            "server started"
        );
        Ok(Started {
            backlog,
            backlog_effective: effective,
            somaxconn,
            pid,
        })
    }

    /// Stops the running server, if any: the stop signal, a bounded wait, then SIGKILL.
    pub(crate) fn stop(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            let pid = child.pid();
            let status = child
                .stop(self.config.stop_signal, self.config.stop_timeout)
                .map_err(Error::io("stopping the server"))?;
            tracing::info!(pid, status = %child::describe(status), "server stopped");
        }
        Ok(())
    }

    /// Stops the server and puts somaxconn back as it was.
    pub(crate) fn shutdown(&mut self) -> Result<(), Error> {
        let stopped = self.stop();
        if let Some(before) = self.somaxconn_before.take() {
            match sysctl::write(SOMAXCONN, &before.to_string()) {
                Ok(()) => tracing::info!(somaxconn = before, "net.core.somaxconn restored"),
                Err(e) => tracing::error!(cause = %e, "could not restore net.core.somaxconn"),
            }
        }
        stopped
    }

    /// The program and its arguments with `{backlog}` substituted.
    fn command(&self, backlog: i32) -> (String, Vec<String>) {
        let mut words = self.config.command.iter().map(|w| substitute(w, backlog));
        let program = words.next().unwrap_or_default();
        (program, words.collect())
    }

    /// somaxconn as the server will find it: raised to `backlog` first when asked and needed.
    fn somaxconn_for(&mut self, backlog: i32) -> Result<u32, Error> {
        let now = sysctl::read_u64(SOMAXCONN).map_err(Error::io("reading somaxconn"))?;
        if self.config.somaxconn != SomaxconnMode::Raise || backlog as i64 <= now as i64 {
            return Ok(now as u32);
        }
        sysctl::write(SOMAXCONN, &backlog.to_string()).map_err(|e| {
            Error::Server(format!(
                "cannot raise net.core.somaxconn from {now} to {backlog} for this backlog: {e} \
                 (run supervise as root, or give --somaxconn keep to measure under the cap)"
            ))
        })?;
        self.somaxconn_before.get_or_insert(now);
        tracing::info!(from = now, to = backlog, "net.core.somaxconn raised");
        Ok(backlog as u32)
    }

    fn matching(&mut self) -> Result<Vec<ListenerInfo>, Error> {
        let (port, addr) = (self.config.port, self.config.addr);
        Ok(self
            .diag
            .listeners()
            .map_err(Error::io("dumping listeners"))?
            .into_iter()
            .filter(|l| l.addr.port() == port && addr.is_none_or(|a| a == l.addr.ip()))
            .collect())
    }

    /// Waits (bounded) until no listener holds the port: the stopped server's socket is gone.
    fn wait_port_free(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.listen_timeout;
        loop {
            let found = self.matching()?;
            if found.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Server(format!(
                    "port {} is still listened on ({}) {:?} after the server stopped: another \
                     process holds it",
                    self.config.port, found[0].addr, self.config.listen_timeout
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (bounded) for a listener on the port with effective backlog `expected`.
    fn wait_listening(&mut self, expected: u32) -> Result<u32, Error> {
        let deadline = Instant::now() + self.config.listen_timeout;
        loop {
            let found = self.matching()?;
            if found.iter().any(|l| l.backlog == expected) {
                return Ok(expected);
            }
            let child = self.child.as_mut().expect("started above");
            if let Some(status) = child.exited() {
                let why = child.death(status);
                self.child = None;
                return Err(Error::Server(format!(
                    "the server never listened on port {}: {why}",
                    self.config.port
                )));
            }
            if Instant::now() >= deadline {
                let seen = match found.first() {
                    Some(l) => format!(
                        "its listener {} has effective backlog {}, expected {expected}",
                        l.addr, l.backlog
                    ),
                    None => "nothing listens there".to_owned(),
                };
                let tail = child.tail();
                let _ = self.stop();
                return Err(Error::Server(format!(
                    "the server did not listen on port {} with backlog {expected} within {:?}: \
                     {seen}{tail}",
                    self.config.port, self.config.listen_timeout
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Supervisor {
    /// somaxconn is put back however supervise ends (the child kills itself on drop).
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
