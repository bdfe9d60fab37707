//! The run's interval results, kept on disk (beside `report.hlog`, or in the temporary
//! directory) only so that agents lost before their final result count with the intervals
//! they delivered. It lives in the log's writer thread (`writer`), which every interval
//! passes through, so the run's event loop does no file I/O for it.
//!
//! Its size is bounded whatever the run's length: once the records appended since the last
//! compaction pass [`COMPACT_AFTER`] bytes (or [`COMPACT_RECORDS`] records), each agent's
//! records are summed into one (`Tally`: counts add, histograms add bucket by bucket,
//! exactly; a sum is stored as several records when it has more completion-time entries
//! than one result may carry) and written to the spare file, which becomes the one appended
//! to; the other is emptied at once. So the spool holds at most one sum per agent plus that
//! many bytes. A compaction that cannot write the spare (a full disk) leaves the file
//! appended to as it was, and is tried again as many bytes later. It costs the thread one
//! more decode of each interval (as many as writing the intervals' seconds takes), in a
//! burst per compaction (about a second's worth per 5,000 intervals summed); an idle
//! agent's seconds (no count, no sample) are not spooled at all. Summing
//! is exact and in order: the report adds an agent's sum as it would have added each
//! interval.
//!
//! One agent's data is that agent's problem, never the spool's: an agent with a record
//! whose tally cannot be added, or whose sum cannot be encoded (a bucket count past
//! `i64::MAX`, which two valid intervals can reach), becomes unusable with that cause (the
//! report drops it, naming it); its records are dropped and what it sends later ignored.
//! Only the files failing (creation, appending, reading) stop the spool; a stopped spool
//! removes its files at once, and not again when dropped.
//!
//! The two files are created at the start, new and owner-only (never through an existing
//! name, and a file in the way is left alone), and removed when the spool is dropped.
//! Record: agent id length (u32, little-endian), the id, message length (u32), the
//! `IntervalResult` as protobuf; where each agent's records are is kept in memory (16 bytes
//! a record, at most [`COMPACT_RECORDS`] more than agents).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::PathBuf;

use prost::Message as _;
use stampede_proto::histogram;
use stampede_proto::pb;
use stampede_proto::tally::CarriesTally as _;

use self::record::{Stop, encode, put, sum, summed};
use super::Delivered;

mod record;

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
        if self.unusable.contains_key(agent) || carries_nothing(r) {
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
        if self.len - self.compacted > self.compact_after || self.appended >= COMPACT_RECORDS {
            self.compact();
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

    /// Makes one of the files (0: the one appended to, 1: the spare) read-only, so writing
    /// to it fails as a full disk would (tests).
    #[cfg(test)]
    pub(super) fn break_side(&mut self, side: usize) {
        if let Some(sides) = &mut self.sides {
            let s = &mut sides[side];
            s.file = BufWriter::new(File::open(&s.path).expect("the spool's file"));
        }
    }

    /// Sums each agent's records into the spare file, which becomes the one appended to (the
    /// other is emptied at once). Writing the spare failing (a full disk) leaves the file
    /// appended to as it was, and another compaction is tried once as many bytes again were
    /// appended; only the file appended to failing to be read stops the spool.
    fn compact(&mut self) {
        let Some([live, spare]) = &mut self.sides else {
            return;
        };
        let mut unusable = Vec::new();
        let summed = summed(live, spare, &self.index, &mut unusable);
        for (agent, why) in unusable {
            tracing::warn!(agent = %agent, cause = %why, "an agent's intervals cannot be summed");
            self.index.remove(&agent);
            self.unusable.insert(agent, why);
        }
        match summed {
            Ok((index, len)) => {
                let sides = self.sides.as_mut().expect("matched above");
                sides.swap(0, 1);
                // The old file's bytes are of no use now: freed at once.
                if let Err(e) = sides[1].file.get_ref().set_len(0) {
                    tracing::debug!(cause = %e, "interval spool: emptying the spare file");
                }
                self.index = index;
                self.len = len;
                self.compacted = len;
                self.appended = 0;
                self.compactions += 1;
                tracing::debug!(bytes = len, "interval spool compacted");
            }
            Err(Stop::Writing(e)) => {
                // What the failed pass wrote to the spare would hold the disk that it found
                // full: freed at once, so the live file can go on growing.
                let sides = self.sides.as_mut().expect("matched above");
                if let Err(e) = sides[1].file.get_ref().set_len(0) {
                    tracing::debug!(cause = %e, "interval spool: emptying the spare file");
                }
                tracing::warn!(cause = %e, "interval spool not compacted: it goes on growing \
                    until the next try");
                self.compacted = self.len;
                self.appended = 0;
            }
            Err(Stop::Reading(e)) => self.fail(e),
        }
    }

    /// Stops the spool: lost agents' intervals will not be counted, and `read` says why. Its
    /// files are removed, and not again on drop (someone else's may be there by then).
    fn fail(&mut self, e: String) {
        tracing::warn!(cause = %e, "lost agents' intervals will not be counted");
        self.error = Some(e);
        self.sides = None;
        self.index = BTreeMap::new();
        self.unusable = BTreeMap::new();
        for p in std::mem::take(&mut self.paths) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Whether `r` carries no count and no sample (an idle agent's second): adding it changes
/// no sum, so it is not spooled (an idle fleet then never fills the spool, nor makes a
/// compaction decode its empty histograms). Only a message that decodes counts as empty.
fn carries_nothing(r: &pb::IntervalResult) -> bool {
    let w = r.wire_tally();
    let empty =
        |bytes: &[u8]| bytes.is_empty() || histogram::decode(bytes).is_ok_and(|h| h.is_empty());
    w.outcomes.is_none_or(|o| *o == pb::Outcomes::default())
        && w.syn_retransmits.is_empty()
        && w.ghost_syn_retransmits.is_empty()
        && w.pending_syn_retransmits.is_empty()
        && w.errors.is_empty()
        && w.completion_times.is_empty()
        && empty(w.connect_latency_hist)
        && empty(w.ttfb_hist)
        && empty(w.issue_lag_hist)
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.sides = None;
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}
