//! Kill test of the state store: a child process (`state_churn`) commits state in a loop; it is SIGKILLed at
//! random moments over at least 100 cycles (the kill window adapts to the machine's speed), and after every kill
//! the store must load the last committed state intact: CRC ok, generation never below what the child
//! acknowledged and never decreasing, content exactly the deterministic state of that generation, and no slot
//! ever corrupt (a half-written temp file is never used).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firmware::store::{Slot, SlotStatus, StateStore, fixture};

const CYCLES: usize = 100;
/// Commits the run must reach to exercise the protocol. On a loaded machine the child may spend a whole sleep
/// window starting up, so cycles go on past `CYCLES` until this many commits (bounded by `MAX_CYCLES`).
const MIN_COMMITS: u64 = CYCLES as u64 / 2;
/// Upper bound on cycles, so a machine where the child never commits fails instead of looping.
const MAX_CYCLES: usize = 10 * CYCLES;
/// State size: ~400 bytes per unit, so ~200 KB per commit (long enough for kills to land mid-write).
const SCALE: usize = 500;

#[test]
fn sigkill_at_random_moments_never_loses_or_tears_committed_state() {
    let exe = env!("CARGO_BIN_EXE_state_churn");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kill-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seed = std::env::var("KILL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = integration::SplitMix(seed);
    let started = Instant::now();

    let mut last_loaded = 0u64;
    let (mut unacknowledged, mut tmp_left, mut no_progress) = (0, 0, 0);
    let mut cycle = 0;
    // The kill lands uniformly in [0, window]. On a loaded machine a 30 ms window can end before the child has
    // started, so a cycle without a new commit widens it by half (up to 2 s) and one with a commit narrows it back
    // by a fifth (down to 30 ms): kills stay spread over start-up, writes, renames and acknowledgements.
    let mut window_us = 30_000u64;
    while cycle < CYCLES || (last_loaded < MIN_COMMITS && cycle < MAX_CYCLES) {
        cycle += 1;
        let mut child = Command::new(exe)
            .arg(&dir)
            .arg(SCALE.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn state_churn");
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            // Lines are whole once the child has flushed them; a line cut by the kill does not parse.
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("committed ").and_then(|g| g.parse::<u64>().ok()))
                .last()
        });
        std::thread::sleep(Duration::from_micros(rng.next_u64() % (window_us + 1)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        let acked = reader.join().expect("reader thread");
        if status.signal() != Some(9) {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
            panic!("cycle {cycle}: state_churn ended on its own ({status}): {err}");
        }

        let tmp_present = Slot::ALL.iter().any(|s| dir.join(s.tmp_name()).exists());
        tmp_left += usize::from(tmp_present);
        let mut store = StateStore::open(&dir).expect("open store");
        let loaded = store.load().unwrap_or_else(|e| panic!("cycle {cycle}: load failed after a kill: {e}"));
        let Some(loaded) = loaded else {
            assert_eq!((acked, last_loaded), (None, 0), "cycle {cycle}: committed state vanished");
            no_progress += 1;
            window_us = (window_us * 3 / 2).min(2_000_000);
            continue;
        };
        let g = loaded.generation();
        for r in &loaded.reports {
            assert!(!r.is_bad(), "cycle {cycle}: slot {} unusable after a kill: {:?}", r.slot, r.status);
        }
        assert!(g >= last_loaded, "cycle {cycle}: generation went back from {last_loaded} to {g}");
        if let Some(a) = acked {
            assert!(g >= a, "cycle {cycle}: acknowledged generation {a} lost (loaded {g})");
            assert!(g <= a + 1, "cycle {cycle}: loaded {g}, more than one commit past the acknowledged {a}");
            unacknowledged += usize::from(g == a + 1);
        } else {
            assert!(g <= last_loaded + 1, "cycle {cycle}: loaded {g}, previous {last_loaded}, nothing acknowledged");
            no_progress += usize::from(g == last_loaded);
        }
        window_us = if g == last_loaded { (window_us * 3 / 2).min(2_000_000) } else { (window_us * 4 / 5).max(30_000) };
        assert!(
            loaded.state == fixture::synthetic(g, SCALE),
            "cycle {cycle}: generation {g} loaded with content that is not the state committed as {g}"
        );
        // The other slot holds the previous commit, intact, or nothing before the second commit.
        let (other_status, other) = store.read_slot(loaded.slot.other());
        if g == 1 {
            assert_eq!(other_status, SlotStatus::Missing, "cycle {cycle}");
        } else {
            assert_eq!(other_status, SlotStatus::Valid { generation: g - 1 }, "cycle {cycle}");
            assert!(other == Some(fixture::synthetic(g - 1, SCALE)), "cycle {cycle}: previous slot content");
        }
        last_loaded = g;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "kill test: {cycle} kills in {elapsed:.1?} (last window {window_us} µs); final generation {last_loaded}; {unacknowledged} kills \
         between a rename and its acknowledgement; {tmp_left} kills left a temp file (killed mid-write); \
         {no_progress} cycles without a new commit"
    );
    assert!(last_loaded >= MIN_COMMITS, "too few commits ({last_loaded}) in {cycle} cycles to exercise the protocol");
    let _ = std::fs::remove_dir_all(&dir);
}
