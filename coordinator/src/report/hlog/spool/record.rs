//! The interval spool's records: how one is written and read back, how an agent's are
//! summed (and the sum encoded as results within the wire's limits), and a compaction's
//! pass from the file appended to into the spare (`Spool::compact` decides what follows).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;

use prost::Message as _;
use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, MAX_COMPLETION_ENTRIES, Tally, WireTally};

use super::{MAX_PART, Records, Side};

/// Why a compaction stopped.
pub(super) enum Stop {
    /// The file appended to could not be read: the spool stops.
    Reading(String),
    /// The spare could not be written: the file appended to is kept.
    Writing(String),
}

/// Each agent's records of `live` (where `index` says) summed into `spare` from its start:
/// the new index and length. Agents whose records cannot be summed go to `unusable`.
pub(super) fn summed(
    live: &mut Side,
    spare: &Side,
    index: &BTreeMap<String, Records>,
    unusable: &mut Vec<(String, String)>,
) -> Result<(BTreeMap<String, Records>, u64), Stop> {
    let reading = |e: io::Error| Stop::Reading(format!("compacting {}: {e}", live.path.display()));
    let writing =
        |e: io::Error| Stop::Writing(format!("compacting into {}: {e}", spare.path.display()));
    live.file.flush().map_err(reading)?;
    let from = live.file.get_ref();
    let mut out = Out {
        file: spare.file.get_ref(),
        buf: Vec::new(),
        len: 0,
    };
    let mut new = BTreeMap::new();
    for (agent, records) in index {
        let results = match records.as_slice() {
            // Already one record (a sum, or a single interval): copied as it is.
            [(at, n)] => vec![message(from, *at, *n).map_err(reading)?],
            _ => match sum(from, records)
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
            kept.push(out.put(agent, &msg).map_err(writing)?);
        }
        new.insert(agent.clone(), kept);
    }
    let len = out.finish().map_err(writing)?;
    // Appended to from its end once it is the live file.
    let mut cursor = spare.file.get_ref();
    cursor.seek(SeekFrom::Start(len)).map_err(writing)?;
    Ok((new, len))
}

/// A compaction's output: records batched into writes at their offsets (the file's cursor
/// is left alone until the end).
struct Out<'a> {
    file: &'a File,
    buf: Vec<u8>,
    /// Bytes written and batched.
    len: u64,
}

impl Out<'_> {
    /// Batches one record: where its message will be.
    fn put(&mut self, agent: &str, msg: &[u8]) -> io::Result<(u64, u32)> {
        let (at, end) = put(&mut self.buf, self.len, agent, msg)?;
        self.len = end;
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(at)
    }

    fn flush(&mut self) -> io::Result<()> {
        let start = self.len - self.buf.len() as u64;
        self.file.write_all_at(&self.buf, start)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is batched and cuts the file there: its length.
    fn finish(mut self) -> io::Result<u64> {
        self.flush()?;
        self.file.set_len(self.len)?;
        Ok(self.len)
    }
}

/// Appends one record to `file`, which holds `len` bytes: where its message is, and the
/// file's new length.
pub(super) fn put(
    file: &mut impl io::Write,
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
pub(super) fn sum(file: &File, records: &[(u64, u32)]) -> io::Result<Result<Tally, String>> {
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
pub(super) fn encode(total: &Tally) -> Result<Vec<pb::IntervalResult>, String> {
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
