//! GEMM benchmark (not a test): the firmware's candidate kernels ([`firmware::nn::gemm::Kernel`]) on the shapes a
//! task update runs, at 1 and more threads, against PyTorch's matmul on the same shapes and its 1024³ peak,
//! measured in the same run by `scripts/bench_gemm_torch.py` (`scripts/bench-gemm.sh` runs both).
//!
//! Throughput is `2·m·n·k / seconds` (GFLOP/s), best of several timed batches of calls; "% of peak" is against
//! PyTorch's 1024³ matmul with the same thread count.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use firmware::nn::gemm::{KERNEL, Kernel, gemm_with, threads_for};
use ndarray::Array2;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Heading of the section of `docs/benchmarks.md` that [`table`] fills.
pub const GEMM_SECTION: &str = "## GEMM: kernels on the update's shapes";

/// The name of the firmware's own call in the results: [`KERNEL`] with [`threads_for`]'s thread count.
pub const FIRMWARE: &str = "firmware";

/// One GEMM the task update runs: `C (m×n) = op(A) (m×k) · op(B) (k×n)`, with `A` stored transposed when `ta`
/// (a `Gᵀ·X` weight gradient) and `B` stored transposed when `tb` (an `X·Wᵀ` forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GemmShape {
    /// What the product is.
    pub name: &'static str,
    /// Rows of C.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// A is stored k×m (the product reads its transpose).
    pub ta: bool,
    /// B is stored n×k.
    pub tb: bool,
}

const fn shape(name: &'static str, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> GemmShape {
    GemmShape { name, m, k, n, ta, tb }
}

/// The shapes: Split-MNIST's MLP (784-256-256, batch 64), the LeNet CNN of Split-(Fashion-)MNIST (20 and 50
/// filters of 5×5 on 28×28, batch 64: im2col products), and the 1024³ product the peak is measured with.
pub const SHAPES: &[GemmShape] = &[
    shape("mlp fc1 forward X·Wᵀ", 64, 784, 256, false, true),
    shape("mlp fc1 weight grad Gᵀ·X", 256, 64, 784, true, false),
    shape("mlp fc2 forward X·Wᵀ", 64, 256, 256, false, true),
    shape("mlp fc2 input grad G·W", 64, 256, 256, false, false),
    shape("cnn conv1 forward P·Wᵀ", 36864, 25, 20, false, true),
    shape("cnn conv1 weight grad Gᵀ·P", 20, 36864, 25, true, false),
    shape("cnn conv2 forward P·Wᵀ", 4096, 500, 50, false, true),
    shape("cnn conv2 weight grad Gᵀ·P", 50, 4096, 500, true, false),
    shape("cnn conv2 input grad G·W (per sample)", 64, 50, 500, false, false),
    shape("cnn fc forward X·Wᵀ", 64, 800, 100, false, true),
    shape("peak 1024³", 1024, 1024, 1024, false, false),
];

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmTiming {
    /// Kernel name (`matrixmultiply`, `gemm`, `faer`, `pytorch`).
    pub kernel: String,
    /// Threads the kernel was given.
    pub threads: usize,
    /// [`GemmShape::name`].
    pub shape: String,
    /// GFLOP/s (`2·m·n·k` per call).
    pub gflops: f64,
}

/// The benchmark's JSON (Rust's; PyTorch's script writes the same with `kernel: "pytorch"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmReport {
    /// The firmware's kernel ([`KERNEL`]).
    pub firmware_kernel: String,
    /// Every measurement.
    pub timings: Vec<GemmTiming>,
    /// Library version (PyTorch's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn random(r: usize, c: usize, seed: u64) -> Array2<f32> {
    let mut rng = firmware::seeded_rng(seed);
    Array2::from_shape_fn((r, c), |_| rng.random_range(-1.0f32..1.0))
}

/// GFLOP/s of `f` doing `flops` per call: the best of `rounds` batches, each long enough to take ≥ `min_s`.
fn best_gflops(flops: f64, rounds: usize, min_s: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up: pools, packing buffers, caches
    let t = Instant::now();
    f()?;
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let calls = ((min_s / once).ceil() as usize).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..calls {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(flops / best / 1e9)
}

/// Time every kernel on every shape of [`SHAPES`] with each thread count (matrixmultiply only with one).
pub fn run(threads: &[usize], rounds: usize, min_s: f64) -> Result<GemmReport> {
    let mut timings = Vec::new();
    for s in SHAPES {
        let a = if s.ta { random(s.k, s.m, 1) } else { random(s.m, s.k, 1) };
        let b = if s.tb { random(s.n, s.k, 2) } else { random(s.k, s.n, 2) };
        let av = if s.ta { a.t() } else { a.view() };
        let bv = if s.tb { b.t() } else { b.view() };
        let mut c = Array2::<f32>::zeros((s.m, s.n));
        let flops = 2.0 * (s.m * s.n * s.k) as f64;
        for kernel in Kernel::ALL {
            for &t in threads {
                if t > 1 && !kernel.threaded() {
                    continue;
                }
                let g = best_gflops(flops, rounds, min_s, || {
                    gemm_with(kernel, t, 1.0, &av, &bv, 0.0, &mut c.view_mut()).map_err(Error::from)
                })?;
                tracing::info!("{:<40} {:<15} {t} thread(s): {g:8.1} GFLOP/s", s.name, kernel.name());
                timings.push(GemmTiming { kernel: kernel.name().into(), threads: t, shape: s.name.into(), gflops: g });
            }
        }
        // The firmware's own call: its kernel with the threads its size rule gives.
        for &t in threads {
            let used = threads_for(s.m, s.k, s.n, t);
            let g = best_gflops(flops, rounds, min_s, || {
                gemm_with(KERNEL, used, 1.0, &av, &bv, 0.0, &mut c.view_mut()).map_err(Error::from)
            })?;
            tracing::info!("{:<40} {:<15} {t} thread(s): {g:8.1} GFLOP/s (uses {used})", s.name, FIRMWARE);
            timings.push(GemmTiming { kernel: FIRMWARE.into(), threads: t, shape: s.name.into(), gflops: g });
        }
    }
    Ok(GemmReport { firmware_kernel: KERNEL.name().into(), timings, version: None })
}

/// Read a report written by [`run`] or by the PyTorch script.
pub fn read(path: &Path) -> Result<GemmReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: not a GEMM report: {e}", path.display())))
}

/// Markdown: one row per shape, GFLOP/s per kernel and thread count, and the firmware kernel's share of PyTorch's
/// 1024³ peak with the same threads (and its ratio to PyTorch on the same shape).
pub fn table(rust: &GemmReport, torch: &GemmReport) -> Result<String> {
    let mut threads: Vec<usize> = rust.timings.iter().map(|t| t.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let get = |r: &GemmReport, kernel: &str, t: usize, shape: &str| {
        r.timings.iter().find(|x| x.kernel == kernel && x.threads == t && x.shape == shape).map(|x| x.gflops)
    };
    let peak_name = SHAPES.last().map_or("", |s| s.name);
    let peaks: BTreeMap<usize, f64> =
        threads.iter().filter_map(|&t| get(torch, "pytorch", t, peak_name).map(|p| (t, p))).collect();
    if peaks.is_empty() {
        return Err(Error::Invalid(format!("the PyTorch report has no \"{peak_name}\" timing")));
    }
    let fw = FIRMWARE;
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let mut out = String::new();
    for &t in &threads {
        let peak = peaks.get(&t).copied();
        out += &format!(
            "**{t} thread(s)** — GFLOP/s; PyTorch's 1024³ peak: {}; `{fw}` = `{}` with the firmware's rule for when \
             to use the threads (`firmware::nn::gemm::threads_for`)\n\n",
            fmt(peak),
            rust.firmware_kernel
        );
        let kernels: Vec<&str> = Kernel::ALL.iter().filter(|k| t == 1 || k.threaded()).map(|k| k.name()).collect();
        out += "| shape | m×k×n |";
        for k in &kernels {
            out += &format!(" {k} |");
        }
        out += &format!(" `{fw}` | PyTorch | `{fw}` % of peak | `{fw}` / PyTorch |\n|---|---|");
        out += &"---:|".repeat(kernels.len() + 4);
        out += "\n";
        for s in SHAPES {
            out += &format!("| {} | {}×{}×{} |", s.name, s.m, s.k, s.n);
            for k in &kernels {
                out += &format!(" {} |", fmt(get(rust, k, t, s.name)));
            }
            let mine = get(rust, fw, t, s.name);
            let theirs = get(torch, "pytorch", t, s.name);
            let pct = mine.zip(peak).map_or("–".into(), |(m, p)| format!("{:.0} %", 100.0 * m / p));
            let ratio = mine.zip(theirs).map_or("–".into(), |(m, p)| format!("{:.2}", m / p));
            out += &format!(" {} | {} | {pct} | {ratio} |\n", fmt(mine), fmt(theirs));
        }
        out += "\n";
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kernel: &str, g: f64) -> GemmReport {
        let timings = [1, 2]
            .iter()
            .flat_map(|&t| {
                SHAPES.iter().map(move |s| GemmTiming {
                    kernel: kernel.into(),
                    threads: t,
                    shape: s.name.into(),
                    gflops: g * t as f64,
                })
            })
            .collect();
        GemmReport { firmware_kernel: KERNEL.name().into(), timings, version: None }
    }

    #[test]
    fn table_reports_share_of_peak_per_thread_count() {
        let t = table(&report(FIRMWARE, 50.0), &report("pytorch", 100.0)).unwrap();
        assert!(t.contains("**1 thread(s)**") && t.contains("**2 thread(s)**"));
        assert!(t.contains("| 50.0 | 100.0 | 50 % | 0.50 |"), "{t}");
        assert!(table(&report(FIRMWARE, 1.0), &report("other", 1.0)).is_err());
    }

    #[test]
    fn every_kernel_runs_a_small_shape() {
        let r = run(&[1, 2], 1, 0.0).unwrap();
        assert_eq!(r.timings.len(), SHAPES.len() * (Kernel::ALL.len() * 2 - 1 + 2));
        assert!(r.timings.iter().all(|t| t.gflops.is_finite() && t.gflops > 0.0));
    }
}
