//! Kill test of the device daemon: 50 learn/commit cycles driven over the protocol (pty pair), each with new
//! real MNIST photos dropped into the inbox, and the daemon SIGKILLed at a random moment after the learn request
//! (while it trains, commits, moves the photos, or after it replied). After every restart:
//!
//! - `status` answers with the last committed generation: the one the state store on disk holds, never below a
//!   generation the daemon acknowledged, never going back;
//! - no inbox image is lost: every file ever dropped is in exactly one of `inbox/` (not learned yet) and
//!   `processed/` (learned), with its content unchanged;
//! - none is learned twice: the samples the committed state counts as learned equal the files in `processed/`
//!   (the daemon moves the photos of the last committed task that a kill left in the inbox without learning
//!   them again).
//!
//! At the end one learn without a kill takes whatever is left: every photo learned exactly once.
#![cfg(unix)]

#[path = "field_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, MNIST_NORM, Pty, drop_into_inbox, files_under, mnist, png, raw_image, scratch};
use firmware::protocol::{Request, Response};
use firmware::store::StateStore;

const CYCLES: usize = 50;
/// New photos per cycle (half digit 4, half digit 5).
const PHOTOS_PER_CYCLE: usize = 4;
/// `--pause-after-commit` widens the window between the commit and the moves of the photos to `processed/` (a
/// few milliseconds otherwise) so that random kills land in it too: that is where a photo could be learned twice.
const DAEMON_FLAGS: &[&str] = &["--epochs", "1", "--batch", "4", "--lr", "0.01", "--pause-after-commit", "150"];
const PAUSE: Duration = Duration::from_millis(150);

/// The generation of the newest valid state on disk (0: none).
fn committed_generation(state: &Path) -> u64 {
    let mut store = StateStore::open(state).expect("open the state store");
    store.load().expect("load the state store").map_or(0, |l| l.generation())
}

/// Check that every photo dropped so far is in exactly one of inbox/ and processed/, unchanged; returns how many
/// are in processed/.
fn check_photos(field: &Path, dropped: &BTreeMap<(String, String), Vec<u8>>, cycle: usize) -> usize {
    let mut seen: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut processed = 0;
    for sub in ["inbox", "processed"] {
        for p in files_under(&field.join(sub)) {
            let class = p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "cycle {cycle}: a half-dropped file {}", p.display());
            let key = (class, name);
            let Some(bytes) = dropped.get(&key) else {
                panic!("cycle {cycle}: unexpected file {} (a photo duplicated under a new name?)", p.display());
            };
            assert!(std::fs::read(&p).unwrap() == *bytes, "cycle {cycle}: {} changed", p.display());
            if let Some(other) = seen.insert(key, p.clone()) {
                panic!("cycle {cycle}: the same photo in two places: {} and {}", other.display(), p.display());
            }
            processed += usize::from(sub == "processed");
        }
    }
    let missing: Vec<_> = dropped.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(missing.is_empty(), "cycle {cycle}: photos lost: {missing:?}");
    assert!(files_under(&field.join("rejected")).is_empty(), "cycle {cycle}: a good photo was rejected");
    processed
}

#[test]
fn sigkill_during_learn_commit_cycles_loses_nothing_and_learns_nothing_twice() {
    let started = Instant::now();
    let ds = mnist();
    let dir = scratch("kill-daemon");
    let (state, field, log) = (dir.join("state"), dir.join("field"), dir.join("daemon.log"));
    let pty = Pty::open();
    let seed = std::env::var("KILL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = integration::SplitMix(seed);
    let mut pool = [4usize, 5].map(|c| {
        ds.train_y.iter().enumerate().filter(move |&(_, &l)| l == c).map(|(i, _)| i).collect::<Vec<_>>().into_iter()
    });

    let mut dropped: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let (mut acked, mut last_gen) = (0u64, 0u64);
    let (mut kills_before_reply, mut kills_after_reply, mut kills_between) = (0, 0, 0);
    // Kill moments are random in one of three spans, chosen at random, measured on the last learn that replied
    // (cycle 0 measures one): training up to the commit, the pause after the commit, and the reply and after.
    let mut last_learn = Duration::from_millis(100);
    for cycle in 0..=CYCLES {
        let daemon = Daemon::start(&state, &field, &pty.slave_path, DAEMON_FLAGS, &log);
        let mut client = pty.connect(Duration::from_secs(120), Duration::from_secs(120));

        // The restart reports the last committed generation: the store's, never below an acknowledged one.
        let status = client.status().unwrap_or_else(|e| panic!("cycle {cycle}: status: {e}"));
        let on_disk = committed_generation(&state);
        assert_eq!(status.generation, on_disk, "cycle {cycle}: status vs the store on disk");
        assert!(status.generation >= acked, "cycle {cycle}: acknowledged generation {acked} lost");
        assert!(status.generation >= last_gen, "cycle {cycle}: generation went back from {last_gen}");
        assert!(status.generation <= acked + 1, "cycle {cycle}: {} is past {acked} + 1", status.generation);
        if cycle > 0 && status.generation == acked + 1 && status.generation > last_gen {
            kills_between += 1;
        }
        last_gen = status.generation;
        acked = acked.max(status.generation);
        assert_eq!(status.tasks as u64, status.generation, "cycle {cycle}: one task per commit");
        let processed = check_photos(&field, &dropped, cycle);
        assert_eq!(
            status.samples_learned, processed as u64,
            "cycle {cycle}: samples learned vs photos in processed/ (a photo learned twice or moved unlearned)"
        );
        assert_eq!(status.inbox_pending as usize, dropped.len() - processed, "cycle {cycle}");

        if cycle == CYCLES {
            // The last round: learn what is left, without a kill.
            if status.inbox_pending > 0 {
                match client.call(Request::Learn).unwrap() {
                    Response::Learned { generation, from_inbox, .. } => {
                        assert_eq!(generation, last_gen + 1);
                        assert_eq!(from_inbox, status.inbox_pending);
                        last_gen = generation;
                    }
                    other => panic!("{other:?}"),
                }
            }
            let s = client.status().unwrap();
            assert_eq!((s.generation, s.inbox_pending, s.samples_learned), (last_gen, 0, dropped.len() as u64));
            assert_eq!(check_photos(&field, &dropped, cycle), dropped.len());
            drop(client);
            assert!(daemon.terminate(Duration::from_secs(30)).success());
            break;
        }

        // New photos, then a learn request, then SIGKILL at a random moment.
        for k in 0..PHOTOS_PER_CYCLE {
            let class = k % 2;
            let i = pool[class].next().expect("enough MNIST images");
            let bytes = png(&raw_image(ds.train_x.row(i), MNIST_NORM));
            let (class, name) = ((4 + class).to_string(), format!("c{cycle:02}-{k}.png"));
            drop_into_inbox(&field, &class, &name, &bytes);
            dropped.insert((class, name), bytes);
        }
        // Cycles 0 and 1 measure how long a learn takes (killed only after their reply); later cycles draw the
        // moment from the latest learn that replied.
        let train = last_learn.saturating_sub(PAUSE).as_micros().max(1) as u64;
        let pause = PAUSE.as_micros() as u64;
        let delay = Duration::from_micros(match rng.next_u64() % 3 {
            _ if cycle <= 1 => 120_000_000,
            0 => rng.next_u64() % train,
            1 => train + rng.next_u64() % pause,
            // Learns grow a little with the replay memory: "after the reply" draws from twice the latest.
            _ => 2 * train + pause + rng.next_u64() % (train + 1),
        });
        // A killer thread SIGKILLs the daemon `delay` after the request is sent (the child is reaped only by
        // `daemon.kill()` below, so its pid cannot be reused meanwhile). The reply, if any, comes before.
        let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
        let killer = (cycle > 1).then(|| {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            })
        });
        client.set_timeout(delay + Duration::from_millis(300));
        let asked = Instant::now();
        match client.request(Request::Learn) {
            Ok(Response::Learned { generation, .. }) => {
                // The latest learn that replied, not the longest: one slow commit (a busy disk) would otherwise push
                // every later "between" kill past the reply.
                last_learn = asked.elapsed();
                assert_eq!(generation, last_gen + 1, "cycle {cycle}");
                acked = generation;
                kills_after_reply += 1;
            }
            Ok(other) => panic!("cycle {cycle}: {other:?}\nlog:\n{}", daemon.log_text()),
            // No reply before the kill.
            Err(_) => kills_before_reply += 1,
        }
        if let Some(k) = killer {
            k.join().expect("killer thread");
        }
        daemon.kill();
        drop(client);
    }
    eprintln!(
        "kill daemon: {CYCLES} kills in {:.1?}; final generation {last_gen}; {kills_after_reply} kills after the \
         reply, {kills_before_reply} before it (of which {kills_between} after the commit); {} photos",
        started.elapsed(),
        dropped.len()
    );
    let before_commit = kills_before_reply - kills_between;
    assert!(
        before_commit >= 3 && kills_between >= 3 && kills_after_reply >= 3,
        "kill moments not spread over the cycle: {before_commit} before the commit, {kills_between} between the \
         commit and the reply, {kills_after_reply} after the reply"
    );
    assert!(last_gen >= 10, "too few commits ({last_gen}) to exercise the protocol");
    let _ = std::fs::remove_dir_all(&dir);
}
