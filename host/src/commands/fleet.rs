//! `host fleet …`: a fleet of boards ([`crate::fleet`]): its simulation, the merger over MQTT and the demo on
//! this machine.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::command_line;
use crate::data;
use crate::fleet::{demo, serve, sim};
use crate::runs::presets::shipped_base;

/// The fleet's commands.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Boards learn different new digits from the shipped base with the device's learner; their updates are merged
    /// (Fisher-weighted and plain average) and scored class-incrementally next to joint training and each board
    /// alone (host/src/fleet/sim.rs).
    Sim(FleetSimArgs),
    /// The fleet's merger: subscribes to edgelearn/<fleet>/+/update over MQTT, stores each update durably,
    /// merges every stored update, each (device, generation) once (Fisher-weighted trunk of each board's newest,
    /// pooled SLDA statistics of all), publishes the fleet model, retained, on edgelearn/<fleet>/model, and
    /// reconnects when the broker goes away; stops cleanly on SIGTERM/SIGINT (host/src/fleet/serve.rs).
    Serve(FleetServeArgs),
    /// A fleet on this machine, every part a real process: mosquitto on loopback, the merger and N boards
    /// (`firmware daemon --fleet`) learning their own MNIST digits from their inboxes; prints the fleet model's
    /// accuracy over all ten digits next to each board alone, the plain average and joint training
    /// (host/src/fleet/demo.rs, scripts/fleet-demo.sh).
    Demo(FleetDemoArgs),
}

/// `host fleet demo`'s options.
#[derive(Debug, Args)]
pub struct FleetDemoArgs {
    /// Number of boards (1 to 8).
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Seed of the dealing of photos.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The shipped base model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Board profile of every board.
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    board: PathBuf,
    /// Folder for the broker, the merger, the boards and fleet-demo.json.
    #[arg(long, default_value = "out/fleet-demo")]
    out: PathBuf,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout_s: u64,
}

/// `host fleet serve`'s options.
#[derive(Debug, Args)]
pub struct FleetServeArgs {
    /// The MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Fleet name.
    #[arg(long)]
    fleet: String,
    /// The fleet's base model id (updates from another base are refused).
    #[arg(long)]
    base_model: String,
    /// The merger's folder (stored updates, published models, refused messages).
    #[arg(long, default_value = "out/fleet-merger")]
    dir: PathBuf,
    /// MQTT user name (the shipped broker configuration requires one).
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the MQTT password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Largest update payload accepted, bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_payload: usize,
    /// Exit after publishing this many models.
    #[arg(long)]
    max_merges: Option<u64>,
    /// Exit after this many seconds without a message (also counted while the broker is unreachable).
    #[arg(long)]
    idle_exit_s: Option<f64>,
    /// Seconds to wait for the broker's acknowledgements.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// TLS to the broker: the CA (PEM) that signed its certificate (scripts/mosquitto-fleet.conf).
    #[arg(long)]
    ca: Option<PathBuf>,
}

/// `host fleet sim`'s options.
#[derive(Debug, Args)]
pub struct FleetSimArgs {
    /// The shipped base model.
    #[arg(long, default_value = "models/mnist-cnn-0123.onnx")]
    model: PathBuf,
    /// Where the frozen prefix ends (the daemon's default).
    #[arg(long, default_value = "last:2")]
    cut: String,
    /// Board profile of every board.
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    board: PathBuf,
    /// Fleet sizes, comma separated.
    #[arg(long, default_value = "2,4,8")]
    devices: String,
    /// Seeds, comma separated.
    #[arg(long, default_value = "0,1,2")]
    seeds: String,
    /// Epochs per learning stage.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder for fleet-sim.json and fleet-sim.md.
    #[arg(long, default_value = "out/fleet-sim")]
    out: PathBuf,
}

/// Run one fleet command.
pub fn run(cmd: FleetCmd) -> anyhow::Result<()> {
    match cmd {
        FleetCmd::Sim(a) => run_sim(a),
        FleetCmd::Serve(a) => run_serve(a),
        FleetCmd::Demo(a) => run_demo(a),
    }
}

/// `host fleet demo`: the fleet on this machine, then its report.
fn run_demo(a: FleetDemoArgs) -> anyhow::Result<()> {
    let cfg = demo::DemoConfig {
        model: a.model.unwrap_or_else(shipped_base),
        board: a.board,
        devices: a.devices,
        seed: a.seed,
        out: a.out,
        data_dir: a.data_dir.unwrap_or_else(data::data_dir),
        timeout: std::time::Duration::from_secs(a.timeout_s),
    };
    let r = demo::run(&cfg)?;
    print!("{}", demo::markdown(&r));
    Ok(())
}

/// `host fleet serve`: the merger until it is stopped (a signal, `--max-merges`, `--idle-exit-s`).
fn run_serve(a: FleetServeArgs) -> anyhow::Result<()> {
    let secs = |s: f64, what: &str| -> anyhow::Result<std::time::Duration> {
        std::time::Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{what}: {s} is not a duration"))
    };
    let mut broker = firmware::fleet::mqtt::BrokerConfig::parse(&a.broker)?;
    broker.timeout = secs(a.timeout_s, "--timeout-s")?;
    broker.ca = a.ca;
    if let Some(user) = a.user {
        let password = match a.password_file {
            Some(p) => std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        broker.credentials = Some((user, password));
    }
    let cfg = serve::ServeConfig {
        broker,
        fleet: a.fleet,
        base_model: a.base_model,
        dir: a.dir,
        max_payload: a.max_payload,
        max_merges: a.max_merges,
        idle_exit: a.idle_exit_s.map(|s| secs(s, "--idle-exit-s")).transpose()?,
    };
    let stop = stop_on_signals()?;
    let r = serve::serve_until(&cfg, &stop)?;
    println!(
        "merger: {} update(s) stored, {} repeat(s) ignored, {} refused, {} model(s) published; fleet model version {}; \
         {} reconnection(s)",
        r.accepted, r.repeats, r.refused, r.published, r.version, r.reconnects
    );
    Ok(())
}

/// A flag set by the first SIGTERM or SIGINT, for a clean stop; a second one ends the process at once. The two
/// signals are blocked in this thread (and so in every thread started after it) and waited for by a thread of
/// their own, so no signal handler runs.
fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use nix::sys::signal::{SigSet, Signal};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(|e| anyhow::anyhow!("blocking SIGTERM/SIGINT: {e}"))?;
    let flag = std::sync::Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { return };
                if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    std::process::exit(128 + sig as i32);
                }
                tracing::info!(signal = %sig, "stopping after the current message (again to exit at once)");
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the signal thread: {e}"))?;
    Ok(stop)
}

/// `host fleet sim`: every fleet size and seed, then the report.
fn run_sim(a: FleetSimArgs) -> anyhow::Result<()> {
    let list = |s: &str, what: &str| -> anyhow::Result<Vec<u64>> {
        s.split(',').map(|x| x.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("{what}: bad value '{x}'"))).collect()
    };
    let devices: Vec<usize> = list(&a.devices, "--devices")?.into_iter().map(|d| d as usize).collect();
    if devices.iter().any(|&d| d == 0 || d > 8) {
        anyhow::bail!("--devices: fleet sizes from 1 to 8 (the joint board holds 8 sample buffers)");
    }
    let cfg = sim::FleetSimConfig {
        model: a.model,
        cut: a.cut,
        board: a.board,
        devices,
        seeds: list(&a.seeds, "--seeds")?,
        epochs: a.epochs,
        data_dir: a.data_dir.unwrap_or_else(data::data_dir),
    };
    let runs = sim::run(&cfg)?;
    let command = command_line();
    println!("{}", sim::write(&runs, &command, &a.out)?);
    Ok(())
}
