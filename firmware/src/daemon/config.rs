//! The daemon's command line (parsed by hand: the firmware carries no CLI framework).

use std::path::PathBuf;

/// Usage text of `firmware daemon`.
pub const USAGE: &str = "usage: firmware daemon --board FILE --model FILE --state DIR [options]

Runs the device: serial protocol, learn button, status LED, inbox folder. Stops cleanly on SIGTERM/SIGINT.
  --board FILE          board profile (boards/*.toml): budgets, max_classes, Fisher format
  --model FILE          ONNX model to start from (e.g. models/mnist-cnn-0123.onnx)
  --state DIR           state store folder (created if needed; the newest committed state is loaded)
  --inbox DIR           folder with inbox/<class>/ photos, processed/ and rejected/ (default: none)
  --serial TTY          tty for the protocol (a UART, a USB adapter or a pseudo-terminal; default: none)
  --baud N              line speed of --serial (default: leave as is)
  --cut CUT             where the frozen prefix ends: last:K, a tensor name or input (default last:2)
  --classes A,B,...     names of the model's existing outputs (default 0,1,...)
  --preprocess FILE     the model's preprocessing spec (edgelearn-preprocess/1 JSON; default: the one in the
                        model file's metadata, else <model>.preprocess.json beside it, else --norm)
  --engine E            what runs the frozen prefix: tract (default) or onnxruntime (a firmware built with the
                        onnxruntime feature; the library from ORT_DYLIB_PATH)
  --norm MEAN,STD       pixel normalisation (p/255 - MEAN)/STD of a model without a spec (default 0.1307,0.3081)
  --epochs N            epochs per learning stage (default 3)
  --lr X                learning rate (default 0.01)
  --batch N             batch size (default 10)
  --seed S              seed (default 0)
  --gpio-chip DEV       GPIO character device of the LED and button (e.g. /dev/gpiochip0)
  --led-line N          status LED line of --gpio-chip (lit when high; --led-active-low to invert)
  --button-line N       learn button line of --gpio-chip (pressed when low; --button-active-high to invert)
  --led-active-low, --button-active-high
  --fleet NAME          join fleet NAME (needs a firmware built with the fleet-mqtt feature): learn with the
                        fleet method, send each learned task's update to the broker, adopt the fleet model
  --device-id ID        this board's id in the fleet (its MQTT client id and topic level)
  --broker HOST:PORT    the fleet's MQTT broker
  --broker-user USER    user name at the broker (default: the device id)
  --broker-password-file FILE   the password (first line of FILE)
  --broker-ca FILE      TLS to the broker, whose certificate FILE's CA signed (PEM; feature fleet-tls)
  --fleet-base ID       the fleet's base model id (default: the model file's id, firmware::fleet::base_model_id)
  --fleet-resend-s S    send an update again when no fleet model has shown it merged S seconds after it was
                        sent (default 30)
  --learn-interval S    learn the waiting inbox photos on its own, at most every S seconds (default: only on a
                        learn request or the button)
  --pause-after-commit MS   testing: wait MS between committing a task and moving its photos out of the inbox
                        (widens the crash window that the daemon kill test aims at; default 0)
Logs go to stderr; EDGELEARN_LOG sets the level (default info).";

/// Everything the daemon needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Board profile file.
    pub board: PathBuf,
    /// ONNX model file.
    pub model: PathBuf,
    /// State store folder.
    pub state: PathBuf,
    /// Inbox root (inbox/, processed/, rejected/).
    pub inbox: Option<PathBuf>,
    /// Protocol tty.
    pub serial: Option<PathBuf>,
    /// Line speed of the tty.
    pub baud: Option<u32>,
    /// Cut of the ONNX model (`last:K`, tensor name, `input`).
    pub cut: String,
    /// Names of the model's existing outputs.
    pub classes: Option<Vec<String>>,
    /// Pixel normalisation (mean, std) of a model without a preprocessing spec.
    pub norm: (f32, f32),
    /// The model's preprocessing spec (`--preprocess`; default: the one in the model file's metadata or
    /// `<model>.preprocess.json` beside it, [`crate::inbox::Preprocess::discover`]).
    pub preprocess: Option<PathBuf>,
    /// What runs the frozen prefix (`--engine`; tract by default).
    pub engine: crate::onnx::Engine,
    /// Epochs per stage.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// Batch size.
    pub batch: usize,
    /// Seed.
    pub seed: u64,
    /// GPIO character device.
    pub gpio_chip: Option<PathBuf>,
    /// LED line.
    pub led_line: Option<u32>,
    /// Button line.
    pub button_line: Option<u32>,
    /// LED lit when its line is low.
    pub led_active_low: bool,
    /// Button pressed when its line is high.
    pub button_active_high: bool,
    /// Testing: milliseconds to wait between committing a learned task and moving its photos to `processed/`
    /// (0: none). Widens the window in which a crash leaves committed photos in the inbox.
    pub pause_after_commit_ms: u64,
    /// Learn waiting inbox photos on its own at most every this many milliseconds (0: only on request).
    pub learn_interval_ms: u64,
    /// The fleet the board belongs to (`--fleet` …); `None`: a board on its own.
    pub fleet: Option<FleetOptions>,
}

/// The `--fleet` options.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOptions {
    /// Fleet name.
    pub fleet: String,
    /// This board's id.
    pub device: String,
    /// Broker `host:port`.
    pub broker: String,
    /// User name at the broker (default: the device id).
    pub user: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// TLS: the CA (PEM) that signed the broker's certificate.
    pub ca: Option<PathBuf>,
    /// The fleet's base model id (default: derived from the model file).
    pub base: Option<String>,
    /// Seconds after which an update no fleet model has shown merged is sent again.
    pub resend_s: f64,
}

impl Config {
    /// Defaults around the three required paths.
    pub fn new(board: impl Into<PathBuf>, model: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Self {
            board: board.into(),
            model: model.into(),
            state: state.into(),
            inbox: None,
            serial: None,
            baud: None,
            cut: "last:2".into(),
            classes: None,
            norm: (0.1307, 0.3081),
            preprocess: None,
            engine: crate::onnx::Engine::Tract,
            epochs: 3,
            lr: 0.01,
            batch: 10,
            seed: 0,
            gpio_chip: None,
            led_line: None,
            button_line: None,
            led_active_low: false,
            button_active_high: false,
            pause_after_commit_ms: 0,
            learn_interval_ms: 0,
            fleet: None,
        }
    }

    /// Parse the arguments after `daemon`. Errors are one line, for the user; `Ok(None)` asks for the usage.
    pub fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let (mut board, mut model, mut state) = (None, None, None);
        let mut c = Self::new("", "", "");
        let mut it = args.iter();
        let (mut fleet, mut device, mut broker, mut user, mut password_file, mut base) =
            (None, None, None, None, None, None);
        let mut resend_s: Option<f64> = None;
        let mut ca: Option<PathBuf> = None;
        fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: '{v}' is not a valid number"))
        }
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--board" => board = Some(PathBuf::from(value()?)),
                "--model" => model = Some(PathBuf::from(value()?)),
                "--state" => state = Some(PathBuf::from(value()?)),
                "--inbox" => c.inbox = Some(PathBuf::from(value()?)),
                "--serial" => c.serial = Some(PathBuf::from(value()?)),
                "--baud" => c.baud = Some(num(flag, &value()?)?),
                "--cut" => c.cut = value()?,
                "--classes" => {
                    let v = value()?;
                    let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
                    if names.iter().any(String::is_empty) {
                        return Err(format!("--classes: empty class name in '{v}'"));
                    }
                    c.classes = Some(names);
                }
                "--norm" => {
                    let v = value()?;
                    let (m, s) = v.split_once(',').ok_or_else(|| format!("--norm: '{v}' is not MEAN,STD"))?;
                    let (m, s): (f32, f32) = (num(flag, m.trim())?, num(flag, s.trim())?);
                    if !(m.is_finite() && s.is_finite() && s > 0.0) {
                        return Err(format!("--norm: need a finite mean and a positive std, got '{v}'"));
                    }
                    c.norm = (m, s);
                }
                "--preprocess" => c.preprocess = Some(PathBuf::from(value()?)),
                "--engine" => c.engine = value()?.parse().map_err(|e| format!("--engine: {e}"))?,
                "--epochs" => c.epochs = num(flag, &value()?)?,
                "--lr" => c.lr = num(flag, &value()?)?,
                "--batch" => c.batch = num(flag, &value()?)?,
                "--seed" => c.seed = num(flag, &value()?)?,
                "--gpio-chip" => c.gpio_chip = Some(PathBuf::from(value()?)),
                "--led-line" => c.led_line = Some(num(flag, &value()?)?),
                "--button-line" => c.button_line = Some(num(flag, &value()?)?),
                "--led-active-low" => c.led_active_low = true,
                "--button-active-high" => c.button_active_high = true,
                "--pause-after-commit" => c.pause_after_commit_ms = num(flag, &value()?)?,
                "--learn-interval" => {
                    let v: f64 = num(flag, &value()?)?;
                    if !(v.is_finite() && v > 0.0 && v <= 604_800.0) {
                        return Err(format!("--learn-interval: 0 < S <= 604800, got {v}"));
                    }
                    c.learn_interval_ms = (v * 1000.0).round().max(1.0) as u64;
                }
                "--fleet" => fleet = Some(value()?),
                "--device-id" => device = Some(value()?),
                "--broker" => broker = Some(value()?),
                "--broker-user" => user = Some(value()?),
                "--broker-password-file" => password_file = Some(PathBuf::from(value()?)),
                "--fleet-base" => base = Some(value()?),
                "--broker-ca" => ca = Some(PathBuf::from(value()?)),
                "--fleet-resend-s" => {
                    let v: f64 = num(flag, &value()?)?;
                    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                        return Err(format!("--fleet-resend-s: 0 < S <= 86400, got {v}"));
                    }
                    resend_s = Some(v);
                }
                "--help" | "-h" => return Ok(None),
                other => return Err(format!("daemon: unknown option '{other}'")),
            }
        }
        if c.epochs == 0 || c.batch == 0 {
            return Err("--epochs and --batch must be at least 1".into());
        }
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(format!("--lr: need a positive learning rate, got {}", c.lr));
        }
        if (c.led_line.is_some() || c.button_line.is_some()) && c.gpio_chip.is_none() {
            return Err("--led-line / --button-line need --gpio-chip".into());
        }
        match (fleet, device, broker) {
            (Some(fleet), Some(device), Some(broker)) => {
                let resend_s = resend_s.unwrap_or(30.0);
                c.fleet = Some(FleetOptions { fleet, device, broker, user, password_file, ca, base, resend_s });
            }
            (None, None, None) if user.is_none() && password_file.is_none() && base.is_none() && resend_s.is_none() => {
            }
            _ => return Err("--fleet needs --device-id and --broker (and the other fleet options need --fleet)".into()),
        }
        c.board = board.ok_or("daemon: --board FILE is required")?;
        c.model = model.ok_or("daemon: --model FILE is required")?;
        c.state = state.ok_or("daemon: --state DIR is required")?;
        Ok(Some(c))
    }
}
