//! A mosquitto broker for the fleet (Debian package `mosquitto`): its password file, the fleet's ACL and a
//! configuration that listens on loopback only, and the broker as a child process stopped when dropped. Used by
//! `host fleet demo` (scripts/fleet-demo.sh); the shipped production settings are in
//! docs/fleet-update-format.md, "Transport".

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The fleet's ACL, as shipped (scripts/mosquitto-fleet.acl): the merger reads every board's updates and writes
/// the model; a board (its user name is its device id) writes only its own update topic and reads only the model.
pub const FLEET_ACL: &str = include_str!("../../../scripts/mosquitto-fleet.acl");

/// The mosquitto binary (Debian installs it in /usr/sbin).
pub fn mosquitto() -> Result<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::Invalid("mosquitto is not installed (Debian package mosquitto; scripts/test.sh installs it)".into())
        })
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
    Ok(l.local_addr().map_err(|e| Error::io("127.0.0.1:0", e))?.port())
}

/// Write `dir/passwords` (with `mosquitto_passwd`) for `users` (name, password), `dir/acl` ([`FLEET_ACL`]),
/// `dir/<user>.pw` (each password, for the clients' `--password-file`) and `dir/mosquitto.conf` listening on
/// 127.0.0.1:`port` without anonymous access, logging everything to stderr (the tests read its refusals). With
/// `tls` (a folder with `ca.crt`, `server.crt`, `server.key`, as scripts/fleet-ca.sh writes them) the listener
/// speaks TLS only. Returns the configuration's path.
pub fn write_config(dir: &Path, port: u16, users: &[(String, String)], tls: Option<&Path>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let pw = dir.join("passwords");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        c.arg("-b");
        if i == 0 {
            c.arg("-c");
        }
        let st = c.arg(&pw).arg(user).arg(pass).status().map_err(|e| Error::io("mosquitto_passwd", e))?;
        if !st.success() {
            return Err(Error::Invalid(format!("mosquitto_passwd failed for {user}")));
        }
        let file = dir.join(format!("{user}.pw"));
        std::fs::write(&file, format!("{pass}\n")).map_err(|e| Error::io(&file, e))?;
    }
    let acl = dir.join("acl");
    std::fs::write(&acl, FLEET_ACL).map_err(|e| Error::io(&acl, e))?;
    let conf = dir.join("mosquitto.conf");
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n\
         message_size_limit 0\nlog_dest stderr\nlog_type all\n",
        pw.display(),
        acl.display()
    );
    let mut text = text;
    if let Some(t) = tls {
        for f in ["ca.crt", "server.crt", "server.key"] {
            if !t.join(f).exists() {
                return Err(Error::Invalid(format!("{}: no {f} (scripts/fleet-ca.sh makes them)", t.display())));
            }
        }
        text.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\ntls_version tlsv1.2\n",
            t.join("ca.crt").display(),
            t.join("server.crt").display(),
            t.join("server.key").display()
        ));
    }
    std::fs::write(&conf, text).map_err(|e| Error::io(&conf, e))?;
    Ok(conf)
}

/// A running broker; killed and reaped when dropped.
#[derive(Debug)]
pub struct Broker(Child);

impl Broker {
    /// SIGKILL the broker and reap it (a power cut of the broker's machine, for the tests).
    pub fn kill(&mut self) -> Result<()> {
        self.0.kill().map_err(|e| Error::io("mosquitto", e))?;
        self.0.wait().map_err(|e| Error::io("mosquitto", e))?;
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start mosquitto with `conf` (its log appended to `log`) and wait until 127.0.0.1:`port` accepts connections
/// (at most 10 s).
pub fn start(conf: &Path, port: u16, log: &Path) -> Result<Broker> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| Error::io(log, e))?;
    let child = Command::new(mosquitto()?)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map_err(|e| Error::io("mosquitto", e))?;
    let broker = Broker(child);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(Error::Invalid(format!(
                "mosquitto did not listen on 127.0.0.1:{port} (log: {})",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(broker)
}
