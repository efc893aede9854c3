//! The fleet over a real broker: mosquitto (Debian package `mosquitto`, installed by scripts/test.sh) started by
//! this test on 127.0.0.1 at a free port, with a password file and an ACL (a board writes only under its own id
//! and reads only the model; the merger reads updates and writes the model), and `host fleet serve` as a real
//! process. Everything is bounded in time; the broker and the merger are killed when the test ends.
//!
//! What it checks: the merger's persistent session (updates published while it is down reach it when it comes
//! back), durable storage before acknowledgement, idempotence on (device, generation) across a restart, refusal
//! of an update whose payload names another device, the broker's refusal of a board publishing under another
//! board's id, a wrong password refused, and the retained fleet model equal to the in-process merge.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmware::fisher::FisherFormat;
use firmware::fleet::mqtt::{self, BrokerConfig, Link};
use firmware::fleet::{FleetUpdate, decode_model, encode_update, merge_updates};

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

fn mosquitto() -> PathBuf {
    let found =
        ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"].into_iter().map(PathBuf::from).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("mosquitto is not installed: `bash scripts/test.sh` installs it (Debian package mosquitto)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start mosquitto on 127.0.0.1:`port` with users merger/dev-a/dev-b and the fleet's ACL; wait until it listens.
fn start_broker(dir: &Path, port: u16) -> Proc {
    let pw = dir.join("passwords");
    for (i, (user, pass)) in [("merger", "m-pw"), ("dev-a", "a-pw"), ("dev-b", "b-pw")].into_iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        let st = c.arg(&pw).arg(user).arg(pass).status().expect("mosquitto_passwd (package mosquitto)");
        assert!(st.success(), "mosquitto_passwd failed");
    }
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user merger\ntopic read edgelearn/+/+/update\ntopic write edgelearn/+/model\n\n\
         pattern write edgelearn/+/%u/update\npattern read edgelearn/+/model\n",
    )
    .unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n\
             log_dest stderr\nlog_type all\n",
            pw.display(),
            acl.display(),
        ),
    )
    .unwrap();
    // The log goes to stderr, into a file of ours (run as root, mosquitto drops to its own user before it opens a
    // log file, which then could not be written here).
    let log = std::fs::File::create(dir.join("broker.log")).unwrap();
    let child = Command::new(mosquitto()).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn();
    let broker = Proc(child.expect("starting mosquitto"));
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "mosquitto did not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn broker_as(port: u16, user: &str, pass: &str) -> BrokerConfig {
    let mut b = BrokerConfig::parse(&format!("127.0.0.1:{port}")).unwrap();
    b.credentials = Some((user.into(), pass.into()));
    b.timeout = Duration::from_secs(5);
    b
}

fn merger(port: u16, dir: &Path, extra: &[&str]) -> Proc {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    Proc(child.expect("starting host fleet serve"))
}

/// [`firmware::fleet::fixture::update`] of this fleet and base model.
fn update(device: &str, generation: u64, classes: &[&str], seed: f32) -> FleetUpdate {
    firmware::fleet::fixture::update(FLEET, BASE, device, generation, classes, seed, FisherFormat::F32).unwrap()
}

fn frame(u: &FleetUpdate) -> Vec<u8> {
    encode_update(u, MAX).unwrap()
}

#[test]
fn boards_publish_the_merger_stores_merges_and_retains_the_fleet_model() {
    let dir = std::env::temp_dir().join(format!("edgelearn-fleet-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _broker = start_broker(&dir, port);

    // A wrong password is refused at connection.
    let e = Link::connect(&broker_as(port, "dev-a", "wrong"), "dev-a", true, false).unwrap_err();
    assert!(matches!(e, firmware::Error::Broker(_)), "{e:?}");

    // The merger's first run creates its persistent session and subscription, then leaves.
    let (ok, out) = merger(port, &dir, &["--idle-exit-s", "1"]).finish(Duration::from_secs(30));
    assert!(ok && out.contains("0 model(s) published"), "{out}");

    // While it is away, the boards publish.
    let a = update("dev-a", 1, &["4", "5"], 0.1);
    let b = update("dev-b", 1, &["6", "7"], 0.7);
    let mut dev_a = Link::connect(&broker_as(port, "dev-a", "a-pw"), "dev-a", true, false).unwrap();
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a), false).unwrap();
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a), false).unwrap(); // lost PUBACK: re-sent
    let mut dev_b = Link::connect(&broker_as(port, "dev-b", "b-pw"), "dev-b", true, false).unwrap();
    // Under its own topic but naming dev-a in the payload: the merger refuses it.
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-b"), frame(&update("dev-a", 5, &["9"], 0.3)), false).unwrap();
    // Under dev-a's topic: the broker's ACL drops it (MQTT 3.1.1 acknowledges and discards).
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&update("dev-a", 7, &["9"], 0.3)), false).unwrap();
    dev_b.publish(&mqtt::update_topic(FLEET, "dev-b"), frame(&b), false).unwrap();
    dev_b.disconnect();

    // The merger comes back and receives what was queued for its session.
    let (ok, out) = merger(port, &dir, &["--max-merges", "2", "--idle-exit-s", "15"]).finish(Duration::from_secs(60));
    assert!(ok, "{out}");
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
    let log = std::fs::read_to_string(dir.join("broker.log")).unwrap();
    assert!(log.contains("Denied PUBLISH from dev-b"), "the broker did not log the refusal:\n{log}");

    // A board reads the retained fleet model: version 2, both boards, the union of classes, the merge itself.
    dev_a.subscribe(&mqtt::model_topic(FLEET)).unwrap();
    let msg = dev_a.next_message(Duration::from_secs(10)).unwrap().expect("the retained fleet model");
    assert!(msg.retain);
    let model = decode_model(&msg.payload, 64 << 20, FLEET, BASE).unwrap();
    let expected = merge_updates(&[a.clone(), b]).unwrap();
    assert_eq!(model.version, 2);
    assert_eq!(model.merged, [("dev-a".to_string(), 1), ("dev-b".to_string(), 1)]);
    assert_eq!(model.classes, ["4", "5", "6", "7"]);
    assert_eq!(model.params, expected.params);

    // After a restart the merger still knows dev-a's generation 1: a re-send is not merged again.
    dev_a.publish(&mqtt::update_topic(FLEET, "dev-a"), frame(&a), false).unwrap();
    let (ok, out) = merger(port, &dir, &["--idle-exit-s", "2"]).finish(Duration::from_secs(30));
    assert!(ok, "{out}");
    assert!(
        out.contains("0 update(s) stored, 1 repeat(s) ignored, 0 refused, 0 model(s) published; fleet model version 2"),
        "{out}"
    );
    dev_a.disconnect();
    let _ = std::fs::remove_dir_all(&dir);
}
