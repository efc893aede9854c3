//! The command line, one module per subcommand group: each holds the group's clap arguments and the function
//! that runs it (reading the arguments, calling the job's module, printing and writing its reports). `main.rs`
//! parses the top-level command and dispatches here; nothing outside `commands` depends on it.

pub mod bench;
pub mod camera;
pub mod compare;
pub mod data;
pub mod device;
pub mod device_learn;
pub mod fisher_alpha;
pub mod fleet;
pub mod footprint;
pub mod onnx;
pub mod simulate;
pub mod stream;

use anyhow::bail;

use crate::error::{Error, Result};

/// The command line as typed, for the reports' "command" line.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// A comma-separated list of `what`s (seeds, formats, …); an error names the bad item.
pub fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>> {
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<T>().map_err(|_| anyhow::anyhow!("bad {what} '{x}'")))
        .collect::<anyhow::Result<Vec<T>>>()?;
    if v.is_empty() {
        bail!("no {what} given");
    }
    Ok(v)
}

/// A comma-separated list of class ids, e.g. `0,1,2,3`.
pub fn parse_classes(s: &str) -> Result<Vec<usize>> {
    let v = s
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|_| Error::Invalid(format!("bad class '{c}' in '{s}'"))))
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        return Err(Error::Invalid("no classes given".into()));
    }
    Ok(v)
}
