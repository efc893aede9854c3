//! Two slots (`state.a`, `state.b`) with a generation counter, written by temp file + fsync + rename + dir fsync.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{self, CRC_LEN, DEFAULT_MAX_PAYLOAD, FORMAT_VERSION, HEADER_LEN};
use super::{Corruption, LearnerState};
use edgelearn_core::error::{Error, Result};

/// One of the two state slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `state.a`.
    A,
    /// `state.b`.
    B,
}

impl Slot {
    /// Both slots, A first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// File name of the slot inside the store directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Slot::A => "state.a",
            Slot::B => "state.b",
        }
    }

    /// File name of the slot's temporary file (never read by [`StateStore::load`]).
    pub fn tmp_name(self) -> &'static str {
        match self {
            Slot::A => "state.a.tmp",
            Slot::B => "state.b.tmp",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// What [`StateStore::load`] found in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotStatus {
    /// No file.
    Missing,
    /// A valid state of this generation.
    Valid {
        /// Its generation.
        generation: u64,
    },
    /// A file that is not a valid state (ignored, reported).
    Corrupt(Corruption),
    /// A valid frame with a format version newer than this build reads.
    Newer {
        /// The file's format version.
        version: u16,
        /// The file's generation.
        generation: u64,
    },
    /// A valid frame with an older format version this build cannot read (ignored, reported).
    Older {
        /// The file's format version.
        version: u16,
    },
    /// The file exists but could not be read (I/O error); ignored, reported.
    Unreadable(String),
}

/// One slot's diagnostic line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// Which slot.
    pub slot: Slot,
    /// What was found there.
    pub status: SlotStatus,
}

impl SlotReport {
    /// True when the slot holds a file that could not be used (corrupt, older format or unreadable).
    pub fn is_bad(&self) -> bool {
        matches!(self.status, SlotStatus::Corrupt(_) | SlotStatus::Older { .. } | SlotStatus::Unreadable(_))
    }
}

/// The state chosen by [`StateStore::load`], with what was found in both slots.
#[derive(Debug, Clone)]
pub struct LoadedState {
    /// The newest valid state.
    pub state: LearnerState,
    /// The slot it came from.
    pub slot: Slot,
    /// Both slots' diagnostics (A then B); check [`SlotReport::is_bad`] to learn about a corrupt slot.
    pub reports: Vec<SlotReport>,
}

impl LoadedState {
    /// Its generation.
    pub fn generation(&self) -> u64 {
        self.state.generation
    }
}

/// The committed head: which slot holds the newest valid state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    slot: Slot,
    generation: u64,
}

/// Where a commit can be made to fail (tests inject failures through `StateStore::fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum FailPoint {
    /// Before the temp file is created.
    Create,
    /// After half of the bytes were written to the temp file.
    MidWrite,
    /// After the temp file was written and synced, before the rename.
    Rename,
    /// After the rename, before the directory sync.
    DirSync,
}

/// A directory holding the two state slots. Single writer: one process owns a store directory at a time.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    max_payload: usize,
    /// `None` until a scan succeeded (and again after a failed commit): the next commit rescans first.
    head: Option<Option<Head>>,
    #[cfg(test)]
    pub(crate) fail: Option<FailPoint>,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl StateStore {
    /// Open (creating if needed) a store directory, with the default payload limit.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with_limit(dir, DEFAULT_MAX_PAYLOAD)
    }

    /// Open (creating if needed) a store directory; states whose payload exceeds `max_payload` bytes are neither
    /// written nor read (a file that large is reported as corrupt without being read).
    pub fn open_with_limit(dir: impl Into<PathBuf>, max_payload: usize) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(format!("creating state directory {}", dir.display())))?;
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            sync_dir(parent)?;
        }
        Ok(Self {
            dir,
            max_payload,
            head: None,
            #[cfg(test)]
            fail: None,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a slot's file.
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(slot.file_name())
    }

    /// The payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Read one slot: its status and, when valid, the state.
    pub fn read_slot(&self, slot: Slot) -> (SlotStatus, Option<LearnerState>) {
        let path = self.slot_path(slot);
        let bytes = match read_capped(&path, ((HEADER_LEN + CRC_LEN) as u64).saturating_add(self.max_payload as u64)) {
            Ok(Some(b)) => b,
            Ok(None) => return (SlotStatus::Missing, None),
            Err(ReadErr::TooLarge(len)) => {
                return (SlotStatus::Corrupt(Corruption::TooLarge { len, max: self.max_payload as u64 }), None);
            }
            Err(ReadErr::Io(e)) => return (SlotStatus::Unreadable(e.to_string()), None),
        };
        match format::decode(&bytes, self.max_payload) {
            Ok(state) => (SlotStatus::Valid { generation: state.generation }, Some(state)),
            Err(Error::UnsupportedVersion { found, .. }) if found > FORMAT_VERSION => {
                // The frame verified (decode checks it before the version), so this header is trustworthy.
                let generation = format::read_frame(&bytes, self.max_payload).map_or(0, |h| h.generation);
                (SlotStatus::Newer { version: found, generation }, None)
            }
            Err(Error::UnsupportedVersion { found, .. }) => (SlotStatus::Older { version: found }, None),
            Err(Error::CorruptState(c)) => (SlotStatus::Corrupt(c), None),
            Err(other) => (SlotStatus::Corrupt(Corruption::Inconsistent(other.to_string())), None),
        }
    }

    /// Load the newest valid state.
    ///
    /// - no slot file at all → `Ok(None)` (a fresh device);
    /// - a corrupt (or unreadable, or older-format) slot is logged with `tracing::warn`, listed in
    ///   [`LoadedState::reports`], and the other slot is used;
    /// - every existing slot corrupt → [`Error::NoValidState`];
    /// - any slot holding a newer format version → [`Error::UnsupportedVersion`], even when the other slot is
    ///   valid: falling back would silently roll the device back to older state. Nothing is changed on disk.
    pub fn load(&mut self) -> Result<Option<LoadedState>> {
        let mut reports = Vec::with_capacity(2);
        let mut best: Option<(Slot, LearnerState)> = None;
        for slot in Slot::ALL {
            let (status, state) = self.read_slot(slot);
            if let Some(state) = state
                && best.as_ref().is_none_or(|(_, b)| state.generation > b.generation)
            {
                best = Some((slot, state));
            }
            reports.push(SlotReport { slot, status });
        }
        for r in &reports {
            if let SlotStatus::Newer { version, generation } = r.status {
                tracing::error!(slot = %r.slot, version, generation, supported = FORMAT_VERSION,
                    "state written by a newer firmware; refusing to load or overwrite it");
                return Err(Error::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
            }
        }
        for r in reports.iter().filter(|r| r.is_bad()) {
            tracing::warn!(slot = %r.slot, status = ?r.status, "state slot unusable; ignored");
        }
        if let [
            SlotReport { status: SlotStatus::Valid { generation: a }, .. },
            SlotReport { status: SlotStatus::Valid { generation: b }, .. },
        ] = reports.as_slice()
            && a == b
        {
            tracing::warn!(generation = a, "both state slots hold the same generation; using state.a");
        }
        match best {
            Some((slot, state)) => {
                self.head = Some(Some(Head { slot, generation: state.generation }));
                tracing::info!(%slot, generation = state.generation, "state loaded");
                Ok(Some(LoadedState { state, slot, reports }))
            }
            None if reports.iter().all(|r| r.status == SlotStatus::Missing) => {
                self.head = Some(None);
                Ok(None)
            }
            None => {
                let what = reports.iter().map(|r| format!("{}: {:?}", r.slot, r.status)).collect::<Vec<_>>();
                Err(Error::NoValidState(what.join("; ")))
            }
        }
    }

    /// Generation of the newest committed state, if the store knows it (after a `load` or `commit`).
    pub fn generation(&self) -> Option<u64> {
        self.head.flatten().map(|h| h.generation)
    }

    /// Commit `state` as generation `last + 1` (1 for the first commit) into the slot that does not hold the
    /// newest valid state; sets `state.generation` and returns it.
    ///
    /// Protocol: write `state.X.tmp`, fsync it, rename it over `state.X`, fsync the directory. At every point a
    /// crash leaves either the previous state or the new one loadable, never a mix; a failed commit returns an
    /// error and leaves the previous state loadable (and `state.generation` unchanged). When the store has not
    /// been loaded yet it scans the slots first, and refuses (like [`StateStore::load`]) when they hold a newer
    /// format or only corrupt files — use [`StateStore::reset`] to start over deliberately.
    pub fn commit(&mut self, state: &mut LearnerState) -> Result<u64> {
        let head = match self.head {
            Some(h) => h,
            None => {
                self.load()?;
                self.head.flatten()
            }
        };
        let generation = head.map_or(Some(1), |h| h.generation.checked_add(1)).ok_or_else(|| {
            Error::Config("state generation counter exhausted".into()) // 2^64 commits: unreachable in practice
        })?;
        let target = head.map_or(Slot::A, |h| h.slot.other());
        state.validate()?;
        let previous = state.generation;
        state.generation = generation;
        let bytes = match format::encode(state, self.max_payload) {
            Ok(b) => b,
            Err(e) => {
                state.generation = previous;
                return Err(e);
            }
        };
        if let Err(e) = self.write_slot(target, &bytes) {
            state.generation = previous;
            self.head = None;
            let _ = fs::remove_file(self.dir.join(target.tmp_name()));
            return Err(e);
        }
        self.head = Some(Some(Head { slot: target, generation }));
        tracing::debug!(slot = %target, generation, bytes = bytes.len(), "state committed");
        Ok(generation)
    }

    /// Delete both slots (and temp files): the next commit starts again at generation 1. This is the explicit
    /// "factory reset" way out of [`Error::NoValidState`] or [`Error::UnsupportedVersion`].
    pub fn reset(&mut self) -> Result<()> {
        for slot in Slot::ALL {
            for name in [slot.file_name(), slot.tmp_name()] {
                let path = self.dir.join(name);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
                }
            }
        }
        sync_dir(&self.dir)?;
        self.head = Some(None);
        Ok(())
    }

    fn write_slot(&self, slot: Slot, bytes: &[u8]) -> Result<()> {
        replace_durably(&self.dir.join(slot.tmp_name()), &self.slot_path(slot), &self.dir, bytes, |at| self.fail_at(at))
    }

    #[cfg(test)]
    fn fail_at(&self, at: FailPoint) -> Result<()> {
        if self.fail == Some(at) { Err(injected("committing")) } else { Ok(()) }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn fail_at(&self, _at: FailPoint) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
fn injected(what: &str) -> Error {
    Error::Io { context: format!("{what} (injected failure)"), source: io::Error::other("injected") }
}

enum ReadErr {
    TooLarge(u64),
    Io(io::Error),
}

/// Read a whole file unless it is longer than `max` bytes; `Ok(None)` when it does not exist.
fn read_capped(path: &Path, max: u64) -> std::result::Result<Option<Vec<u8>>, ReadErr> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadErr::Io(e)),
    };
    let len = f.metadata().map_err(ReadErr::Io)?.len();
    if len > max {
        return Err(ReadErr::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    // `take` guards against a file that grew after the metadata call.
    f.take(max.saturating_add(1)).read_to_end(&mut buf).map_err(ReadErr::Io)?;
    if buf.len() as u64 > max {
        return Err(ReadErr::TooLarge(buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Write `bytes` to `path` so that a power cut leaves either the old file (or none) or the whole new one: write
/// `path.tmp`, fsync it, rename it over `path`, fsync the folder. Creates the parent folders. The same sequence as
/// a state slot's commit, for files outside the A/B store (exported ONNX models, the fleet merger's updates).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    replace_durably(&std::path::PathBuf::from(tmp), path, dir, bytes, |_| Ok(()))
}

/// The one durable write of the crate (a state slot's commit, [`write_durable`]): write `bytes` to `tmp`, fsync
/// it, rename it over `dst`, fsync `dir` (the folder of both). `fail` is asked at each [`FailPoint`] and stops the
/// write where it fails (the store's tests inject failures there; everywhere else it never fails).
fn replace_durably(
    tmp: &Path,
    dst: &Path,
    dir: &Path,
    bytes: &[u8],
    fail: impl Fn(FailPoint) -> Result<()>,
) -> Result<()> {
    fail(FailPoint::Create)?;
    let mut f = File::create(tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    #[cfg(test)]
    if fail(FailPoint::MidWrite).is_err() {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        return Err(injected("writing"));
    }
    f.write_all(bytes).map_err(io_err(format!("writing {}", tmp.display())))?;
    f.sync_all().map_err(io_err(format!("syncing {}", tmp.display())))?;
    drop(f);
    fail(FailPoint::Rename)?;
    fs::rename(tmp, dst).map_err(io_err(format!("renaming {} to {}", tmp.display(), dst.display())))?;
    fail(FailPoint::DirSync)?;
    sync_dir(dir)
}

/// Remove `path` durably: unlink, then fsync its folder (a power cut afterwards does not bring it back). A file
/// already gone is not an error.
pub fn remove_durable(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { context: format!("removing {}", path.display()), source }),
    }
    sync_dir(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// fsync a directory so that a rename (or create/remove) inside it is durable. A no-op where directories
/// cannot be opened as files (not Unix).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(io_err(format!("opening directory {}", dir.display())))?;
        d.sync_all().map_err(io_err(format!("syncing directory {}", dir.display())))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
