//! The run's interval results as they came, appended to a file (beside `report.hlog`, or in
//! the temporary directory) and read back only for agents lost before their final result,
//! which count with the intervals they delivered. So neither memory nor CPU goes to them
//! while the run goes: one buffered append each (a finished agent's final result supersedes
//! its intervals). The file is removed when the run's log is finished or dropped.
//!
//! Record: agent id length (u32, little-endian), the id, message length (u32), the
//! `IntervalResult` as protobuf.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use prost::Message as _;
use stampede_proto::pb;

/// The spool file being appended to.
#[derive(Debug)]
pub(super) struct Spool {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Why appending stopped, if it did.
    error: Option<String>,
}

impl Spool {
    /// Creates the file at `path` (an error is kept for [`Spool::read`] and logged).
    pub(super) fn create(path: PathBuf) -> Spool {
        let (file, error) = match super::writer::create_new(&path) {
            Ok(f) => (Some(BufWriter::new(f)), None),
            Err(e) => (None, Some(format!("creating {}: {e}", path.display()))),
        };
        if let Some(e) = &error {
            tracing::warn!(cause = %e, "lost agents' intervals will not be counted");
        }
        Spool { path, file, error }
    }

    /// Appends one of `agent`'s interval results.
    pub(super) fn append(&mut self, agent: &str, r: &pb::IntervalResult) {
        let Some(file) = &mut self.file else { return };
        let msg = r.encode_to_vec();
        let written = (|| {
            file.write_all(&(agent.len() as u32).to_le_bytes())?;
            file.write_all(agent.as_bytes())?;
            file.write_all(&(msg.len() as u32).to_le_bytes())?;
            file.write_all(&msg)
        })();
        if let Err(e) = written {
            let e = format!("writing {}: {e}", self.path.display());
            tracing::warn!(cause = %e, "lost agents' intervals will not be counted");
            self.error = Some(e);
            self.file = None;
        }
    }

    /// The interval results of `agents`, each agent's in the order they came.
    pub(super) fn read(
        &mut self,
        agents: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Vec<pb::IntervalResult>>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut out = BTreeMap::new();
        if agents.is_empty() {
            return Ok(out);
        }
        let bad = |e: String| format!("reading {}: {e}", self.path.display());
        if let Some(file) = &mut self.file {
            file.flush().map_err(|e| bad(e.to_string()))?;
        }
        let mut reader = BufReader::new(File::open(&self.path).map_err(|e| bad(e.to_string()))?);
        // Bounded by the file, which only this process writes.
        while let Some(agent) = read_part(&mut reader).map_err(|e| bad(e.to_string()))? {
            let msg = read_part(&mut reader)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("a record cut short".into()))?;
            let agent = String::from_utf8(agent).map_err(|e| bad(e.to_string()))?;
            if agents.contains(&agent) {
                let r =
                    pb::IntervalResult::decode(msg.as_slice()).map_err(|e| bad(e.to_string()))?;
                out.entry(agent).or_insert_with(Vec::new).push(r);
            }
        }
        Ok(out)
    }
}

/// Longest part read back: 64 MiB.
const MAX_PART: usize = 64 << 20;

/// One length-prefixed part; `None` at the end of the file.
fn read_part(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    // Bounded: a part is an agent id or one IntervalResult (under the gRPC message limit).
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PART {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a record of {len} bytes (at most {MAX_PART}): not a spool of ours"),
        ));
    }
    let mut part = vec![0u8; len];
    reader.read_exact(&mut part)?;
    Ok(Some(part))
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes in comes back, per agent and in order, only for the agents asked about;
    /// the file is gone with the spool.
    #[test]
    fn intervals_come_back_for_the_agents_asked_about() {
        let path = std::env::temp_dir().join(format!("stampede-spool-{}", std::process::id()));
        let mut spool = Spool::create(path.clone());
        let interval = |seq: u32| pb::IntervalResult {
            seq,
            connect_latency_hist: vec![seq as u8; 700],
            ..Default::default()
        };
        for seq in 0..100 {
            spool.append("a", &interval(seq));
            spool.append("b", &interval(seq + 1_000));
        }
        let back = spool.read(&BTreeSet::from(["b".to_owned()])).unwrap();
        assert_eq!(back.len(), 1);
        let seqs: Vec<u32> = back["b"].iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1_000..1_100).collect::<Vec<_>>());
        assert_eq!(back["b"][3], interval(1_003));
        // Appending goes on after a read.
        spool.append("a", &interval(100));
        let a = spool.read(&BTreeSet::from(["a".to_owned()])).unwrap();
        assert_eq!(a["a"].len(), 101);
        drop(spool);
        assert!(!path.exists());
        let mut broken = Spool::create(PathBuf::from("/proc/no-such/spool"));
        broken.append("a", &interval(0));
        let e = broken.read(&BTreeSet::from(["a".to_owned()])).unwrap_err();
        assert!(e.contains("/proc/no-such/spool"), "{e}");
    }
}
