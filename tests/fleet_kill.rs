//! Kill test of the fleet (issue 18): eight device daemons (real processes, `--fleet`), the merger
//! (`host fleet serve`, a process) and mosquitto (Debian package, started here on 127.0.0.1 at a free port with a
//! password file and the fleet's ACL). Each board learns real MNIST photos of its own two new digits from its
//! inbox, over several rounds; during the rounds the test SIGKILLs random boards in the middle of a learn, the
//! merger and the broker at random moments, and restarts them. Then it lets the fleet settle and checks:
//!
//! - every update a board committed was merged exactly once: the merger stored one update per learned task of
//!   each board (`tasks` in the board's state), the newest fleet model lists exactly those `(device, generation)`
//!   pairs, and its pooled SLDA statistics count exactly the samples all boards learned (a sample merged twice or
//!   lost would show);
//! - every board runs the newest fleet model (its state's fleet version and parameters are the model's) and its
//!   outbox is empty;
//! - no state file is corrupt (both A/B slots of every board decode).
//!
//! Everything is bounded in time; every process the test started is stopped at the end (or killed on a panic).
#![cfg(unix)]

#[path = "field_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, MNIST_NORM, Pty, drop_into_inbox, mnist, png, raw_image, root, scratch};
use firmware::fleet::{FleetModel, decode_model, decode_update, outbox};
use firmware::protocol::{Request, Response};
use firmware::store::{Slot, SlotStatus, StateStore};
use host::fleet::broker::{self, Broker};

const DEVICES: usize = 8;
const ROUNDS: usize = 6;
/// Photos per board and round (half of each of its two digits).
const PHOTOS: usize = 4;
const FLEET: &str = "lab";
const BASE: &str = "mnist-cnn-0123";
const MAX: usize = 64 << 20;

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn device_id(d: usize) -> String {
    format!("dev-{d}")
}

/// Users (the merger and every board) and their password files, the fleet's ACL, a config on 127.0.0.1:`port`.
fn broker_files(dir: &Path, port: u16) -> PathBuf {
    let users: Vec<(String, String)> = std::iter::once(("merger".to_string(), "m-pw".to_string()))
        .chain((0..DEVICES).map(|d| (device_id(d), format!("pw-{d}"))))
        .collect();
    broker::write_config(dir, port, &users, None).expect("the broker's files (mosquitto_passwd)")
}

fn start_broker(dir: &Path, conf: &Path, port: u16) -> Broker {
    broker::start(conf, port, &dir.join("broker.log")).expect("mosquitto listening")
}

fn start_merger(dir: &Path, port: u16) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("merger.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fleet_merger"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(dir.join("merger.pw"))
        .args([FLEET, BASE])
        .arg(dir.join("merger"))
        .env("EDGELEARN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    Proc(child.expect("starting the merger"))
}

/// One board: its folders, its tty and its daemon (if running).
struct Board {
    d: usize,
    state: PathBuf,
    field: PathBuf,
    log: PathBuf,
    pty: Pty,
    daemon: Option<Daemon>,
    flags: Vec<String>,
}

/// A board whose test ends (or panics) takes its daemon down with it: no process outlives the test.
impl Drop for Board {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

impl Board {
    fn new(dir: &Path, d: usize, port: u16) -> Self {
        let state = dir.join(format!("board-{d}/state"));
        let field = dir.join(format!("board-{d}/field"));
        std::fs::create_dir_all(&field).unwrap();
        let board = root().join("tests/boards/fleet-test.toml");
        let flags = [
            "--board",
            board.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch",
            "4",
            "--pause-after-commit",
            "100",
            "--fleet",
            FLEET,
            "--device-id",
            &device_id(d),
            "--broker",
            &format!("127.0.0.1:{port}"),
            "--broker-password-file",
            dir.join(format!("{}.pw", device_id(d))).to_str().unwrap(),
            "--fleet-base",
            BASE,
            "--fleet-resend-s",
            "2",
        ]
        .map(String::from)
        .to_vec();
        Self { d, state, field, log: dir.join(format!("board-{d}.log")), pty: Pty::open(), daemon: None, flags }
    }

    fn start(&mut self) {
        if self.daemon.is_none() {
            let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
            self.daemon = Some(Daemon::start(&self.state, &self.field, &self.pty.slave_path, &flags, &self.log));
        }
    }

    fn kill(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Status over the protocol (the daemon must be running).
    fn status(&self) -> firmware::protocol::Status {
        let mut c = self.pty.connect(Duration::from_secs(60), Duration::from_secs(30));
        c.status().unwrap_or_else(|e| panic!("board {}: status: {e}", self.d))
    }
}

/// The board's two digits.
fn digits(d: usize) -> [usize; 2] {
    [4 + d % 6, 4 + (d + 3) % 6]
}

#[test]
fn eight_boards_a_merger_and_a_broker_killed_at_random_merge_every_update_exactly_once() {
    let started = Instant::now();
    let ds = mnist();
    let dir = scratch("fleet-kill");
    let port = broker::free_port().unwrap();
    let conf = broker_files(&dir, port);
    let mut broker = Some(start_broker(&dir, &conf, port));
    let mut merger = Some(start_merger(&dir, port));
    let seed = std::env::var("FLEET_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xF1EE7_u64);
    let mut rng = integration::SplitMix(seed);
    let mut pool: BTreeMap<usize, std::vec::IntoIter<usize>> = (4..10)
        .map(|c| {
            let rows: Vec<usize> = ds.train_y.iter().enumerate().filter(|&(_, &l)| l == c).map(|(i, _)| i).collect();
            (c, rows.into_iter())
        })
        .collect();
    let mut boards: Vec<Board> = (0..DEVICES).map(|d| Board::new(&dir, d, port)).collect();
    for b in &mut boards {
        b.start();
    }
    let (mut board_kills, mut merger_kills, mut broker_kills) = (0, 0, 0);
    for round in 0..ROUNDS {
        // New photos for every board.
        for b in &boards {
            for k in 0..PHOTOS {
                let c = digits(b.d)[k % 2];
                let i = pool.get_mut(&c).and_then(Iterator::next).expect("enough MNIST images");
                let bytes = png(&raw_image(ds.train_x.row(i), MNIST_NORM));
                drop_into_inbox(&b.field, &c.to_string(), &format!("r{round}-{k}.png"), &bytes);
            }
        }
        // Every board learns at once; some are killed in the middle (the last round kills nobody: it learns
        // what the kills left in the inboxes).
        let chaos = round + 1 < ROUNDS;
        let victims: Vec<bool> = (0..DEVICES).map(|_| chaos && rng.next_u64().is_multiple_of(3)).collect();
        // A learn takes ~0.1 s here plus the 100 ms pause after its commit: kills land before, in and after it.
        let delays: Vec<Duration> = (0..DEVICES).map(|_| Duration::from_millis(rng.next_u64() % 350)).collect();
        let merger_at = chaos.then(|| Duration::from_millis(rng.next_u64() % 2000));
        let broker_at = (chaos && round.is_multiple_of(2)).then(|| Duration::from_millis(rng.next_u64() % 2000));
        let results: Vec<(bool, Option<u64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = boards
                .iter()
                .zip(&victims)
                .zip(&delays)
                .map(|((b, &victim), &delay)| {
                    let pid = b.daemon.as_ref().map(|d| nix::unistd::Pid::from_raw(d.child.id() as i32));
                    s.spawn(move || {
                        // A victim's reply can only come before its kill: wait for it that long (and a second).
                        let wait = if victim { delay + Duration::from_secs(1) } else { Duration::from_secs(120) };
                        let mut c = b.pty.connect(Duration::from_secs(60), wait);
                        let killer = victim.then(|| {
                            std::thread::spawn(move || {
                                std::thread::sleep(delay);
                                if let Some(pid) = pid {
                                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                                }
                            })
                        });
                        let generation = match c.request(Request::Learn) {
                            Ok(Response::Learned { generation, .. }) => Some(generation),
                            Ok(Response::Error { message, .. }) if victim => {
                                eprintln!("board {}: learn failed before the kill: {message}", b.d);
                                None
                            }
                            Ok(other) => panic!("board {}: {other:?}", b.d),
                            Err(e) if victim => {
                                eprintln!("board {}: no reply (killed): {e}", b.d);
                                None
                            }
                            Err(e) => panic!("board {}: learn: {e}", b.d),
                        };
                        if let Some(k) = killer {
                            k.join().expect("killer thread");
                        }
                        (victim, generation)
                    })
                })
                .collect();
            // Meanwhile: the merger, and every other round the broker, killed and restarted.
            let t0 = Instant::now();
            let mut events: Vec<(Duration, &str)> =
                merger_at.map(|t| (t, "merger")).into_iter().chain(broker_at.map(|t| (t, "broker"))).collect();
            events.sort();
            for (at, what) in events {
                std::thread::sleep(at.saturating_sub(t0.elapsed()));
                if what == "merger" {
                    drop(merger.take());
                    merger_kills += 1;
                    std::thread::sleep(Duration::from_millis(300));
                    merger = Some(start_merger(&dir, port));
                } else {
                    drop(broker.take());
                    broker_kills += 1;
                    std::thread::sleep(Duration::from_millis(700));
                    broker = Some(start_broker(&dir, &conf, port));
                }
            }
            handles.into_iter().map(|h| h.join().expect("board thread")).collect()
        });
        for (b, (victim, generation)) in boards.iter_mut().zip(results) {
            if victim {
                b.kill();
                board_kills += 1;
                b.start();
            }
            eprintln!("round {round}: board {} learned {generation:?}{}", b.d, if victim { " (killed)" } else { "" });
        }
        eprintln!("round {round} done at {:.1?}", started.elapsed());
    }
    // The last round learned every photo the kills left behind (a killed learn leaves its photos in the inbox,
    // and the round after learns them); now let the fleet settle: every outbox empty (every update seen merged)
    // and every board on the newest model.
    let merger_dir = dir.join("merger");
    let deadline = Instant::now() + Duration::from_secs(120);
    let newest = loop {
        let version = newest_model(&merger_dir).map_or(0, |(v, _)| v);
        let statuses: Vec<_> = boards.iter().map(Board::status).collect();
        let settled = version > 0
            && statuses.iter().all(|s| {
                s.inbox_pending == 0
                    && s.fleet.as_ref().is_some_and(|f| f.outbox == 0 && f.model_version == version && f.connected)
            });
        if settled {
            break version;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet did not settle within 120 s: newest model {version}, boards {:?}",
            statuses.iter().map(|s| (s.inbox_pending, s.fleet.clone())).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("settled at {:.1?}: fleet model {newest}", started.elapsed());
    // Stop the boards cleanly, then check their stores and the merger's folder.
    for b in &mut boards {
        if let Some(d) = b.daemon.take() {
            assert!(d.terminate(Duration::from_secs(30)).success(), "board {} did not stop cleanly", b.d);
        }
    }
    drop(merger.take());
    drop(broker.take());
    let (_, model) = newest_model(&merger_dir).expect("a fleet model");
    assert_eq!(model.version, newest);
    let mut expected_pairs = Vec::new();
    let mut samples_learned = 0u64;
    for b in &boards {
        let store = StateStore::open(&b.state).unwrap();
        for slot in [Slot::A, Slot::B] {
            let (status, _) = store.read_slot(slot);
            assert!(
                matches!(status, SlotStatus::Valid { .. } | SlotStatus::Missing),
                "board {}: slot {slot:?} is {status:?}",
                b.d
            );
        }
        let state = StateStore::open(&b.state).unwrap().load().unwrap().expect("a committed state").state;
        let fleet = state.fleet.clone().expect("a fleet record");
        assert_eq!(fleet.model_version, newest, "board {} runs another fleet model", b.d);
        assert_eq!(state.params, model.params, "board {}: parameters are not the fleet model's", b.d);
        assert!(outbox::pending(&outbox::dir_of(&b.state)).unwrap().is_empty(), "board {}: outbox not empty", b.d);
        // One stored update per learned task, the newest the board's newest.
        let stored = stored_updates(&merger_dir, &device_id(b.d));
        assert_eq!(
            stored.len(),
            state.tasks.len(),
            "board {}: {} tasks, {} updates stored",
            b.d,
            state.tasks.len(),
            stored.len()
        );
        assert_eq!(stored.last().copied(), Some(fleet.learned_generation), "board {}", b.d);
        expected_pairs.extend(stored.iter().map(|&g| (device_id(b.d), g)));
        samples_learned += state.inbox.samples_learned;
    }
    expected_pairs.sort();
    assert_eq!(model.merged, expected_pairs, "the newest model does not merge exactly the stored updates");
    let pooled = model.slda.as_ref().expect("pooled statistics");
    assert_eq!(
        pooled.counts.iter().sum::<u64>(),
        samples_learned,
        "the pooled statistics count another number of samples than the boards learned"
    );
    assert_eq!(samples_learned, (ROUNDS * PHOTOS * DEVICES) as u64, "a photo was not learned");
    eprintln!(
        "fleet kill: {DEVICES} boards, {ROUNDS} rounds, {board_kills} board kills, {merger_kills} merger kills, \
         {broker_kills} broker kills; fleet model {newest} merges {} updates; {:.1?}",
        model.merged.len(),
        started.elapsed()
    );
    assert!(board_kills >= 2 && merger_kills >= 2 && broker_kills >= 1, "too few kills to exercise recovery");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest fleet model the merger kept, decoded.
fn newest_model(merger: &Path) -> Option<(u64, FleetModel)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(merger.join("models")).ok()?.flatten().map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "elfm"));
    files.sort();
    let bytes = std::fs::read(files.last()?).ok()?;
    let m = decode_model(&bytes, MAX, FLEET, BASE).unwrap_or_else(|r| panic!("a stored model does not decode: {r}"));
    Some((m.version, m))
}

/// Generations of the updates the merger stored for `device`, ascending (each frame checked).
fn stored_updates(merger: &Path, device: &str) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(merger.join("updates").join(device)) else { return Vec::new() };
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "elfu"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            decode_update(&bytes, MAX, device, BASE)
                .unwrap_or_else(|r| panic!("stored update does not decode: {r}"))
                .generation
        })
        .collect();
    gens.sort_unstable();
    gens
}
