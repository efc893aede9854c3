//! The fleet over a real broker: mosquitto (Debian package `mosquitto`, installed by scripts/test.sh) started by
//! this test on 127.0.0.1 at a free port, with a password file and an ACL (a board writes only under its own id
//! and reads only the model; the merger reads updates and writes the model), and `host fleet serve` as a real
//! process. Everything is bounded in time; the broker and the merger are killed when the test ends.
//!
//! What it checks: the merger's persistent session (updates published while it is down reach it when it comes
//! back), durable storage before acknowledgement, idempotence on (device, generation) across a restart, refusal
//! of an update whose payload names another device, the broker's refusal of a board publishing under another
//! board's id, a wrong password refused, the retained fleet model equal to the in-process merge of every stored
//! update (a late, older generation is a delta of its own: stored and merged), the merger surviving a broker
//! killed (SIGKILL) and restarted without persistence (it reconnects, subscribes again, re-publishes the retained
//! model the broker lost, and merges what comes next), and a clean stop on SIGTERM.
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmware::fisher::FisherFormat;
use firmware::fleet::mqtt::{self, BrokerConfig, Link};
use firmware::fleet::{FleetModel, FleetUpdate, decode_model, encode_update, merge_updates};
use host::fleet::broker::{self, Broker};

const FLEET: &str = "lab";
const BASE: &str = "base-test";
const MAX: usize = 1 << 20;

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Wait for the process to exit within `limit`; its stdout.
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut out = String::new();
                self.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                return (status.success(), out);
            }
            assert!(t0.elapsed() < limit, "process still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Start mosquitto on 127.0.0.1:`port` with users merger/dev-a/dev-b and the fleet's ACL
/// ([`host::fleet::broker`]), its log in `dir/log`; wait until it listens.
fn start_broker(dir: &Path, port: u16, log: &str) -> Broker {
    let users = [("merger", "m-pw"), ("dev-a", "a-pw"), ("dev-b", "b-pw")].map(|(u, p)| (u.to_string(), p.to_string()));
    let conf = broker::write_config(dir, port, &users, None).expect("the broker's files (mosquitto_passwd)");
    broker::start(&conf, port, &dir.join(log)).expect("mosquitto listening")
}

fn broker_as(port: u16, user: &str, pass: &str) -> BrokerConfig {
    let mut b = BrokerConfig::parse(&format!("127.0.0.1:{port}")).unwrap();
    b.credentials = Some((user.into(), pass.into()));
    b.timeout = Duration::from_secs(5);
    b
}

/// `host fleet serve` on this fleet, its log (stderr) in `dir/log`.
fn merger(port: u16, dir: &Path, log: &str, extra: &[&str]) -> Proc {
    let pwf = dir.join("merger-password");
    std::fs::write(&pwf, "m-pw\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["fleet", "serve", "--broker", &format!("127.0.0.1:{port}"), "--fleet", FLEET, "--base-model", BASE])
        .arg("--dir")
        .arg(dir.join("merger"))
        .args(["--user", "merger", "--password-file"])
        .arg(&pwf)
        .args(["--timeout-s", "5"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn();
    Proc(child.expect("starting host fleet serve"))
}

/// The text of `dir/name` (empty when absent).
fn text(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Wait up to `limit` until `dir/log` holds `needle` at least `count` times.
fn wait_for_log(dir: &Path, log: &str, needle: &str, count: usize, limit: Duration) {
    let t0 = Instant::now();
    while text(dir, log).matches(needle).count() < count {
        assert!(t0.elapsed() < limit, "{needle:?} not {count} time(s) in {log} after {limit:?}:\n{}", text(dir, log));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fleet model as a fresh subscriber reads it (and whether it came as the retained message), once its version
/// is at least `min`; retries for up to `limit`.
fn fleet_model(port: u16, min: u64, limit: Duration) -> (FleetModel, bool) {
    let t0 = Instant::now();
    let mut seen = None;
    loop {
        if let Ok(mut reader) = Link::connect(&broker_as(port, "dev-b", "b-pw"), "reader", true, false) {
            if reader.subscribe(&mqtt::model_topic(FLEET)).is_ok()
                && let Ok(Some(msg)) = reader.next_message(Duration::from_secs(1))
            {
                let model = decode_model(&msg.payload, 64 << 20, FLEET, BASE).unwrap();
                if model.version >= min {
                    reader.disconnect();
                    return (model, msg.retain);
                }
                seen = Some(model.version);
            }
            reader.disconnect();
        }
        assert!(t0.elapsed() < limit, "no fleet model of version >= {min} after {limit:?} (last seen: {seen:?})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`firmware::fleet::fixture::update`] of this fleet and base model.
fn update(device: &str, generation: u64, classes: &[&str], seed: f32) -> FleetUpdate {
    firmware::fleet::fixture::update(FLEET, BASE, device, generation, classes, seed, FisherFormat::F32).unwrap()
}

fn frame(u: &FleetUpdate) -> Vec<u8> {
    encode_update(u, MAX).unwrap()
}

/// A board's connection (clean session: a board here only publishes).
fn board(port: u16, device: &str, pass: &str) -> Link {
    Link::connect(&broker_as(port, device, pass), device, true, false).unwrap()
}

/// The model must be the in-process merge of `updates`, every one of them merged once.
fn assert_merge_of(model: &FleetModel, updates: &[FleetUpdate]) {
    let expected = merge_updates(updates).unwrap();
    assert_eq!(model.merged, expected.merged);
    assert_eq!(model.classes, expected.classes);
    assert_eq!(model.params, expected.params);
    assert_eq!(model.slda, expected.slda);
    let mut pairs: Vec<(String, u64)> = updates.iter().map(|u| (u.device.clone(), u.generation)).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(model.merged, pairs);
}

#[test]
fn boards_publish_the_merger_stores_merges_and_retains_the_fleet_model() {
    let dir = std::env::temp_dir().join(format!("edgelearn-fleet-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = broker::free_port().unwrap();
    let mut broker = start_broker(&dir, port, "broker.log");

    // A wrong password is refused at connection.
    let e = Link::connect(&broker_as(port, "dev-a", "wrong"), "dev-a", true, false).unwrap_err();
    assert!(matches!(e, firmware::Error::Broker(_)), "{e:?}");

    // The merger's first run creates its persistent session and subscription, then leaves.
    let (ok, out) = merger(port, &dir, "merger-1.log", &["--idle-exit-s", "1"]).finish(Duration::from_secs(30));
    assert!(ok && out.contains("0 model(s) published"), "{out}\n{}", text(&dir, "merger-1.log"));

    // While it is away, the boards publish.
    let a1 = update("dev-a", 1, &["4", "5"], 0.1);
    let b1 = update("dev-b", 1, &["6", "7"], 0.7);
    let mut dev_a = board(port, "dev-a", "a-pw");
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a1), false).unwrap();
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a1), false).unwrap(); // lost PUBACK: re-sent
    let mut dev_b = board(port, "dev-b", "b-pw");
    // Under its own topic but naming dev-a in the payload: the merger refuses it.
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-b"), frame(&update("dev-a", 5, &["9"], 0.3)), false).unwrap();
    // Under dev-a's topic: the broker's ACL drops it (MQTT 3.1.1 acknowledges and discards).
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&update("dev-a", 7, &["9"], 0.3)), false).unwrap();
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-b"), frame(&b1), false).unwrap();
    dev_b.disconnect();

    // The merger comes back and receives what was queued for its session.
    let (ok, out) = merger(port, &dir, "merger-2.log", &["--max-merges", "2", "--idle-exit-s", "15"])
        .finish(Duration::from_secs(60));
    assert!(ok, "{out}\n{}", text(&dir, "merger-2.log"));
    assert!(
        out.contains("2 update(s) stored, 1 repeat(s) ignored, 1 refused, 2 model(s) published; fleet model version 2"),
        "{out}"
    );

    // Stored before acknowledged; the refused one kept aside; nothing from the ACL-denied publish.
    let store = dir.join("merger");
    assert!(store.join("updates/dev-a/00000000000000000001.elfu").exists());
    assert!(store.join("updates/dev-b/00000000000000000001.elfu").exists());
    assert!(!store.join("updates/dev-a/00000000000000000007.elfu").exists());
    assert_eq!(std::fs::read_dir(store.join("rejected")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(store.join("updates/dev-a")).unwrap().count(), 1);
    let log = text(&dir, "broker.log");
    assert!(log.contains("Denied PUBLISH from dev-b"), "the broker did not log the refusal:\n{log}");

    // A board reads the retained fleet model: version 2, both boards, the union of classes, the merge itself.
    let (model, retained) = fleet_model(port, 2, Duration::from_secs(10));
    assert!(retained);
    assert_eq!(model.version, 2);
    assert_eq!(model.merged, [("dev-a".to_string(), 1), ("dev-b".to_string(), 1)]);
    assert_eq!(model.classes, ["4", "5", "6", "7"]);
    assert_merge_of(&model, &[a1.clone(), b1.clone()]);

    // After a restart the merger still knows dev-a's generation 1: a re-send is not merged again. (It re-publishes
    // its newest model on connecting, which is not a new one.)
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a1), false).unwrap();
    dev_a.disconnect();
    let (ok, out) = merger(port, &dir, "merger-3.log", &["--idle-exit-s", "2"]).finish(Duration::from_secs(30));
    assert!(ok, "{out}\n{}", text(&dir, "merger-3.log"));
    assert!(
        out.contains("0 update(s) stored, 1 repeat(s) ignored, 0 refused, 0 model(s) published; fleet model version 2"),
        "{out}"
    );

    // A late update: dev-a's generation 2 arrives after its generation 3. It is a delta of its own (the SLDA
    // statistics of its task): stored and merged, once, like every other.
    let a2 = update("dev-a", 2, &["4", "5", "8"], 0.2);
    let a3 = update("dev-a", 3, &["4", "5", "8", "9"], 0.3);
    let mut dev_a = board(port, "dev-a", "a-pw");
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a3), false).unwrap();
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a2), false).unwrap();
    dev_a.disconnect();
    let (ok, out) = merger(port, &dir, "merger-4.log", &["--max-merges", "2", "--idle-exit-s", "15"])
        .finish(Duration::from_secs(60));
    assert!(ok, "{out}\n{}", text(&dir, "merger-4.log"));
    assert!(
        out.contains("2 update(s) stored, 0 repeat(s) ignored, 0 refused, 2 model(s) published; fleet model version 4"),
        "{out}"
    );
    let (model, retained) = fleet_model(port, 4, Duration::from_secs(10));
    assert!(retained && model.version == 4, "version {}", model.version);
    assert_merge_of(&model, &[a1.clone(), a2.clone(), a3.clone(), b1.clone()]);
    // The late delta counts: the pooled statistics hold its samples (the newest update per board alone does not).
    let newest_only = merge_updates(&[a3.clone(), b1.clone()]).unwrap();
    let samples = |m: &Option<firmware::fleet::SldaSums>| m.as_ref().map(|s| s.samples);
    assert!(samples(&model.slda) > samples(&newest_only.slda), "{:?}", samples(&model.slda));

    // The broker dies under a running merger (SIGKILL) and comes back on the same port, without persistence: the
    // merger reconnects, subscribes again, re-publishes the retained model the broker lost, and merges what
    // comes next.
    let mut run = merger(port, &dir, "merger-5.log", &["--max-merges", "1", "--idle-exit-s", "30"]);
    wait_for_log(&dir, "merger-5.log", "fleet model (re-)published", 1, Duration::from_secs(20));
    broker.kill().unwrap();
    // Down long enough for a few refused connection attempts (the merger waits 200 ms, 400 ms, ... between them).
    wait_for_log(&dir, "merger-5.log", "link to the broker failed", 3, Duration::from_secs(20));
    let restarted = start_broker(&dir, port, "broker-2.log");
    drop(std::mem::replace(&mut broker, restarted));
    wait_for_log(&dir, "merger-5.log", "merger reconnected and subscribed", 1, Duration::from_secs(20));
    let (model, _) = fleet_model(port, 4, Duration::from_secs(20));
    assert_eq!(model.version, 4, "the model re-published after the reconnection");
    let b2 = update("dev-b", 2, &["6", "7", "1"], 0.8);
    let mut dev_b = board(port, "dev-b", "b-pw");
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-b"), frame(&b2), false).unwrap();
    dev_b.disconnect();
    let (ok, out) = {
        let r = run.0.try_wait().unwrap();
        assert!(r.is_none(), "the merger exited early: {r:?}\n{}", text(&dir, "merger-5.log"));
        run.finish(Duration::from_secs(30))
    };
    assert!(ok, "{out}\n{}", text(&dir, "merger-5.log"));
    assert!(
        out.contains(
            "1 update(s) stored, 0 repeat(s) ignored, 0 refused, 1 model(s) published; fleet model version 5; \
             1 reconnection(s)"
        ),
        "{out}\n{}",
        text(&dir, "merger-5.log")
    );
    assert!(store.join("updates/dev-b/00000000000000000002.elfu").exists());
    assert!(store.join("models/00000000000000000005.elfm").exists());
    let (model, retained) = fleet_model(port, 5, Duration::from_secs(10));
    assert!(retained && model.version == 5, "version {}", model.version);
    assert_merge_of(&model, &[a1, a2, a3, b1, b2]);

    // SIGTERM stops a merger that would otherwise run on: cleanly, with its report.
    let run = merger(port, &dir, "merger-6.log", &[]);
    wait_for_log(&dir, "merger-6.log", "merger subscribed", 1, Duration::from_secs(20));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (ok, out) = run.finish(Duration::from_secs(15));
    assert!(ok && out.contains("0 update(s) stored"), "{out}\n{}", text(&dir, "merger-6.log"));

    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
