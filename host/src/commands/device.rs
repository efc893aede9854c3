//! `host device …`: drive a device daemon over a serial port or a pseudo-terminal with the client of
//! [`crate::device`], one line per reply.

use std::fs::File;
use std::time::Duration;

use firmware::protocol::{Request, Response};

use crate::device::{DeviceClient, describe, image_file, input_geometry, unexpected};
use crate::error::{Error, Result};
use crate::reports::write_bytes;

/// `host device`: drive a device daemon over a serial port or a pseudo-terminal.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// The tty the device is on (e.g. /dev/ttyUSB0, or one end of `socat pty,raw,echo=0 pty,raw,echo=0`).
    #[arg(long)]
    pub port: std::path::PathBuf,
    /// Line speed (default: leave the port as it is).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Seconds to wait for each reply (learning a task takes a while).
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// What to do.
    #[command(subcommand)]
    pub action: DeviceAction,
}

/// One `host device` action.
#[derive(Debug, clap::Subcommand)]
pub enum DeviceAction {
    /// Firmware version, board and input shape.
    Hello,
    /// Generation, phase, tasks, classes, buffered samples, inbox, last alpha, budget use.
    Status,
    /// Send images (PNG/JPEG) as samples of a class (a new name is a new class).
    Add {
        /// Class name.
        #[arg(long)]
        class: String,
        /// Image files.
        #[arg(required = true)]
        images: Vec<std::path::PathBuf>,
    },
    /// Drop the samples buffered so far and begin a new task.
    BeginTask,
    /// Learn the buffered samples and the inbox photos as one task; commit.
    Learn,
    /// Classify images.
    Predict {
        /// Image files.
        #[arg(required = true)]
        images: Vec<std::path::PathBuf>,
    },
    /// Fetch the device's current model as ONNX.
    Export {
        /// Where to write it.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Delete the device's learned state (back to the shipped model).
    Reset {
        /// Required: this forgets everything the device learned.
        #[arg(long)]
        yes: bool,
    },
}

/// Run `host device …`, printing one line per reply.
pub fn run(a: &DeviceArgs) -> Result<()> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(Error::Invalid(format!("--timeout: need a positive number of seconds, got {}", a.timeout)));
    }
    let mut dev = DeviceClient::open(&a.port, a.baud, Duration::from_secs_f64(a.timeout))?;
    let geometry = |dev: &mut DeviceClient<File>| -> Result<(usize, u32, u32)> {
        match dev.hello()? {
            Response::Hello { input, .. } => input_geometry(&input),
            other => Err(unexpected(&other)),
        }
    };
    match &a.action {
        DeviceAction::Hello => println!("{}", describe(&dev.hello()?)),
        DeviceAction::Status => println!("{}", describe(&Response::Status(dev.status()?))),
        DeviceAction::Add { class, images } => {
            let (c, w, h) = geometry(&mut dev)?;
            for path in images {
                let image = image_file(path, c, w, h)?;
                let r = dev.call(Request::AddSample { class: class.clone(), image })?;
                println!("{}: {}", path.display(), describe(&r));
            }
        }
        DeviceAction::BeginTask => println!("{}", describe(&dev.call(Request::BeginTask)?)),
        DeviceAction::Learn => println!("{}", describe(&dev.call(Request::Learn)?)),
        DeviceAction::Predict { images } => {
            let (c, w, h) = geometry(&mut dev)?;
            for path in images {
                let (id, class, conf) = dev.predict(image_file(path, c, w, h)?)?;
                println!("{}: class {id} '{class}' (confidence {:.1} %)", path.display(), 100.0 * conf);
            }
        }
        DeviceAction::Export { out } => {
            let bytes = dev.export_onnx()?;
            write_bytes(out, &bytes)?;
            println!("ONNX model written to {} ({} bytes)", out.display(), bytes.len());
        }
        DeviceAction::Reset { yes } => {
            if !yes {
                return Err(Error::Invalid("reset forgets everything the device learned: pass --yes".into()));
            }
            dev.reset()?;
            println!("{}", describe(&Response::ResetDone));
        }
    }
    Ok(())
}
