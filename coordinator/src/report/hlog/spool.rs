//! The run's interval results, kept on disk (beside `report.hlog`, or in the temporary
//! directory) only so that agents lost before their final result count with the intervals
//! they delivered. It lives in the log's writer thread (`writer`), which every interval
//! passes through, so the run's event loop does no file I/O for it.
//!
//! Its size is bounded whatever the run's length: once the records appended since the last
//! compaction pass [`COMPACT_AFTER`] bytes (or [`COMPACT_RECORDS`] records), each agent's
//! records are summed into one (`Tally`: counts add, histograms add bucket by bucket,
//! exactly) and written to the spare file, which becomes the one appended to. So the spool
//! holds at most one summed record per agent plus that many bytes. It costs the thread one
//! more decode of each interval (as many as writing the intervals' seconds takes). Summing
//! is exact and in order: the report adds an agent's sum as it would have added each
//! interval.
//!
//! One agent's data is that agent's problem, never the spool's: an agent with a record
//! whose tally cannot be added, or whose sum cannot be encoded (a bucket count past
//! `i64::MAX`, which two valid intervals can reach), becomes unusable with that cause (the
//! report drops it, naming it); its records are dropped and what it sends later ignored.
//! Only the files failing (creation, reading) stop the spool.
//!
//! The two files are created at the start, new and owner-only (never through an existing
//! name, and a file in the way is left alone), and removed when the spool is dropped.
//! Record: agent id length (u32, little-endian), the id, message length (u32), the
//! `IntervalResult` as protobuf; where each agent's records are is kept in memory (16 bytes
//! a record, at most [`COMPACT_RECORDS`] more than agents).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use prost::Message as _;
use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, MAX_COMPLETION_ENTRIES, Tally, WireTally};

use super::Delivered;

/// Bytes appended after which the spool is compacted: 32 MiB (~45,000 intervals, about 45 s
/// of a 1,000-agent fleet).
pub(super) const COMPACT_AFTER: u64 = 32 << 20;

/// Records appended after which the spool is compacted whatever their size (bounds the
/// index of small ones: 4 MiB).
const COMPACT_RECORDS: u64 = 1 << 18;

/// Longest record part: 64 MiB (an agent id or one `IntervalResult`, under the gRPC message
/// limit).
const MAX_PART: usize = 64 << 20;

/// Where each of an agent's records is in the file: the message's offset and length.
type Records = Vec<(u64, u32)>;

/// One of the spool's two files.
#[derive(Debug)]
struct Side {
    path: PathBuf,
    file: BufWriter<File>,
}

/// The spool (module docs).
#[derive(Debug)]
pub(super) struct Spool {
    /// The file appended to, then the spare one; `None` once appending failed.
    sides: Option<[Side; 2]>,
    /// The files this spool created (never another's that was in the way), removed on drop.
    paths: Vec<PathBuf>,
    /// Each agent's records in the file appended to, in the order they came.
    index: BTreeMap<String, Records>,
    /// Agents whose records cannot be summed, and why (their records are dropped).
    unusable: BTreeMap<String, String>,
    /// Bytes in the file appended to.
    len: u64,
    /// Its length right after the last compaction.
    compacted: u64,
    /// Records appended since the last compaction.
    appended: u64,
    compact_after: u64,
    compactions: u64,
    /// Why the spool stopped, if it did.
    error: Option<String>,
}

impl Spool {
    /// Creates the files at `path` and beside it (an error is kept for [`Spool::read`] and
    /// logged); compacted once `compact_after` bytes were appended since the last time.
    pub(super) fn create(path: PathBuf, compact_after: u64) -> Spool {
        let mut spare = path.clone().into_os_string();
        spare.push(".spare");
        let paths = [path, PathBuf::from(spare)];
        let open = |p: &PathBuf| {
            super::writer::create_new(p)
                .map(|f| Side {
                    path: p.clone(),
                    file: BufWriter::new(f),
                })
                .map_err(|e| format!("creating {}: {e}", p.display()))
        };
        let (sides, error) = match open(&paths[0]) {
            Err(e) => (None, Some(e)),
            Ok(live) => match open(&paths[1]) {
                Ok(spare) => (Some([live, spare]), None),
                Err(e) => {
                    drop(live);
                    let _ = std::fs::remove_file(&paths[0]);
                    (None, Some(e))
                }
            },
        };
        if let Some(e) = &error {
            tracing::warn!(cause = %e, "lost agents' intervals will not be counted");
        }
        let paths = match sides {
            Some(_) => paths.to_vec(),
            None => Vec::new(),
        };
        Spool {
            sides,
            paths,
            index: BTreeMap::new(),
            unusable: BTreeMap::new(),
            len: 0,
            compacted: 0,
            appended: 0,
            compact_after,
            compactions: 0,
            error,
        }
    }

    /// Appends one of `agent`'s interval results, compacting the spool when it is due.
    pub(super) fn append(&mut self, agent: &str, r: &pb::IntervalResult) {
        let Some([live, _]) = &mut self.sides else {
            return;
        };
        if self.unusable.contains_key(agent) {
            return;
        }
        let appended = put(&mut live.file, self.len, agent, &r.encode_to_vec());
        match appended {
            Ok((at, end)) => {
                self.index.entry(agent.to_owned()).or_default().push(at);
                self.len = end;
                self.appended += 1;
            }
            Err(e) => {
                let e = format!("writing {}: {e}", live.path.display());
                return self.fail(e);
            }
        }
        if (self.len - self.compacted > self.compact_after || self.appended >= COMPACT_RECORDS)
            && let Err(e) = self.compact()
        {
            self.fail(e);
        }
    }

    /// The intervals `agents` delivered, each agent's summed (as one result), or why that
    /// agent's cannot be; an error only when the spool itself failed.
    pub(super) fn read(&mut self, agents: &BTreeSet<String>) -> Result<Delivered, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some([live, _]) = &mut self.sides else {
            return Ok(BTreeMap::new());
        };
        let bad = |e: io::Error| format!("reading {}: {e}", live.path.display());
        live.file.flush().map_err(bad)?;
        let mut out = BTreeMap::new();
        for agent in agents {
            if let Some(why) = self.unusable.get(agent) {
                out.insert(agent.clone(), Err(why.clone()));
            } else if let Some(records) = self.index.get(agent) {
                let sum = sum(live.file.get_ref(), records).map_err(bad)?;
                out.insert(agent.clone(), sum.and_then(|t| encode(&t)));
            }
        }
        Ok(out)
    }

    /// Bytes in the file appended to, and the compactions so far (tests).
    #[cfg(test)]
    pub(super) fn size(&self) -> (u64, u64) {
        (self.len, self.compactions)
    }

    /// Sums each agent's records into the spare file, which becomes the one appended to.
    fn compact(&mut self) -> Result<(), String> {
        let Some([live, spare]) = &mut self.sides else {
            return Ok(());
        };
        let reading = |e: io::Error| format!("compacting {}: {e}", live.path.display());
        let writing = |e: io::Error| format!("compacting into {}: {e}", spare.path.display());
        live.file.flush().map_err(reading)?;
        spare.file.seek(SeekFrom::Start(0)).map_err(writing)?;
        spare.file.get_ref().set_len(0).map_err(writing)?;
        let mut index = BTreeMap::new();
        let mut unusable = Vec::new();
        let mut len = 0;
        for (agent, records) in &self.index {
            let results = match records.as_slice() {
                // Already one record (a sum, or a single interval): copied as it is.
                [(at, n)] => vec![message(live.file.get_ref(), *at, *n).map_err(reading)?],
                _ => match sum(live.file.get_ref(), records)
                    .map_err(reading)?
                    .and_then(|t| encode(&t))
                {
                    Ok(parts) => parts.iter().map(|r| r.encode_to_vec()).collect(),
                    Err(why) => {
                        unusable.push((agent.clone(), why));
                        continue;
                    }
                },
            };
            let mut kept = Vec::with_capacity(results.len());
            for msg in results {
                let (at, end) = put(&mut spare.file, len, agent, &msg).map_err(writing)?;
                kept.push(at);
                len = end;
            }
            index.insert(agent.clone(), kept);
        }
        spare.file.flush().map_err(writing)?;
        self.sides.as_mut().expect("matched above").swap(0, 1);
        self.index = index;
        for (agent, why) in unusable {
            tracing::warn!(agent = %agent, cause = %why, "an agent's intervals cannot be summed");
            self.unusable.insert(agent, why);
        }
        self.len = len;
        self.compacted = len;
        self.appended = 0;
        self.compactions += 1;
        tracing::debug!(bytes = len, "interval spool compacted");
        Ok(())
    }

    /// Stops the spool: lost agents' intervals will not be counted, and `read` says why.
    fn fail(&mut self, e: String) {
        tracing::warn!(cause = %e, "lost agents' intervals will not be counted");
        self.error = Some(e);
        self.sides = None;
        self.index = BTreeMap::new();
        self.unusable = BTreeMap::new();
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.sides = None;
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Appends one record to `file`, which holds `len` bytes: where its message is, and the
/// file's new length.
fn put(
    file: &mut BufWriter<File>,
    len: u64,
    agent: &str,
    msg: &[u8],
) -> io::Result<((u64, u32), u64)> {
    if agent.len() > MAX_PART || msg.len() > MAX_PART {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a record of {} bytes (at most {MAX_PART})",
                agent.len().max(msg.len())
            ),
        ));
    }
    file.write_all(&(agent.len() as u32).to_le_bytes())?;
    file.write_all(agent.as_bytes())?;
    file.write_all(&(msg.len() as u32).to_le_bytes())?;
    file.write_all(msg)?;
    let at = len + 8 + agent.len() as u64;
    Ok(((at, msg.len() as u32), at + msg.len() as u64))
}

/// The message at `at`, `n` bytes long.
fn message(file: &File, at: u64, n: u32) -> io::Result<Vec<u8>> {
    let n = n as usize;
    if n > MAX_PART {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a record of {n} bytes (at most {MAX_PART})"),
        ));
    }
    let mut msg = vec![0u8; n];
    file.read_exact_at(&mut msg, at)?;
    Ok(msg)
}

/// One agent's `records` summed in order (one record's tally decoded at a time), or why
/// they cannot be (a record that cannot be decoded or added: that agent's problem). The
/// outer error: the file could not be read.
fn sum(file: &File, records: &[(u64, u32)]) -> io::Result<Result<Tally, String>> {
    let mut total = Tally::default();
    for &(at, n) in records {
        let msg = message(file, at, n)?;
        let r = match pb::IntervalResult::decode(msg.as_slice()) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("a spooled interval cannot be read: {e}"))),
        };
        match Tally::from_wire(&r) {
            Ok(t) => total
                .merge(&t)
                .expect("every tally has the layout of histogram::new_latency"),
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    Ok(Ok(total))
}

/// `total` as interval results whose tallies add up to it exactly, each within the limits
/// a result is read with (at most [`MAX_COMPLETION_ENTRIES`] completion-time entries: a sum
/// may hold more, each interval having at most that many, so the others go in results of
/// their own), or why it cannot be encoded (a bucket count past `i64::MAX`: the histogram
/// format's limit).
fn encode(total: &Tally) -> Result<Vec<pb::IntervalResult>, String> {
    let mut wire = total
        .to_wire()
        .map_err(|e| format!("the sum of its intervals cannot be encoded: {e}"))?;
    let mut entries = std::mem::take(&mut wire.completion_times).into_iter();
    wire.completion_times = entries.by_ref().take(MAX_COMPLETION_ENTRIES).collect();
    let mut first = pb::IntervalResult::default();
    first.set_wire_tally(wire);
    let mut out = vec![first];
    while entries.len() > 0 {
        let mut more = pb::IntervalResult::default();
        more.set_wire_tally(WireTally {
            completion_times: entries.by_ref().take(MAX_COMPLETION_ENTRIES).collect(),
            ..WireTally::default()
        });
        out.push(more);
    }
    Ok(out)
}
