//! The fleet's transport: MQTT 3.1.1 through a broker (mosquitto in the project's scripts and tests), with
//! rumqttc's blocking client. Topics:
//!
//! - `edgelearn/<fleet>/<device>/update` — a board's [`crate::FleetUpdate`] frame, QoS 1;
//! - `edgelearn/<fleet>/model` — the merger's [`crate::FleetModel`] frame, QoS 1, retained.
//!
//! Fleet and device ids are 1–64 characters of `[A-Za-z0-9_-]` ([`check_id`]), so an id can never be an MQTT
//! wildcard or a topic level separator. Who may publish where is the broker's business (its ACL: a device writes
//! only under its own id and reads only the model); this module only reports a refusal it can see (a refused
//! connection or subscription) as [`Error::Broker`].
//!
//! [`Link`] drives rumqttc's event loop itself: every call polls the connection until its acknowledgement
//! arrives or its deadline passes, and incoming messages met on the way are queued for [`Link::next_message`].
//! With `manual_acks` (the merger) a QoS 1 message is acknowledged only by [`Link::ack`], after the receiver has
//! stored it durably: a crash before that makes the broker deliver it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};

use edgelearn_core::error::{Error, Result};

/// The largest MQTT packet a [`Link`] sends or accepts: a fleet frame with room for a 2048-wide SLDA head.
pub const MAX_PACKET: usize = 64 << 20;

/// `edgelearn/<fleet>/<device>/update`.
pub fn update_topic(fleet: &str, device: &str) -> String {
    format!("edgelearn/{fleet}/{device}/update")
}

/// `edgelearn/<fleet>/+/update`: every board's updates (the merger's subscription).
pub fn update_filter(fleet: &str) -> String {
    format!("edgelearn/{fleet}/+/update")
}

/// `edgelearn/<fleet>/model`.
pub fn model_topic(fleet: &str) -> String {
    format!("edgelearn/{fleet}/model")
}

/// The device id of an update topic of `fleet`, or `None` for any other topic.
pub fn device_of_update_topic<'a>(topic: &'a str, fleet: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix("edgelearn/")?.strip_prefix(fleet)?.strip_prefix('/')?;
    let device = rest.strip_suffix("/update")?;
    check_id(device, "device id").ok().map(|()| device)
}

/// A fleet or device id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn check_id(id: &str, what: &str) -> Result<()> {
    let ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(Error::Config(format!("{what} {id:?}: use 1-64 characters of A-Z a-z 0-9 _ -"))) }
}

/// Where the broker is and who connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 is MQTT's).
    pub port: u16,
    /// User name and password, when the broker asks for them (the shipped configuration does).
    pub credentials: Option<(String, String)>,
    /// How long to wait for the broker's acknowledgement of a connection, subscription or publish.
    pub timeout: Duration,
    /// TLS: the PEM file of the CA that signed the broker's certificate (feature `tls`, the firmware's `fleet-tls`; `None`: plain TCP).
    /// The broker's certificate must name `host`.
    pub ca: Option<std::path::PathBuf>,
}

impl BrokerConfig {
    /// `host:port` with the default timeout (10 s) and no credentials.
    pub fn parse(addr: &str) -> Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| Error::Config(format!("broker address {addr:?}: expected host:port")))?;
        Ok(Self { host: host.to_string(), port, credentials: None, timeout: Duration::from_secs(10), ca: None })
    }
}

/// TLS with the CA in the PEM file `ca` (rustls, ring provider), the broker's name checked against its certificate.
#[cfg(feature = "tls")]
fn tls_transport(ca: &std::path::Path) -> Result<rumqttc::Transport> {
    let pem = std::fs::read(ca).map_err(|source| Error::Io { context: format!("reading {}", ca.display()), source })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Config(format!("{}: not a PEM certificate", ca.display())));
    }
    // rumqttc builds its rustls config with the process's default provider: ring (installed once; a second
    // install reports the first, which is the same provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
        ca: pem,
        alpn: None,
        client_auth: None,
    }))
}

#[cfg(not(feature = "tls"))]
fn tls_transport(ca: &std::path::Path) -> Result<rumqttc::Transport> {
    Err(Error::Config(format!(
        "TLS to the broker (CA {}) needs a firmware built with the fleet-tls feature",
        ca.display()
    )))
}

/// One client's connection to the broker.
pub struct Link {
    client: Client,
    conn: Connection,
    timeout: Duration,
    inbox: VecDeque<Publish>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("timeout", &self.timeout).field("queued", &self.inbox.len()).finish()
    }
}

fn broker_err(what: impl std::fmt::Display) -> Error {
    Error::Broker(what.to_string())
}

impl Link {
    /// Connect as `client_id`. `clean_session = false` keeps the session (subscriptions, QoS 1 messages not yet
    /// acknowledged) at the broker while this client is away. `manual_acks`: incoming QoS 1 messages wait for
    /// [`Link::ack`]. Waits for the broker's CONNACK: a refusal (bad credentials) or no answer is an error.
    pub fn connect(broker: &BrokerConfig, client_id: &str, clean_session: bool, manual_acks: bool) -> Result<Self> {
        check_id(client_id, "client id")?;
        let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(clean_session)
            .set_manual_acks(manual_acks)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((user, password)) = &broker.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        if let Some(ca) = &broker.ca {
            opts.set_transport(tls_transport(ca)?);
        }
        let (client, conn) = Client::new(opts, 16);
        let mut link = Self { client, conn, timeout: broker.timeout, inbox: VecDeque::new() };
        link.wait_for("the connection", |p| matches!(p, Packet::ConnAck(_)))?;
        Ok(link)
    }

    /// Subscribe to `filter` at QoS 1 and wait for the SUBACK; a refused subscription is an error.
    pub fn subscribe(&mut self, filter: &str) -> Result<()> {
        self.client.subscribe(filter, QoS::AtLeastOnce).map_err(broker_err)?;
        let mut refused = false;
        self.wait_for(&format!("the subscription to {filter}"), |p| match p {
            Packet::SubAck(s) => {
                refused = s.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure));
                true
            }
            _ => false,
        })?;
        if refused { Err(broker_err(format!("subscription to {filter} refused"))) } else { Ok(()) }
    }

    /// Publish `payload` on `topic` at QoS 1 and wait for the broker's PUBACK. (MQTT 3.1.1 has no negative
    /// acknowledgement: a broker whose ACL forbids the topic acknowledges and drops the message.)
    pub fn publish(&mut self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<()> {
        if payload.len() > MAX_PACKET - topic.len() - 16 {
            return Err(Error::Config(format!("{} bytes do not fit one MQTT packet of this link", payload.len())));
        }
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).map_err(broker_err)?;
        self.wait_for(&format!("the acknowledgement of a publish on {topic}"), |p| matches!(p, Packet::PubAck(_)))
    }

    /// The next incoming message (topic, payload), waiting up to `wait`; `None` when none came. With
    /// `manual_acks`, acknowledge it with [`Link::ack`] once it is safe.
    pub fn next_message(&mut self, wait: Duration) -> Result<Option<Publish>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = self.inbox.pop_front() {
                return Ok(Some(p));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.poll(left)?;
        }
    }

    /// Acknowledge a QoS 1 message received with `manual_acks` (the broker forgets it once the PUBACK is sent).
    pub fn ack(&mut self, message: &Publish) -> Result<()> {
        self.client.ack(message).map_err(broker_err)?;
        // Let the event loop write the PUBACK out.
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            if let Some(Event::Outgoing(Outgoing::PubAck(_))) = self.poll(deadline - Instant::now())? {
                return Ok(());
            }
        }
        Err(broker_err("the acknowledgement was not sent in time"))
    }

    /// Disconnect cleanly (best effort: the broker may already be gone).
    pub fn disconnect(mut self) {
        if self.client.disconnect().is_ok() {
            let _ = self.poll(Duration::from_millis(200));
        }
    }

    /// Poll the event loop once for up to `wait`; incoming PUBLISHes are queued. `Ok(None)`: nothing came.
    fn poll(&mut self, wait: Duration) -> Result<Option<Event>> {
        match self.conn.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                self.inbox.push_back(p);
                Ok(None)
            }
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(e)) => Err(broker_err(e)),
            Err(rumqttc::RecvTimeoutError::Timeout) => Ok(None),
            Err(rumqttc::RecvTimeoutError::Disconnected) => Err(broker_err("the connection closed")),
        }
    }

    /// Poll until an incoming packet satisfies `done`, or fail after the link's timeout.
    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&Packet) -> bool) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(broker_err(format!("no answer from the broker for {what} in {:?}", self.timeout)));
            }
            if let Some(Event::Incoming(p)) = self.poll(left)?
                && done(&p)
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_ids() {
        assert_eq!(update_topic("lab", "cam-1"), "edgelearn/lab/cam-1/update");
        assert_eq!(model_topic("lab"), "edgelearn/lab/model");
        assert_eq!(device_of_update_topic("edgelearn/lab/cam-1/update", "lab"), Some("cam-1"));
        for t in ["edgelearn/lab/model", "edgelearn/lab2/cam-1/update", "edgelearn/lab/a/b/update", "x/lab/c/update"] {
            assert_eq!(device_of_update_topic(t, "lab"), None, "{t}");
        }
        for bad in ["", "a/b", "+", "#", "a b", &"x".repeat(65)] {
            assert!(check_id(bad, "device id").is_err(), "{bad:?}");
        }
        assert!(check_id("Cam_01-x", "device id").is_ok());
        let b = BrokerConfig::parse("127.0.0.1:1883").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 1883));
        for bad in ["127.0.0.1", ":1883", "h:99999", "h:x"] {
            assert!(BrokerConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_broker_is_a_typed_error_in_bounded_time() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut b = BrokerConfig::parse(&format!("127.0.0.1:{port}")).unwrap();
        b.timeout = Duration::from_secs(2);
        let t0 = Instant::now();
        let e = Link::connect(&b, "probe", true, false).unwrap_err();
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
