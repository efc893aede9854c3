//! Reports of simulation runs: aggregate over seeds, Markdown tables for people, JSON for tools; plots of a
//! comparison's aggregates in [`plots`].

pub mod plots;

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runs::simulate::RunResult;
use firmware::method::TaskReport;

/// Mean and sample standard deviation of a list of values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for a single value).
    pub std: f64,
}

impl MeanStd {
    /// Mean ± std of `v` (NaN mean for an empty list).
    pub fn of(v: &[f64]) -> Self {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std =
            if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        Self { mean, std }
    }
}

/// One method on one stream over several seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    /// Stream name.
    pub stream: String,
    /// Method name.
    pub method: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// ACC over seeds.
    pub acc: MeanStd,
    /// BWT over seeds.
    pub bwt: MeanStd,
    /// FWT over seeds (runs without FWT are left out).
    pub fwt: Option<MeanStd>,
    /// Forgetting over seeds.
    pub forgetting: MeanStd,
    /// α per task over seeds, if the method merges.
    pub alpha: Vec<Option<MeanStd>>,
    /// Linearisation error per task over seeds, for tangent-space methods
    /// ([`firmware::method::linearisation_error`]).
    #[serde(default)]
    pub linearisation_error: Vec<Option<MeanStd>>,
    /// Basis size per task (rows) and projected layer (columns), mean over seeds.
    pub basis_sizes: Vec<Vec<f64>>,
    /// Mean wall-clock seconds per run.
    pub seconds: MeanStd,
    /// Bytes kept by the method after the last task (mean over seeds).
    pub bytes_kept: f64,
    /// Capacity of the replay buffer in samples (`--replay`; 0: no replay), the same in every run.
    #[serde(default)]
    pub replay_samples: usize,
    /// Bytes the replay buffer held after the last task (mean over seeds).
    #[serde(default)]
    pub replay_bytes: f64,
    /// Bytes of the model's trainable parameters after the last task (mean over seeds).
    #[serde(default)]
    pub param_bytes: f64,
    /// Bytes of the model's fixed random matrices (mean over seeds; in memory, rebuilt from widths or a seed).
    #[serde(default)]
    pub fixed_bytes: f64,
    /// The individual runs.
    pub runs: Vec<RunResult>,
}

impl Aggregate {
    /// Aggregate runs of the same method and stream.
    pub fn new(runs: Vec<RunResult>) -> Result<Self> {
        let first = runs.first().ok_or_else(|| Error::Invalid("no runs to aggregate".into()))?;
        if runs.iter().any(|r| r.stream != first.stream || r.method != first.method) {
            return Err(Error::Invalid("aggregate mixes streams or methods".into()));
        }
        if runs.iter().any(|r| r.replay_samples != first.replay_samples) {
            return Err(Error::Invalid("aggregate mixes replay buffer sizes".into()));
        }
        let col = |f: &dyn Fn(&RunResult) -> f64| MeanStd::of(&runs.iter().map(f).collect::<Vec<_>>());
        let fwts: Vec<f64> = runs.iter().filter_map(|r| r.summary.fwt).collect();
        let tasks = first.reports.len();
        let per_task = |f: &dyn Fn(&TaskReport) -> Option<f64>| -> Vec<Option<MeanStd>> {
            (0..tasks)
                .map(|t| {
                    let v: Vec<f64> = runs.iter().filter_map(|r| r.reports.get(t).and_then(f)).collect();
                    (!v.is_empty()).then(|| MeanStd::of(&v))
                })
                .collect()
        };
        let alpha = per_task(&|x| x.alpha);
        let linearisation_error = per_task(&|x| x.linearisation_error);
        let basis_sizes = (0..tasks)
            .map(|t| {
                let layers = first.reports[t].basis_sizes.len();
                (0..layers)
                    .map(|l| {
                        let v: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| r.reports.get(t)?.basis_sizes.get(l).map(|&b| b as f64))
                            .collect();
                        MeanStd::of(&v).mean
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            stream: first.stream.clone(),
            method: first.method.clone(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            acc: col(&|r| r.summary.acc),
            bwt: col(&|r| r.summary.bwt),
            fwt: (!fwts.is_empty()).then(|| MeanStd::of(&fwts)),
            forgetting: col(&|r| r.summary.forgetting),
            alpha,
            linearisation_error,
            basis_sizes,
            seconds: col(&|r| r.seconds),
            bytes_kept: col(&|r| r.reports.last().map_or(0.0, |x| x.bytes_kept as f64)).mean,
            replay_samples: first.replay_samples,
            replay_bytes: col(&|r| r.replay_bytes as f64).mean,
            param_bytes: col(&|r| r.param_bytes as f64).mean,
            fixed_bytes: col(&|r| r.fixed_bytes as f64).mean,
            runs,
        })
    }
}

fn pct(m: &MeanStd) -> String {
    format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.std)
}

/// A Markdown summary table with one row per aggregate (ACC, BWT, FWT, forgetting in percent points). When any
/// aggregate replays, two more columns give the replay buffer's capacity (samples) and the bytes it held at the end.
pub fn summary_table(aggs: &[Aggregate]) -> String {
    let replay = aggs.iter().any(|a| a.replay_samples > 0);
    let mut s =
        String::from("| stream | method | seeds | ACC % | BWT % | FWT % | forgetting % | time s | bytes kept |");
    s.push_str(if replay { " replay samples | replay bytes |\n" } else { "\n" });
    s.push_str("|---|---|---|---|---|---|---|---|---|");
    s.push_str(if replay { "---|---|\n" } else { "\n" });
    for a in aggs {
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
            a.stream,
            a.method,
            a.seeds.len(),
            pct(&a.acc),
            pct(&a.bwt),
            a.fwt.as_ref().map_or("–".into(), pct),
            pct(&a.forgetting),
            a.seconds.mean,
            a.bytes_kept
        );
        if replay {
            let _ = write!(s, " {} | {:.0} |", a.replay_samples, a.replay_bytes);
        }
        s.push('\n');
    }
    s
}

/// The accuracy matrix of one run as a Markdown table (percent).
pub fn matrix_table(run: &RunResult) -> String {
    let t = run.tasks.len();
    let mut s = String::from("| after ↓ / on → |");
    for name in &run.tasks {
        let _ = write!(s, " {name} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(t));
    s.push('\n');
    if !run.matrix.random_init.is_empty() {
        s.push_str("| (untrained) |");
        for a in &run.matrix.random_init {
            let _ = write!(s, " {:.1} |", 100.0 * a);
        }
        s.push('\n');
    }
    for (i, row) in run.matrix.rows.iter().enumerate() {
        let _ = write!(s, "| {} |", run.tasks.get(i).map_or("?", String::as_str));
        for a in row {
            let _ = write!(s, " {:.1} |", 100.0 * a);
        }
        s.push('\n');
    }
    s
}

/// Full Markdown report of one aggregate: summary, per-task α and basis sizes, and each seed's matrix.
pub fn markdown(agg: &Aggregate, command: &str) -> String {
    let mut s = format!("## {} on {}\n\nCommand: `{}`\n\n", agg.method, agg.stream, command);
    s.push_str(&summary_table(std::slice::from_ref(agg)));
    if agg.replay_samples > 0 {
        let _ = writeln!(
            s,
            "\nReplay buffer: {} samples (class-balanced reservoir), {:.0} bytes held after the last task (mean over \
             seeds).",
            agg.replay_samples, agg.replay_bytes
        );
    }
    if agg.alpha.iter().any(Option::is_some) {
        s.push_str("\nα per task (mean ± std over seeds):\n\n| task | α |\n|---|---|\n");
        for (t, a) in agg.alpha.iter().enumerate() {
            let _ =
                writeln!(s, "| {} | {} |", t + 1, a.map_or("–".into(), |m| format!("{:.4} ± {:.4}", m.mean, m.std)));
        }
    }
    if agg.linearisation_error.iter().any(Option::is_some) {
        s.push_str(
            "\nLinearisation error per task, ‖f(θ₀+τ) − f_lin(τ)‖ / ‖f(θ₀+τ) − f(θ₀)‖ on the task's validation logits \
             (mean ± std over seeds):\n\n| task | error |\n|---|---|\n",
        );
        for (t, a) in agg.linearisation_error.iter().enumerate() {
            let _ =
                writeln!(s, "| {} | {} |", t + 1, a.map_or("–".into(), |m| format!("{:.4} ± {:.4}", m.mean, m.std)));
        }
    }
    if agg.basis_sizes.iter().any(|b| !b.is_empty()) {
        s.push_str(
            "\nBasis size per projected layer after each task (mean over seeds):\n\n| task | sizes |\n|---|---|\n",
        );
        for (t, b) in agg.basis_sizes.iter().enumerate() {
            let sizes: Vec<String> = b.iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(s, "| {} | {} |", t + 1, sizes.join(" / "));
        }
    }
    for run in &agg.runs {
        let _ = write!(s, "\nAccuracy matrix, seed {} (%):\n\n{}", run.seed, matrix_table(run));
    }
    s
}

/// Write `value` as pretty JSON to `path`, creating parent folders.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text(path, &serde_json::to_string_pretty(value)?)
}

/// Write text to `path`, creating parent folders.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_bytes(path, text.as_bytes())
}

/// Write `bytes` to `path`, creating parent folders.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// ACC after each task `i` (mean of row `i` over tasks `0..=i`), mean over the aggregate's runs.
pub fn acc_curve(agg: &Aggregate) -> Vec<f64> {
    let tasks = agg.runs.first().map_or(0, |r| r.matrix.rows.len());
    (0..tasks)
        .map(|i| {
            let v: Vec<f64> =
                agg.runs.iter().map(|r| r.matrix.rows[i][..=i].iter().sum::<f64>() / (i + 1) as f64).collect();
            MeanStd::of(&v).mean
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_matches_hand_values() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.std - 1.0).abs() < 1e-12);
        assert_eq!(MeanStd::of(&[5.0]).std, 0.0);
    }
}
