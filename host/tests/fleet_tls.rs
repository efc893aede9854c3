//! The fleet's link over TLS (issue 18): a self-signed CA and a broker certificate made by scripts/fleet-ca.sh,
//! mosquitto (Debian package, scripts/test.sh installs it) on 127.0.0.1 with a TLS-only listener, the fleet's
//! password file and ACL ([`host::fleet::broker`]). A board publishes an update over TLS and the merger's
//! subscription receives it intact; a client without TLS, and one that trusts another CA, are refused. Bounded in
//! time; the broker is killed when the test ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use firmware::fisher::FisherFormat;
use firmware::fleet::mqtt::{self, BrokerConfig, Link};
use firmware::fleet::{decode_update, encode_update, fixture};
use host::fleet::broker;

fn make_ca(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fleet-ca.sh");
    let st = Command::new("bash").arg(&script).arg(dir).arg("localhost").status().expect("bash scripts/fleet-ca.sh");
    assert!(st.success(), "scripts/fleet-ca.sh failed (the openssl command is needed)");
}

fn as_user(port: u16, user: &str, pass: &str, ca: Option<&Path>) -> BrokerConfig {
    let mut b = BrokerConfig::parse(&format!("localhost:{port}")).unwrap();
    b.credentials = Some((user.into(), pass.into()));
    b.timeout = Duration::from_secs(5);
    b.ca = ca.map(Path::to_path_buf);
    b
}

#[test]
fn updates_travel_over_tls_and_clients_without_the_ca_are_refused() {
    let dir = std::env::temp_dir().join(format!("edgelearn-fleet-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir.join("ca"));
    make_ca(&dir.join("other"));
    let port = broker::free_port().unwrap();
    let users = [("merger", "m-pw"), ("dev-a", "a-pw")].map(|(u, p)| (u.to_string(), p.to_string()));
    let conf = broker::write_config(&dir, port, &users, Some(&dir.join("ca"))).unwrap();
    let _broker = broker::start(&conf, port, &dir.join("broker.log")).expect("mosquitto with TLS listening");
    let ca = dir.join("ca/ca.crt");

    let mut merger = Link::connect(&as_user(port, "merger", "m-pw", Some(&ca)), "merger-lab", true, false)
        .unwrap_or_else(|e| {
            panic!("merger over TLS: {e}\n{}", std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default())
        });
    merger.subscribe(&mqtt::update_filter("lab")).unwrap();
    let u = fixture::update("lab", "base-1", "dev-a", 1, &["cat", "dog"], 1.0, FisherFormat::F16).unwrap();
    let frame = encode_update(&u, 1 << 20).unwrap();
    let mut board = Link::connect(&as_user(port, "dev-a", "a-pw", Some(&ca)), "dev-a", true, false).unwrap();
    board.publish(&mqtt::update_topic("lab", "dev-a"), frame.clone(), false).unwrap();
    let t0 = Instant::now();
    let msg = loop {
        if let Some(m) = merger.next_message(Duration::from_millis(200)).unwrap() {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the update did not arrive over TLS");
    };
    assert_eq!(msg.payload.as_ref(), &frame[..]);
    assert_eq!(decode_update(&msg.payload, 1 << 20, "dev-a", "base-1").unwrap(), u);
    board.disconnect();
    merger.disconnect();

    // Plain TCP to the TLS listener, and TLS trusting another CA: no connection.
    let t0 = Instant::now();
    let plain = Link::connect(&as_user(port, "dev-a", "a-pw", None), "dev-a", true, false);
    assert!(matches!(plain, Err(firmware::Error::Broker(_))), "{plain:?}");
    let other = Link::connect(&as_user(port, "dev-a", "a-pw", Some(&dir.join("other/ca.crt"))), "dev-a", true, false);
    assert!(other.is_err(), "a broker certificate from another CA was accepted");
    assert!(t0.elapsed() < Duration::from_secs(15));
    // Not a PEM file: a typed error before any connection.
    let bad = Link::connect(&as_user(port, "dev-a", "a-pw", Some(&conf)), "dev-a", true, false);
    assert!(matches!(bad, Err(firmware::Error::Config(_))), "{bad:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
