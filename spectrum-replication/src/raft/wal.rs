//! The Raft log as append-only segment files (`raft-wal/`), the way etcd's
//! WAL and TiKV's raft-engine keep theirs, instead of a B-tree.
//!
//! A log append is the hot path of every write, on the leader and then on a
//! follower, one after the other. A redb commit rewrites the B-tree pages it
//! touched, the table roots and the allocator state, and fsyncs them (about
//! 0.55 ms on this project's machines); appending the encoded entries to the
//! end of one file and `fdatasync`ing it costs about 0.2 ms, and much less
//! CPU. The vote, the purge mark and the state machine's position stay in
//! `raft.redb`: they change rarely.
//!
//! # On disk
//!
//! Segment files named by the index of the first entry written to them
//! (`00000000000000000001.wal`, twenty digits, so names sort by index), each an
//! 8-byte [`MAGIC`] and then records:
//!
//! ```text
//! payload length  u32 LE
//! CRC-32          u32 LE   (of the index bytes and the payload)
//! entry index     u64 LE
//! payload         the entry as protobuf `RaftLogEntry`
//! ```
//!
//! Records are appended only to the last segment; a new segment starts once
//! the last holds [`SEGMENT_BYTES`] (the full one is synced first, so only the
//! last segment ever holds entries not yet on disk).
//!
//! A segment is created at its full length, [`SEGMENT_BYTES`] of zeros (a
//! hole, taking no disk space until written), and records overwrite them: an
//! `fdatasync` after an append then has no new file length to write with
//! the data, which made it about 40 % slower on this project's machines
//! (ext4; etcd preallocates its segments with `fallocate`, which also
//! reserves the space; here the blocks are allocated as records reach them,
//! so a full disk fails an append, as it did when the file grew). In the last
//! segment, the records end where the rest of the file is all zeros.
//!
//! Writing into a hole still makes the `fdatasync` after it commit the
//! blocks' allocation to the filesystem's journal. So a background task
//! ([`zero_ahead`](Wal::zero_ahead)) writes zeros past the last segment's
//! records, up to [`ZERO_AHEAD`] bytes of them, and syncs them, whenever
//! fewer than half that are left: the appends that reach them overwrite
//! blocks already allocated, and their `fdatasync` writes data only. (An
//! append synced while a run of zeros is being written writes those back
//! too, as `fdatasync` covers the whole file: once per megabyte of log.) On this project's machine (ext4), an append and
//! `fdatasync` into zeros written ahead took 112 to 123 µs on average (p90
//! 136 µs) against 145 to 153 µs (p90 200 µs) into a hole, and 16 writers
//! made 4 to 6 % more puts a second in `bench_consensus` (more in 12 of 13
//! rounds, over three runs against the build before). The
//! zeros are what the rest of a segment reads as anyway, so recovery treats
//! them as unwritten space, and opening turns them back into a hole. This is
//! etcd's preallocation done the other way round: etcd reserves a whole
//! segment with `fallocate` when it is made, whose unwritten extents still
//! need their conversion journaled on first write (measured here: as slow as
//! a hole); zeros only a little ahead cost little disk space, and a full disk
//! still fails an append soon after it fills.
//!
//! # When an entry is on disk
//!
//! [`append`](Wal::append) `fdatasync`s before it returns: a follower's
//! append, acknowledged to its leader, is on disk. A leader's own entries may
//! instead go through [`append_unsynced`](Wal::append_unsynced): written to the
//! file at once (so replication can read them), synced by a background flush
//! that runs while the leader sends them to its followers, as the Raft thesis
//! allows (Ongaro, §10.2.1; etcd's leader writes its WAL in parallel with
//! replication the same way). [`durable`](Wal::durable) tells how far the log
//! is on disk; what may not act before an entry is on disk waits on it.
//!
//! # Recovery
//!
//! Opening reads every segment in order (up to its unwritten space, when that
//! is a hole with no data after it) and checks every record. A record at the
//! end of the last segment that is cut short by the end of what is read, or
//! fails its CRC with a sector of it all zeros, is where a crash interrupted
//! an append that was never acknowledged (etcd's WAL decides torn writes the
//! same way): the file is cut there. Whatever lies past the last segment's
//! records is cleared at every opening (blocks of an append never
//! acknowledged may have reached the disk out of order), and the segment is
//! kept at its full length. Anything else that fails (a whole record
//! with a wrong CRC, any failure in an earlier segment, indexes that do not
//! follow one another, a first entry that does not follow the purge mark) is
//! damage: opening fails naming the file and offset rather than drop entries
//! that may have been acknowledged, or serve a log with a hole.
//!
//! Entries at or below the purge mark (kept by the caller, written before a
//! purge deletes anything) are skipped: a purge deletes only whole segments,
//! so the first segment may still hold some.
//!
//! # One instance at a time
//!
//! An open log holds an exclusive `flock` on a file beside its directory
//! (`raft-wal.lock`, kept there so that the directory holds segments only, as
//! earlier builds expect); opening it again (another process, or a new
//! incarnation of the node in this process while the old one's background
//! flush, zeroing or purge still runs) waits up to [`LOCK_WAIT`] and then fails,
//! saying the log is in use: two instances writing one segment would
//! overwrite each other's records. On a filesystem without locks the log
//! opens unlocked, as before, and writes no zeros ahead (the one writer an
//! old instance could still have).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// The first bytes of every segment file (format 1).
pub(crate) const MAGIC: &[u8; 8] = b"SPRWAL\x00\x01";
/// A segment is closed once it holds this many bytes (64 MiB, as etcd's).
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
/// The largest payload a record may declare (a log entry carries at most
/// about a megabyte of proposals; anything larger is damage).
const MAX_PAYLOAD: u32 = 256 << 20;
/// Length, CRC and index.
const RECORD_HEADER: usize = 16;
/// How far past the last segment's records [`Wal::zero_ahead`] keeps zeros
/// written and synced (2 MiB: under `bench_consensus`'s 16 writers the log
/// grows by about 0.75 MB a second).
pub(crate) const ZERO_AHEAD: u64 = 2 << 20;
/// Zeros are written again once fewer than this many are left ahead.
const ZERO_LOW: u64 = ZERO_AHEAD / 2;
/// Zeros written at a time, under the log's lock: an append waits for at
/// most one such write (tens of microseconds).
const ZERO_PIECE: usize = 128 << 10;
/// How long [`Wal::open`] waits for another instance to let go of the
/// directory (an earlier incarnation of the node in this process, whose
/// background flush, zeroing or purge is finishing).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where one entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// The segment's name (its first index).
    segment: u64,
    /// The record's offset in it.
    offset: u64,
    /// The payload's length.
    len: u32,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes written (the offset of the next record).
    size: u64,
    /// How far zeros were written by [`Wal::zero_ahead`] (from the start:
    /// at or below `size` once the records passed them); past the larger of
    /// the two, unwritten space (a hole, or zeros of a write that failed).
    zeroed: u64,
    /// Set when writing zeros to it failed (a full disk): no more are tried
    /// in it (appends go on into its unwritten space, as without zeros).
    zeroing_failed: bool,
}

#[derive(Debug)]
struct State {
    /// By name.
    segments: BTreeMap<u64, Segment>,
    /// Entries `first ..= first + locs.len() - 1`.
    locs: VecDeque<Loc>,
    /// The index of `locs[0]`; when `locs` is empty, the lowest index the next
    /// append may have (one above the purge mark).
    first: u64,
    /// Set by a failed write or sync: the file's state is unknown, so every
    /// later write fails with this reason (a failed fsync cannot be retried).
    poisoned: Option<String>,
    /// Entries below this index are on disk (synced); the rest, up to the
    /// end of `locs`, are written but maybe only in the page cache.
    synced_end: u64,
    /// Raised by every truncation: a flush that started before one does not
    /// vouch for what was appended after it.
    generation: u64,
    /// Whether a background flush is running (at most one runs).
    flushing: bool,
    /// Whether a [`Wal::zero_ahead`] is running (at most one runs).
    zeroing: bool,
}

impl State {
    /// One past the last index held.
    fn end(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    /// The log's earlier failure, if any, as the error of a write.
    fn refuse_if_poisoned(&self) -> io::Result<()> {
        match &self.poisoned {
            Some(reason) => Err(io::Error::other(format!("the raft log failed earlier: {reason}"))),
            None => Ok(()),
        }
    }

    /// Whether the next append starts a new segment: there is none, or the
    /// last is full.
    fn starts_a_segment(&self) -> bool {
        self.segments.values().next_back().is_none_or(|last| last.size >= SEGMENT_BYTES)
    }

    /// Whether the last segment has fewer than [`ZERO_LOW`] bytes of zeros
    /// written past its records, and could have more.
    fn zeros_due(&self) -> bool {
        self.segments.values().next_back().is_some_and(|last| {
            !last.zeroing_failed && last.zeroed.max(last.size) < (last.size + ZERO_LOW).min(SEGMENT_BYTES)
        })
    }

    /// What a sync must cover when entries are not on disk yet: the last
    /// segment (the only one that may hold them), the log's end and the
    /// truncation generation.
    fn unsynced_tail(&self) -> Option<(Arc<File>, u64, u64)> {
        let last = self.segments.values().next_back()?;
        (self.synced_end < self.end()).then(|| (last.file.clone(), self.end(), self.generation))
    }
}

/// How far the log is on disk, as published on [`Wal::durable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Every entry below this index is on disk.
    pub(crate) end: u64,
    /// Why the log failed, when it did: nothing more will become durable.
    pub(crate) failed: Option<String>,
}

impl Durable {
    /// Waits on `rx` until the entry at `index` is on disk.
    ///
    /// # Errors
    ///
    /// The log's failure (a write or sync failed, so the entry may never be
    /// on disk), or the log was closed.
    pub(crate) async fn wait_for(rx: &mut watch::Receiver<Durable>, index: u64) -> Result<(), String> {
        loop {
            {
                let now = rx.borrow_and_update();
                if let Some(reason) = &now.failed {
                    return Err(format!("the raft log failed: {reason}"));
                }
                if now.end > index {
                    return Ok(());
                }
            }
            rx.changed().await.map_err(|_| "the raft log was closed".to_string())?;
        }
    }
}

/// The Raft log's segment files in one directory.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
    durable: watch::Sender<Durable>,
    /// Held across every sync of a segment that may hold entries not on
    /// disk, and the bookkeeping after it (taken before `state`). Linux
    /// reports a failed write-back to one of the fsyncs running on a file,
    /// and the others succeed: one at a time, a sync that succeeds after
    /// another failed finds the log poisoned and vouches for nothing.
    /// ([`Wal::zero_ahead`] writes and syncs through a file of its own:
    /// Linux, since 4.13, reports a failed write-back to each open file's
    /// next sync, so its sync does not take one from an append's.)
    sync_lock: Mutex<()>,
    /// The lock file beside the directory, locked (`flock`) for as long as
    /// this instance lives, so no other instance, in this process or another,
    /// writes in it meanwhile; `None` on a filesystem without locks (then no
    /// zeros are written ahead).
    lock: Option<File>,
}

fn damaged(path: &Path, offset: u64, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("raft log {} at byte {offset}: {what}", path.display()),
    )
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The lock file of the log in `dir`: beside it, named after it.
fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".lock");
    dir.with_file_name(name)
}

/// The lock file of the log in `dir` (created when missing, and opened for
/// writing, which NFS needs for an exclusive lock), locked exclusively
/// (`flock`), waiting up to `wait` while another open file holds it; `None`
/// when the filesystem does not lock files.
///
/// # Errors
///
/// [`io::ErrorKind::WouldBlock`] naming the log when it is still locked
/// after `wait`; I/O errors.
fn lock_dir(dir: &Path, wait: std::time::Duration) -> io::Result<Option<File>> {
    use rustix::fs::{FlockOperation, flock};
    let path = lock_path(dir);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(file)),
            Err(rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                tracing::warn!(
                    lock = %path.display(),
                    "the raft log's filesystem does not lock files: opened unlocked, without zeros written ahead"
                );
                return Ok(None);
            }
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "raft log {} is in use by another process, or by an instance of this node not yet \
                         closed",
                        dir.display()
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The record of entry `index`, appended to `out`.
fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).ok().filter(|&l| l > 0 && l <= MAX_PAYLOAD).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "a raft log entry of no or too many bytes")
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Why the bytes at an offset are not a record.
#[derive(Debug)]
enum Bad {
    /// They end before the record does.
    CutShort,
    /// A length of zero: nothing was written there.
    Zero,
    /// A length beyond any record's.
    Length(u32),
    /// The record is whole (it ends at `end`) and its checksum does not match.
    Checksum { end: usize },
}

/// The sector size a torn write is detected by (as etcd's WAL does).
const SECTOR: usize = 512;

impl Bad {
    /// Whether this is what a crash leaves at the end of the last segment,
    /// decided as etcd's WAL decides: a record cut short by the end of the
    /// file, or one (to its end, or to the last nonzero byte read when its
    /// length is unreadable: the segment's unwritten zeros follow) in which some
    /// sector, by the file's 512-byte boundaries, is all zeros: a write the
    /// disk never finished. A record that fails its checksum with every sector
    /// written is damage, and opening fails rather than cut off entries that
    /// may have been acknowledged.
    fn torn(&self, bytes: &[u8], offset: usize) -> bool {
        let end = match self {
            Bad::CutShort => return true,
            Bad::Checksum { end } => *end,
            Bad::Zero | Bad::Length(_) => bytes.iter().rposition(|&b| b != 0).map_or(offset, |last| last + 1),
        };
        let mut at = offset;
        while at < end {
            let next = ((at / SECTOR) + 1) * SECTOR;
            let chunk = &bytes[at..next.min(end)];
            if chunk.iter().all(|&b| b == 0) {
                return true;
            }
            at = next;
        }
        false
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::CutShort => f.write_str("a record is cut short"),
            Bad::Zero => f.write_str("a record of no bytes, with data after it"),
            Bad::Length(len) => write!(f, "a record of {len} bytes, more than any entry"),
            Bad::Checksum { .. } => f.write_str("a record fails its checksum"),
        }
    }
}

/// How much of `file` to read: up to its first hole when no data follows it
/// (a segment's space not written yet is such a hole: it reads as zeros and
/// need not be read), else its whole length (a hole before data is read as
/// the zeros it is: a filesystem may store a block of zeros as a hole, and a
/// crash may leave one before blocks written back out of order). Its length
/// too where the filesystem does not tell holes apart. Only the stored length
/// and offsets are used, never the file's position (which this moves).
fn data_len(file: &File) -> io::Result<u64> {
    use rustix::fs::{SeekFrom, seek};
    let len = file.metadata()?.len();
    let Ok(hole) = seek(file, SeekFrom::Hole(0)) else { return Ok(len) };
    if hole >= len {
        return Ok(len);
    }
    match seek(file, SeekFrom::Data(hole)) {
        Err(rustix::io::Errno::NXIO) => Ok(hole),
        _ => Ok(len),
    }
}

/// Cuts `file` at `written` bytes and extends it with zeros to
/// [`SEGMENT_BYTES`] (see the [module docs](self)); the caller syncs it.
fn reserve(file: &File, written: u64) -> io::Result<()> {
    file.set_len(written)?;
    file.set_len(SEGMENT_BYTES.max(written))
}

/// The record at `offset`: its index, payload length and end.
fn parse_record(bytes: &[u8], offset: usize) -> Result<(u64, u32, usize), Bad> {
    let header = bytes.get(offset..offset + RECORD_HEADER).ok_or(Bad::CutShort)?;
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (len, crc) = (word(0), word(4));
    let mut index = [0; 8];
    index.copy_from_slice(&header[8..16]);
    let index = u64::from_le_bytes(index);
    if len == 0 {
        return Err(Bad::Zero);
    }
    if len > MAX_PAYLOAD {
        return Err(Bad::Length(len));
    }
    let end = offset + RECORD_HEADER + len as usize;
    let payload = bytes.get(offset + RECORD_HEADER..end).ok_or(Bad::CutShort)?;
    if checksum(index, payload) != crc {
        return Err(Bad::Checksum { end });
    }
    Ok((index, len, end))
}

/// Writes the next piece of zeros past `segment`'s records (the last
/// segment, under the log's lock) through this task's own file of it (`own`,
/// opened again for a new segment, `wrote` then reset); `true` once there is
/// nothing more to write there, or writing failed (logged, and no more tried
/// in that segment). See [`Wal::zero_ahead`].
fn zero_piece(
    segment: &mut Segment,
    own: &mut Option<(Arc<File>, File)>,
    wrote: &mut bool,
    zeros: &[u8],
) -> bool {
    let from = segment.zeroed.max(segment.size);
    let target = (segment.size + ZERO_AHEAD).min(SEGMENT_BYTES);
    if segment.zeroing_failed || from >= target {
        return true;
    }
    // Zeros written in an earlier segment need no sync: they lie below its
    // records, or in a segment truncated away.
    let opened = match own.take() {
        Some((held, file)) if Arc::ptr_eq(&held, &segment.file) => Ok((held, file)),
        _ => {
            *wrote = false;
            OpenOptions::new().write(true).open(&segment.path).map(|file| (segment.file.clone(), file))
        }
    };
    let written = opened.and_then(|(held, file)| {
        let len = (target - from).min(zeros.len() as u64);
        let written = file.write_all_at(&zeros[..len as usize], from);
        *own = Some((held, file));
        written.map(|()| len)
    });
    match written {
        Ok(len) => {
            segment.zeroed = from + len;
            *wrote = true;
            false
        }
        Err(e) => {
            tracing::warn!(
                segment = %segment.path.display(), error = %e,
                "could not write zeros ahead in the raft log; appends go on into its unwritten space"
            );
            segment.zeroing_failed = true;
            true
        }
    }
}

impl Wal {
    /// Opens the log in `dir` (created when missing), skipping entries at or
    /// below `purged`, and cuts off an append a crash interrupted.
    ///
    /// # Errors
    ///
    /// I/O errors; [`io::ErrorKind::InvalidData`] when a segment is damaged
    /// anywhere but at the end of the last one, or its entries do not follow
    /// one another.
    pub(crate) fn open(dir: &Path, purged: Option<u64>) -> io::Result<Self> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            // The new directory's entry must survive a power cut with the
            // entries appended in it.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(dir, LOCK_WAIT)?;
        let mut names = Vec::new();
        for item in fs::read_dir(dir)? {
            let name = item?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(digits) = name.strip_suffix(".wal") else { continue };
            match digits.parse::<u64>() {
                Ok(n) if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) => names.push(n),
                _ => {
                    return Err(damaged(&dir.join(name), 0, "not a segment name (twenty digits, then .wal)"));
                }
            }
        }
        names.sort_unstable();
        // With a purge mark, the first entry kept must follow it: openraft
        // appends the entry after the mark next, even after a purge that
        // went past the end of the log.
        let floor = purged.map(|p| p.saturating_add(1));
        let mut state = State {
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            first: floor.unwrap_or(0),
            poisoned: None,
            synced_end: 0,
            generation: 0,
            flushing: false,
            zeroing: false,
        };
        let count = names.len();
        for (i, name) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let path = dir.join(segment_name(name));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut bytes = vec![0; usize::try_from(data_len(&file)?).map_err(io::Error::other)?];
            file.read_exact_at(&mut bytes, 0)?;
            if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                // A segment whose header never reached the disk (cut short, or
                // zeros) was created by an append that did not finish: nothing
                // in it was acknowledged.
                let unwritten = bytes.len() <= MAGIC.len() && MAGIC.starts_with(&bytes);
                if last && (unwritten || bytes.iter().all(|&b| b == 0)) {
                    // (Synced at full length below, as every last segment.)
                    file.set_len(0)?;
                    file.write_all_at(MAGIC, 0)?;
                    bytes = MAGIC.to_vec();
                } else {
                    return Err(damaged(&path, 0, "not a Spectrum raft log segment"));
                }
            }
            let mut offset = MAGIC.len();
            // (Zeros to the end of the last segment: its space not written yet.)
            while offset < bytes.len() && (!last || bytes[offset..].iter().any(|&b| b != 0)) {
                let (index, len, end) = match parse_record(&bytes, offset) {
                    Ok(record) => record,
                    Err(bad) if last && bad.torn(&bytes, offset) => {
                        tracing::warn!(
                            segment = %path.display(), offset, dropped = bytes.len() - offset,
                            "cut off the raft log's last append, interrupted by a crash before it was acknowledged"
                        );
                        // (Cut below, where whatever lies past the records goes.)
                        break;
                    }
                    Err(bad) => return Err(damaged(&path, offset as u64, bad)),
                };
                if index >= state.first {
                    let next = state.first + state.locs.len() as u64;
                    let starts = state.locs.is_empty() && (floor.is_none() || Some(index) == floor);
                    if starts {
                        state.first = index;
                    } else if index != next {
                        return Err(damaged(
                            &path,
                            offset as u64,
                            format!("entry {index} where entry {next} was due"),
                        ));
                    }
                    state.locs.push_back(Loc { segment: name, offset: offset as u64, len });
                }
                offset = end;
            }
            let size = offset as u64;
            if last {
                // Whatever lies past the records goes: the zeros read end at
                // the first hole, and a crash may have left blocks of an
                // append never acknowledged beyond it (written back out of
                // order), which later appends must not run into and read
                // back as entries. (A segment written before segments were
                // created at their full length gets it here too.)
                reserve(&file, size)?;
                file.sync_data()?;
            }
            let segment = Segment { file: Arc::new(file), path, size, zeroed: size, zeroing_failed: false };
            state.segments.insert(name, segment);
        }
        // Everything read back is on disk (or was cut off above).
        state.synced_end = state.end();
        let (durable, _) = watch::channel(Durable { end: state.synced_end, failed: None });
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            durable,
            sync_lock: Mutex::new(()),
            lock,
        })
    }

    /// `e` naming this log's directory (a full disk's error says which disk).
    pub(crate) fn in_log(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("raft log {}: {e}", self.dir.display()))
    }

    /// The first and last index held, if any.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let state = self.state.lock();
        let n = state.locs.len() as u64;
        (n > 0).then(|| (state.first, state.first + n - 1))
    }

    /// The payloads of the entries held in `start..end` (end exclusive), in
    /// order; indexes not held are left out.
    pub(crate) fn read(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        let state = self.state.lock();
        let from = start.max(state.first);
        let to = end.min(state.end());
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for index in from..to {
            let loc = state.locs[(index - state.first) as usize];
            let segment = state
                .segments
                .get(&loc.segment)
                .ok_or_else(|| io::Error::other(format!("raft log segment {} is gone", loc.segment)))?;
            let mut buf = vec![0; RECORD_HEADER + loc.len as usize];
            segment.file.read_exact_at(&mut buf, loc.offset)?;
            match parse_record(&buf, 0) {
                Ok((i, _, _)) if i == index => {}
                _ => {
                    return Err(damaged(
                        &segment.path,
                        loc.offset,
                        format!("entry {index} reads back damaged"),
                    ));
                }
            }
            buf.drain(..RECORD_HEADER);
            out.push(buf);
        }
        Ok(out)
    }

    /// How far the log is on disk, now and as it changes.
    pub(crate) fn durable(&self) -> watch::Receiver<Durable> {
        self.durable.subscribe()
    }

    /// Appends `entries` (consecutive indexes, following the last held or
    /// the purge mark; any index into a log that never held one) and syncs
    /// them, with everything written before: when this returns `Ok`, they are
    /// on disk.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for entries that do not follow the
    /// log; any I/O error, after which every write fails (the log is poisoned).
    pub(crate) fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        match self.write(entries)? {
            Some((file, end, generation)) => self.sync(&file, end, generation),
            None => Ok(()),
        }
    }

    /// Appends `entries` as [`append`](Self::append) does, but returns once
    /// they are written (to the page cache, where reads find them); a
    /// background [`flush`](Self::flush) syncs them, and
    /// [`durable`](Self::durable) tells when they are on disk. Returns whether
    /// the caller must start that flush (on a thread that may block): none is
    /// running.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append)'s.
    pub(crate) fn append_unsynced(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<bool> {
        if self.write(entries)?.is_none() {
            return Ok(false);
        }
        let mut state = self.state.lock();
        let start = !state.flushing;
        state.flushing = true;
        Ok(start)
    }

    /// Syncs what was written, again while more is written meanwhile, until
    /// the whole log is on disk, publishing each step on
    /// [`durable`](Self::durable): the background flush
    /// [`append_unsynced`](Self::append_unsynced) asks for. Blocks on the
    /// disk. A failure poisons the log (and is published).
    pub(crate) fn flush(&self) {
        loop {
            let (file, end, generation) = {
                let mut state = self.state.lock();
                match state.unsynced_tail().filter(|_| state.poisoned.is_none()) {
                    Some(tail) => tail,
                    None => {
                        state.flushing = false;
                        return;
                    }
                }
            };
            if self.sync(&file, end, generation).is_err() {
                self.state.lock().flushing = false;
                return;
            }
        }
    }

    /// Syncs everything written so far, now, blocking on the disk: when this
    /// returns `Ok`, the whole log is on disk.
    ///
    /// # Errors
    ///
    /// The log's earlier failure, or the sync's (which poisons it).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        let tail = {
            let state = self.state.lock();
            state.refuse_if_poisoned()?;
            state.unsynced_tail()
        };
        match tail {
            Some((file, end, generation)) => self.sync(&file, end, generation),
            None => Ok(()),
        }
    }

    /// Writes `entries` to the last segment and adds them to the log, not
    /// synced; the segment, the log's end after them and the truncation
    /// generation, or `None` for no entries.
    fn write(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<Option<(Arc<File>, u64, u64)>> {
        let Some(&(head, _)) = entries.first() else { return Ok(None) };
        // A full last segment is synced before the next begins, so that only
        // the last segment ever holds entries not on disk. (Writes come one
        // at a time, from openraft's core: none lands in between.)
        if let Some((file, end, generation)) = self.full_and_unsynced() {
            self.sync(&file, end, generation)?;
        }
        let mut state = self.state.lock();
        state.refuse_if_poisoned()?;
        let next = state.end();
        // An empty log takes any first entry only if it never held one
        // (nothing purged or appended yet); otherwise the next is due,
        // as recovery demands.
        let fits = head == next || (state.locs.is_empty() && state.first == 0);
        if !fits || entries.windows(2).any(|w| w[1].0 != w[0].0 + 1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("raft log append of entry {head} where entry {next} is due"),
            ));
        }
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, p)| p.len() + RECORD_HEADER).sum());
        let mut locs = Vec::with_capacity(entries.len());
        let result = (|| {
            let name = self.current_segment(&mut state, head)?;
            let segment = state.segments.get_mut(&name).ok_or_else(|| io::Error::other("no segment"))?;
            for (index, payload) in entries {
                let offset = segment.size + buf.len() as u64;
                encode_record(&mut buf, *index, payload)?;
                locs.push(Loc { segment: name, offset, len: payload.len() as u32 });
            }
            segment.file.write_all_at(&buf, segment.size)?;
            segment.size += buf.len() as u64;
            Ok::<_, io::Error>(segment.file.clone())
        })();
        let file = match result {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(e),
            Err(e) => {
                self.poison(&mut state, &e);
                return Err(e);
            }
        };
        if state.locs.is_empty() {
            state.first = head;
            if state.synced_end < head {
                state.synced_end = head;
                self.publish(&state);
            }
        }
        state.locs.extend(locs);
        Ok(Some((file, state.end(), state.generation)))
    }

    /// Whether the next write starts a new segment while the last holds
    /// entries not on disk: the segment, the log's end and the generation.
    fn full_and_unsynced(&self) -> Option<(Arc<File>, u64, u64)> {
        let state = self.state.lock();
        state.unsynced_tail().filter(|_| state.starts_a_segment())
    }

    /// Whether the next append starts a new segment (creating and syncing a
    /// file: work for a thread that may block).
    pub(crate) fn starts_a_segment(&self) -> bool {
        self.state.lock().starts_a_segment()
    }

    /// Whether the caller must start a [`zero_ahead`](Self::zero_ahead) (on a
    /// thread that may block): the last segment is short of zeros written
    /// ahead of its records, and none is running. Marks one as running.
    pub(crate) fn zeros_due(&self) -> bool {
        let mut state = self.state.lock();
        let start = self.lock.is_some() && !state.zeroing && state.poisoned.is_none() && state.zeros_due();
        state.zeroing |= start;
        start
    }

    /// Writes zeros past the last segment's records until [`ZERO_AHEAD`]
    /// bytes of them are there (or the segment's end), then syncs them, for
    /// as long as the log is open: the background task
    /// [`zeros_due`](Self::zeros_due) asks for (see the [module docs](self)).
    /// Blocks on the disk.
    ///
    /// Each piece of zeros is written under the log's lock, past the records
    /// as they are then, so appends never meet it: no record is ever
    /// overwritten. The writes and the sync go through a file of this task's
    /// own (of the segment it was opened for: a segment deleted and made
    /// again under the same name is opened again), so a failed write-back of
    /// an append's blocks still reaches the append's own sync. A failure is
    /// logged and ends the zeroing of that segment; appends into its
    /// unwritten space go on as they did without zeros. A failed write-back
    /// of the zeros is reported to the segment's own next sync too, which
    /// then poisons the log as any failed sync does.
    ///
    /// Holds `wal` only for a piece or the sync: once the log is closed, the
    /// task ends, and the log's lock keeps a new instance from opening it
    /// while a piece is being written.
    pub(crate) fn zero_ahead(wal: &std::sync::Weak<Wal>) {
        let zeros = vec![0u8; ZERO_PIECE];
        // This task's file of the last segment, and that segment's own file
        // (to tell it from one made again under the same name).
        let mut own: Option<(Arc<File>, File)> = None;
        let mut wrote = false;
        let finish = |wal: &Wal, own: Option<(Arc<File>, File)>, wrote: bool| {
            if let Some((segment_file, file)) = own.filter(|_| wrote)
                && let Err(e) = file.sync_data()
            {
                tracing::warn!(error = %e, "could not sync the zeros written ahead in the raft log");
                if let Some(segment) =
                    wal.state.lock().segments.values_mut().find(|s| Arc::ptr_eq(&s.file, &segment_file))
                {
                    segment.zeroing_failed = true;
                }
            }
            wal.state.lock().zeroing = false;
        };
        loop {
            let Some(wal) = wal.upgrade() else { return };
            let over = {
                let mut state = wal.state.lock();
                let poisoned = state.poisoned.is_some();
                match state.segments.values_mut().next_back() {
                    Some(segment) if !poisoned => zero_piece(segment, &mut own, &mut wrote, &zeros),
                    _ => true,
                }
            };
            if over {
                return finish(&wal, own, wrote);
            }
        }
    }

    /// Syncs `file` (the last segment: the only one that may hold entries not
    /// yet on disk) outside the lock, so readers need not wait for the disk;
    /// then the log is on disk up to `end`, unless a truncation came in
    /// between (`generation`). A failure poisons the log.
    fn sync(&self, file: &File, end: u64, generation: u64) -> io::Result<()> {
        let _one = self.sync_lock.lock();
        let synced = file.sync_data();
        let mut state = self.state.lock();
        if let Err(e) = synced {
            self.poison(&mut state, &e);
            return Err(e);
        }
        state.refuse_if_poisoned()?;
        let end = end.min(state.end());
        if state.generation == generation && end > state.synced_end {
            state.synced_end = end;
            self.publish(&state);
        }
        Ok(())
    }

    /// Fails every later write with `e`, and tells the waiters.
    fn poison(&self, state: &mut State, e: &io::Error) {
        state.poisoned = Some(e.to_string());
        self.publish(state);
    }

    fn publish(&self, state: &State) {
        self.durable.send_replace(Durable { end: state.synced_end, failed: state.poisoned.clone() });
    }

    /// The segment the next append goes to: the last, or a new one named
    /// `head` once the last is full (synced first, so that only the last
    /// segment ever holds entries not on disk) or there is none.
    fn current_segment(&self, state: &mut State, head: u64) -> io::Result<u64> {
        if let Some((&name, segment)) = state.segments.iter().next_back() {
            if segment.size < SEGMENT_BYTES {
                return Ok(name);
            }
            if state.synced_end < state.end() {
                // `write` synced it first; reaching here would leave entries
                // not on disk in a segment that is no longer the last.
                return Err(io::Error::other("the full raft log segment holds entries not yet synced"));
            }
        }
        let path = self.dir.join(segment_name(head));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        file.write_all_at(MAGIC, 0)?;
        reserve(&file, MAGIC.len() as u64)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        let size = MAGIC.len() as u64;
        state
            .segments
            .insert(head, Segment { file: Arc::new(file), path, size, zeroed: size, zeroing_failed: false });
        Ok(head)
    }

    /// Removes the entries from `index` on (a follower's log that conflicts
    /// with its leader's), durably; what is left is all on disk afterwards.
    ///
    /// # Errors
    ///
    /// I/O errors, after which every write fails.
    pub(crate) fn truncate(&self, index: u64) -> io::Result<()> {
        let _one = self.sync_lock.lock();
        let mut state = self.state.lock();
        state.refuse_if_poisoned()?;
        let held = state.locs.len() as u64;
        if held == 0 || index >= state.end() {
            return Ok(());
        }
        let keep = index.saturating_sub(state.first);
        let cut = state.locs[keep as usize];
        // Later segments go first, newest first, and their deletion is made
        // durable before the cut: a crash midway leaves a longer log, never
        // one with a hole.
        let result = (|| {
            let later: Vec<u64> = state.segments.range(cut.segment + 1..).rev().map(|(&n, _)| n).collect();
            for name in &later {
                if let Some(segment) = state.segments.remove(name) {
                    fs::remove_file(&segment.path)?;
                }
            }
            if !later.is_empty() {
                sync_dir(&self.dir)?;
            }
            let segment =
                state.segments.get_mut(&cut.segment).ok_or_else(|| io::Error::other("no segment"))?;
            reserve(&segment.file, cut.offset)?;
            // (Its zeros written ahead went with the cut.)
            segment.zeroed = cut.offset;
            // Syncs the kept entries of the (now) last segment too: the
            // earlier ones were synced when the next segment began.
            segment.file.sync_data()?;
            segment.size = cut.offset;
            Ok::<_, io::Error>(())
        })();
        if let Err(e) = result {
            self.poison(&mut state, &e);
            return Err(e);
        }
        state.locs.truncate(keep as usize);
        // A flush running now synced entries that are gone: it must not
        // vouch for those appended in their place.
        state.generation += 1;
        state.synced_end = state.end();
        self.publish(&state);
        Ok(())
    }

    /// Forgets the entries up to and including `index` (the caller has
    /// recorded the purge mark durably first), and deletes the segments
    /// holding nothing else: [`forget_through`](Self::forget_through), then
    /// [`delete_segments`](Self::delete_segments).
    ///
    /// # Errors
    ///
    /// I/O errors deleting a segment (the entries are forgotten anyway: the
    /// purge mark skips them when the log is opened again).
    #[cfg(test)]
    pub(crate) fn purge(&self, index: u64) -> io::Result<()> {
        let unneeded = self.forget_through(index);
        self.delete_segments(&unneeded)
    }

    /// Forgets the entries up to and including `index`, and the segments
    /// holding nothing else, without touching the disk: the paths of those
    /// segments' files, to delete with [`delete_segments`](Self::delete_segments)
    /// once a purge mark at `index` or above is on disk (until then, a
    /// reopened log reads them again, and a gapless log it is).
    pub(crate) fn forget_through(&self, index: u64) -> Vec<PathBuf> {
        let mut state = self.state.lock();
        let held = state.locs.len() as u64;
        let drop = (index + 1).saturating_sub(state.first).min(held);
        state.locs.drain(..drop as usize);
        state.first = state.first.max(index + 1);
        // Only entries already applied, so on disk, are purged; a purge past
        // the end of the log moves the next append (and the mark) above it.
        if state.synced_end < state.first {
            state.synced_end = state.first;
            self.publish(&state);
        }
        // A segment can go when the next one starts at or below the first
        // entry still needed (the last segment always stays: appends go there).
        let names: Vec<u64> = state.segments.keys().copied().collect();
        let mut unneeded = Vec::new();
        for pair in names.windows(2) {
            if pair[1] > index + 1 {
                break;
            }
            if let Some(segment) = state.segments.remove(&pair[0]) {
                unneeded.push(segment.path);
            }
        }
        unneeded
    }

    /// Deletes the segment files `paths` ([`forget_through`](Self::forget_through)
    /// gave them; one already gone counts as deleted, so a retry after a
    /// failure is safe), then syncs the directory (when `paths` is not empty).
    ///
    /// # Errors
    ///
    /// The first I/O error deleting a file or syncing the directory; the
    /// files not deleted yet are left, to delete again.
    pub(crate) fn delete_segments(&self, paths: &[PathBuf]) -> io::Result<()> {
        for path in paths {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !paths.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    use std::sync::Arc;

    use super::{Durable, MAGIC, SEGMENT_BYTES, Wal, ZERO_AHEAD, data_len, lock_dir, segment_name};

    /// Makes the next append start a new segment, as if the last were full
    /// (a full segment's records run to its end: no zeros follow them).
    fn start_a_new_segment(wal: &Wal) {
        for segment in wal.state.lock().segments.values_mut() {
            segment.file.set_len(segment.size).unwrap();
            segment.size = SEGMENT_BYTES.max(segment.size);
        }
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("entry {i}").into_bytes())).collect()
    }

    fn read_all(wal: &Wal) -> Vec<String> {
        wal.read(0, u64::MAX).unwrap().into_iter().map(|b| String::from_utf8(b).unwrap()).collect()
    }

    fn durable_end(wal: &Wal) -> u64 {
        wal.durable().borrow().end
    }

    #[test]
    fn an_unsynced_append_reads_back_at_once_and_is_durable_only_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&entries(1..=2)).unwrap();
        assert_eq!(durable_end(&wal), 3, "a synced append is on disk when it returns");
        assert!(wal.append_unsynced(&entries(3..=4)).unwrap(), "the first unsynced append asks for a flush");
        assert!(!wal.append_unsynced(&entries(5..=5)).unwrap(), "one flush at a time");
        assert_eq!(wal.bounds(), Some((1, 5)));
        assert_eq!(wal.read(3, 6).unwrap().len(), 3, "replication reads entries not on disk yet");
        assert_eq!(durable_end(&wal), 3);
        wal.flush();
        assert_eq!(durable_end(&wal), 6);
        // The flush ended: the next unsynced append asks for another.
        assert!(wal.append_unsynced(&entries(6..=6)).unwrap());
        // A synced append covers the unsynced ones written before it.
        wal.append(&entries(7..=7)).unwrap();
        assert_eq!(durable_end(&wal), 8);
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 7)));
    }

    #[tokio::test]
    async fn waiters_are_released_by_the_flush_that_puts_their_entry_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let wal = std::sync::Arc::new(Wal::open(dir.path(), None).unwrap());
        wal.append(&entries(1..=1)).unwrap();
        let mut rx = wal.durable();
        Durable::wait_for(&mut rx, 1).await.unwrap();
        wal.append_unsynced(&entries(2..=3)).unwrap();
        let waiter = tokio::spawn(async move { Durable::wait_for(&mut rx, 3).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "entry 3 is not on disk yet");
        let flusher = wal.clone();
        tokio::task::spawn_blocking(move || flusher.flush()).await.unwrap();
        waiter.await.unwrap().unwrap();
        // A closed log releases its waiters with an error, never a false "on disk".
        let mut rx = wal.durable();
        drop(wal);
        assert!(Durable::wait_for(&mut rx, 10).await.is_err());
    }

    #[test]
    fn a_truncation_or_a_new_segment_puts_what_is_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append_unsynced(&entries(1..=4)).unwrap();
        wal.truncate(3).unwrap();
        assert_eq!(wal.bounds(), Some((1, 2)));
        assert_eq!(durable_end(&wal), 3);
        wal.append_unsynced(&entries(3..=3)).unwrap();
        start_a_new_segment(&wal);
        wal.append_unsynced(&entries(4..=4)).unwrap();
        assert_eq!(durable_end(&wal), 4, "the full segment was synced before the next began");
        wal.sync_all().unwrap();
        assert_eq!(durable_end(&wal), 5);
    }

    #[test]
    fn appended_entries_read_back_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), None);
        wal.append(&entries(1..=3)).unwrap();
        wal.append(&entries(4..=5)).unwrap();
        assert_eq!(wal.bounds(), Some((1, 5)));
        assert_eq!(wal.read(2, 4).unwrap(), vec![b"entry 2".to_vec(), b"entry 3".to_vec()]);
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 5)));
        assert_eq!(read_all(&wal).len(), 5);
    }

    #[test]
    fn an_append_that_does_not_follow_the_log_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&entries(1..=3)).unwrap();
        for bad in
            [entries(5..=6), entries(3..=4), vec![(4, b"a".to_vec()), (6, b"b".to_vec())], vec![(4, vec![])]]
        {
            let err = wal.append(&bad).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        }
        wal.append(&entries(4..=4)).unwrap();
        assert_eq!(wal.bounds(), Some((1, 4)));
    }

    /// The last segment's size, how far zeros are written, and how much of
    /// its file holds data before the hole that ends it.
    fn last_segment(wal: &Wal) -> (u64, u64, u64) {
        let state = wal.state.lock();
        let last = state.segments.values().next_back().unwrap();
        (last.size, last.zeroed, data_len(&std::fs::File::open(&last.path).unwrap()).unwrap())
    }

    #[test]
    fn zeros_are_written_ahead_of_the_records_and_read_back_as_unwritten_space() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), None).unwrap());
        assert!(!wal.zeros_due(), "no segment yet");
        wal.append(&entries(1..=3)).unwrap();
        assert!(wal.zeros_due(), "a new segment has no zeros ahead");
        assert!(!wal.zeros_due(), "one zeroing at a time");
        let (size, zeroed, data) = last_segment(&wal);
        assert_eq!(
            (zeroed.max(size), data <= size.next_multiple_of(4096)),
            (size, true),
            "a hole after the records"
        );
        Wal::zero_ahead(&Arc::downgrade(&wal));
        let (size, zeroed, data) = last_segment(&wal);
        assert_eq!(zeroed, size + ZERO_AHEAD);
        assert!(data >= zeroed, "the zeros are written, not a hole: {data} < {zeroed}");
        assert!(!wal.zeros_due(), "enough zeros ahead");
        wal.append(&entries(4..=5)).unwrap();
        assert_eq!(read_all(&wal).len(), 5);
        drop(wal);
        // Reopened, the zeros past the records are unwritten space again.
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(
            read_all(&wal),
            entries(1..=5).into_iter().map(|(i, _)| format!("entry {i}")).collect::<Vec<_>>()
        );
        let (size, zeroed, data) = last_segment(&wal);
        assert_eq!((zeroed, data <= size.next_multiple_of(4096)), (size, true));
        assert!(zeros_from(&dir.path().join(segment_name(1)), size));
    }

    /// Disk blocks (512 bytes) the file at `path` takes.
    fn blocks(path: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks()
    }

    #[test]
    fn an_open_log_is_locked_and_a_closed_log_s_zeroing_writes_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("raft-wal");
        let wal = Arc::new(Wal::open(&dir, None).unwrap());
        wal.append(&entries(1..=1)).unwrap();
        assert!(parent.path().join("raft-wal.lock").exists(), "the lock file is beside the directory");
        let err = lock_dir(&dir, std::time::Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(wal.zeros_due());
        let segment = dir.join(segment_name(1));
        let before = blocks(&segment);
        let weak = Arc::downgrade(&wal);
        drop(wal);
        // The log is closed: nothing is written, and the lock is free.
        Wal::zero_ahead(&weak);
        assert_eq!(blocks(&segment), before, "no zeros were written after the log closed");
        assert!(lock_dir(&dir, std::time::Duration::ZERO).unwrap().is_some());
        // Opened again, by the next instance.
        assert_eq!(Wal::open(&dir, None).unwrap().bounds(), Some((1, 1)));
    }

    #[test]
    fn a_torn_append_in_zeros_written_ahead_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), None).unwrap());
        wal.append(&entries(1..=3)).unwrap();
        assert!(wal.zeros_due());
        Wal::zero_ahead(&Arc::downgrade(&wal));
        let (size, zeroed, _) = last_segment(&wal);
        assert!(zeroed > size + 4096);
        drop(wal);
        // A crash left the first sector of entry 4's record, in the zeros.
        let path = dir.path().join(segment_name(1));
        let record = record_of_4(2000);
        let first_sector = 512 - (size as usize % 512);
        write_bytes(&path, size, &record[..first_sector]);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 3)), "the torn append is cut off");
        assert!(zeros_from(&path, size));
        wal.append(&entries(4..=4)).unwrap();
        drop(wal);
        assert_eq!(read_all(&Wal::open(dir.path(), None).unwrap()).len(), 4);
    }

    /// Appends (of entries large enough to pass several rounds of zeros),
    /// truncations and a new segment, each starting a zeroing on a thread of
    /// its own as the log store does, racing them: every entry reads back,
    /// before and after a reopen.
    #[test]
    fn zeros_written_ahead_never_overwrite_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Wal::open(dir.path(), None).unwrap());
        let payload = |i: u64, round: u64| {
            let mut bytes = format!("entry {i} round {round} ").into_bytes();
            bytes.resize(1 + (i as usize * 7919) % 12_000, b'x');
            bytes
        };
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let mut zeroers = Vec::new();
        for round in 0..400u64 {
            if round % 50 == 49 {
                // A follower's log cut back by its leader.
                let cut = expected.len() as u64 - 5;
                wal.truncate(cut + 1).unwrap();
                expected.truncate(cut as usize);
            }
            if round == 200 {
                start_a_new_segment(&wal);
            }
            let next = expected.len() as u64 + 1;
            let batch: Vec<(u64, Vec<u8>)> = (next..next + 3).map(|i| (i, payload(i, round))).collect();
            expected.extend(batch.iter().map(|(_, p)| p.clone()));
            wal.append(&batch).unwrap();
            if wal.zeros_due() {
                let weak = Arc::downgrade(&wal);
                zeroers.push(std::thread::spawn(move || Wal::zero_ahead(&weak)));
            }
        }
        for zeroer in zeroers {
            zeroer.join().unwrap();
        }
        assert_eq!(wal.read(1, u64::MAX).unwrap(), expected);
        assert!(last_segment(&wal).1 > last_segment(&wal).0, "zeros were written ahead");
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.read(1, u64::MAX).unwrap(), expected);
    }

    /// A log of entries 1 and 2 in a full segment and 3 in the next; the
    /// first segment's path.
    fn two_segments(dir: &std::path::Path) -> std::path::PathBuf {
        let wal = Wal::open(dir, None).unwrap();
        wal.append(&entries(1..=2)).unwrap();
        start_a_new_segment(&wal);
        wal.append(&entries(3..=3)).unwrap();
        dir.join(segment_name(1))
    }

    /// The last segment of a log holding entries 1 to 3, and where its
    /// records end.
    fn three_entries(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
        let wal = Wal::open(dir, None).unwrap();
        wal.append(&entries(1..=3)).unwrap();
        let written = wal.state.lock().segments[&1].size;
        drop(wal);
        (dir.join(segment_name(1)), written)
    }

    /// Writes `bytes` at `at` in the segment at `path` (an append a crash
    /// interrupted, or damage).
    fn write_bytes(path: &std::path::Path, at: u64, bytes: &[u8]) {
        OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
    }

    /// Whether the segment at `path` holds nothing but zeros from `from` on,
    /// to its full length.
    fn zeros_from(path: &std::path::Path, from: u64) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.len() as u64 == SEGMENT_BYTES && bytes[from as usize..].iter().all(|&b| b == 0)
    }

    /// The record of entry 4 with a payload of `len` bytes of 7s.
    fn record_of_4(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        super::encode_record(&mut out, 4, &vec![7; len]).unwrap();
        out
    }

    #[test]
    fn a_last_append_cut_short_by_the_end_of_the_file_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = three_entries(dir.path());
        assert!(zeros_from(&path, whole), "a segment is created at its full length, zeros after its records");
        // Cut short by the end of the file: as a segment written before
        // segments were created at their full length.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(whole).unwrap();
        write_bytes(&path, whole, &record_of_4(2_000)[..700]);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 3)));
        assert!(zeros_from(&path, whole), "cut off, and the segment back at its full length");
        wal.append(&entries(4..=4)).unwrap();
        drop(wal);
        assert_eq!(read_all(&Wal::open(dir.path(), None).unwrap()).last().unwrap(), "entry 4");
    }

    #[test]
    fn a_last_append_with_a_sector_never_written_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = three_entries(dir.path());
        // The whole record's length is on disk, but its later sectors are zeros.
        let mut torn = record_of_4(2_000);
        torn[1_100..].fill(0);
        write_bytes(&path, whole, &torn);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 3)));
        assert!(zeros_from(&path, whole));
        // Or only a later sector of it reached the disk (a length of zero).
        drop(wal);
        write_bytes(&path, whole + 1_024, &[7; 100]);
        assert_eq!(Wal::open(dir.path(), None).unwrap().bounds(), Some((1, 3)));
        assert!(zeros_from(&path, whole));
    }

    #[test]
    fn a_whole_record_failing_its_checksum_at_the_end_of_the_last_segment_is_damage_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = three_entries(dir.path());
        // A flipped bit in entry 3, acknowledged: cutting it off would lose it.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = whole as usize - 2;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing is cut");
    }

    #[test]
    fn a_last_record_with_an_unreadable_length_and_every_sector_written_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = three_entries(dir.path());
        // A length beyond any entry over a whole record: a flipped bit, not a
        // write the disk never finished, though the segment's zeros follow.
        let mut record = record_of_4(2_000);
        record[3] = 0xff;
        write_bytes(&path, whole, &record);
        let err = Wal::open(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("more than any entry"), "{err}");
    }

    #[test]
    fn a_first_entry_that_does_not_follow_the_purge_mark_is_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&entries(7..=9)).unwrap();
        drop(wal);
        let err = Wal::open(dir.path(), Some(5)).unwrap_err();
        assert!(err.to_string().contains("entry 7 where entry 6 was due"), "{err}");
        assert_eq!(Wal::open(dir.path(), Some(6)).unwrap().bounds(), Some((7, 9)));
        assert_eq!(Wal::open(dir.path(), Some(7)).unwrap().bounds(), Some((8, 9)));
    }

    #[test]
    fn a_file_in_the_log_s_directory_that_is_not_a_segment_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        three_entries(dir.path());
        std::fs::write(dir.path().join("1.wal"), MAGIC).unwrap();
        let err = Wal::open(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("1.wal"), "{err}");
    }

    #[test]
    fn a_flipped_bit_in_an_acknowledged_record_of_an_earlier_segment_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = two_segments(dir.path());
        let mut bytes = std::fs::read(&first).unwrap();
        let at = MAGIC.len() + 20;
        bytes[at] ^= 1;
        std::fs::write(&first, &bytes).unwrap();
        let err = Wal::open(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&segment_name(1)), "{err}");
    }

    /// A log opened in `dir` holding entries 1 to 4 in one segment and 5 to
    /// 8 in the next.
    fn eight_in_two_segments(dir: &std::path::Path) -> Wal {
        let wal = Wal::open(dir, None).unwrap();
        wal.append(&entries(1..=4)).unwrap();
        start_a_new_segment(&wal);
        wal.append(&entries(5..=8)).unwrap();
        wal
    }

    #[test]
    fn truncation_removes_the_tail_across_segments_durably() {
        let dir = tempfile::tempdir().unwrap();
        let wal = eight_in_two_segments(dir.path());
        wal.truncate(3).unwrap();
        assert_eq!(wal.bounds(), Some((1, 2)));
        assert!(!dir.path().join(segment_name(5)).exists(), "the later segment is deleted");
        wal.append(&[(3, b"other 3".to_vec())]).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(read_all(&wal), vec!["entry 1", "entry 2", "other 3"]);
    }

    #[test]
    fn a_purge_forgets_entries_deletes_whole_segments_and_lets_the_log_restart_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = eight_in_two_segments(dir.path());
        wal.purge(6).unwrap();
        assert_eq!(wal.bounds(), Some((7, 8)));
        assert!(!dir.path().join(segment_name(1)).exists());
        assert!(dir.path().join(segment_name(5)).exists(), "it still holds 7 and 8");
        // A snapshot far ahead: everything goes, the log starts again right
        // above it (and only there: a later start would be a hole).
        wal.purge(100).unwrap();
        assert_eq!(wal.bounds(), None);
        let err = wal.append(&entries(102..=102)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        wal.append(&entries(101..=102)).unwrap();
        drop(wal);
        // The caller's purge mark skips what the kept segment still holds.
        let wal = Wal::open(dir.path(), Some(100)).unwrap();
        assert_eq!(wal.bounds(), Some((101, 102)));
        assert_eq!(read_all(&wal), vec!["entry 101", "entry 102"]);
    }

    #[test]
    fn forgotten_segments_stay_on_disk_until_deleted_and_a_reopened_log_reads_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let wal = eight_in_two_segments(dir.path());
        let unneeded = wal.forget_through(6);
        assert_eq!(unneeded, vec![dir.path().join(segment_name(1))]);
        assert_eq!(wal.bounds(), Some((7, 8)));
        assert!(unneeded[0].exists(), "forgetting touches no file");
        // A crash before the purge mark was on disk: the older mark (none)
        // and every entry, gapless.
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 8)));
        // Deleted once the mark is down; a file already gone counts as deleted.
        let unneeded = wal.forget_through(6);
        wal.delete_segments(&unneeded).unwrap();
        wal.delete_segments(&unneeded).unwrap();
        assert!(!unneeded[0].exists());
        drop(wal);
        assert_eq!(read_all(&Wal::open(dir.path(), Some(6)).unwrap()), vec!["entry 7", "entry 8"]);
    }

    #[test]
    fn blocks_of_an_append_never_acknowledged_beyond_a_hole_are_cleared_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, whole) = three_entries(dir.path());
        // Written back out of order before a crash: a later block of the
        // append reached the disk, the block before it never did (a hole).
        write_bytes(&path, whole + 16_384, &record_of_4(2_000));
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 3)));
        assert!(zeros_from(&path, whole), "nothing past the records is left for later appends to meet");
        wal.append(&entries(4..=9)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir.path(), None).unwrap().bounds(), Some((1, 9)));
    }

    #[test]
    fn zeros_after_the_records_of_an_earlier_segment_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let first = two_segments(dir.path());
        // Every record of the first segment zeroed out: a full segment's
        // records run to its end, so this is not space never written (and
        // the log must not start at entry 3).
        let len = std::fs::metadata(&first).unwrap().len();
        write_bytes(&first, MAGIC.len() as u64, &vec![0; (len as usize) - MAGIC.len()]);
        let err = Wal::open(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(&segment_name(1)), "{err}");
    }

    #[test]
    fn a_segment_created_but_not_written_before_a_crash_is_taken_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&entries(1..=2)).unwrap();
        start_a_new_segment(&wal);
        drop(wal);
        std::fs::write(dir.path().join(segment_name(3)), &MAGIC[..3]).unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 2)));
        drop(wal);
        // Or its header reads back as zeros.
        std::fs::write(dir.path().join(segment_name(3)), [0; 8]).unwrap();
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), Some((1, 2)));
        wal.append(&entries(3..=3)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(dir.path(), None).unwrap().bounds(), Some((1, 3)));
    }
}
