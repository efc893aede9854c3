//! A board's outbox: the update frames it has committed and not yet seen merged into a fleet model, one file
//! per generation in a folder beside the state store (`<state>/fleet-outbox/<generation, 20 digits>.elfu`).
//!
//! The daemon writes a task's frame durably *before* it commits the task's state, with the generation the commit
//! will get, and the publisher sends only frames whose generation is committed. So:
//! - a power cut after the frame and before the commit leaves a frame of a generation the store never reached: it
//!   is deleted on the next start ([`discard_uncommitted`]) and never sent;
//! - a power cut after the commit leaves the frame: it is sent after the restart;
//! - a frame is deleted only when a fleet model lists it as merged ([`super::client`]); until then it is sent
//!   again on every new connection, and the merger, which is idempotent on `(device, generation)`, counts it once.
//!
//! A board offline keeps its frames (one per learned task) until the broker is back.

use std::path::{Path, PathBuf};

use edgelearn_core::error::{Error, Result};
use edgelearn_store::{remove_durable, write_durable};

/// The outbox folder of a state store folder.
pub fn dir_of(state: &Path) -> PathBuf {
    state.join("fleet-outbox")
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.elfu")
}

/// Write the frame of `generation` durably (replacing a frame of the same generation: a task re-learned after a
/// failed commit).
pub fn put(dir: &Path, generation: u64, frame: &[u8]) -> Result<()> {
    write_durable(&dir.join(file_name(generation)), frame)
}

/// The frames waiting, oldest generation first. Files that are not outbox frames (a temp file of an interrupted
/// write) are ignored.
pub fn pending(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { context: format!("reading {}", dir.display()), source }),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| Error::Io { context: format!("reading {}", dir.display()), source })?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".elfu")) else { continue };
        if let Ok(g) = stem.parse::<u64>()
            && stem.len() == 20
        {
            out.push((g, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Delete the frames of generations above `committed` (written before a commit that never happened); returns
/// how many.
pub fn discard_uncommitted(dir: &Path, committed: u64) -> Result<usize> {
    let mut n = 0;
    for (g, path) in pending(dir)? {
        if g > committed {
            tracing::warn!(generation = g, committed, "outbox: an update of a task that was never committed; deleted");
            remove_durable(&path)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Delete a frame a fleet model showed merged.
pub fn remove(path: &Path) -> Result<()> {
    remove_durable(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_wait_in_generation_order_and_uncommitted_ones_are_dropped() {
        let dir = std::env::temp_dir().join(format!("outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(pending(&dir).unwrap().is_empty(), "no folder: nothing waits");
        for g in [12u64, 3, 7] {
            put(&dir, g, &[g as u8]).unwrap();
        }
        std::fs::write(dir.join("00000000000000000009.elfu.tmp"), b"half").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        assert_eq!(pending(&dir).unwrap().iter().map(|(g, _)| *g).collect::<Vec<_>>(), [3, 7, 12]);
        assert_eq!(discard_uncommitted(&dir, 7).unwrap(), 1);
        let left = pending(&dir).unwrap();
        assert_eq!(left.iter().map(|(g, _)| *g).collect::<Vec<_>>(), [3, 7]);
        remove(&left[0].1).unwrap();
        remove(&left[0].1).unwrap();
        assert_eq!(std::fs::read(&pending(&dir).unwrap()[0].1).unwrap(), [7]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
