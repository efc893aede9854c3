//! Compact Fisher: how far BECAME's α moves when the accumulated Fisher `F_old` is stored in a compact format
//! (`host fisher-alpha`).
//!
//! One GPM+BECAME run per seed with `F_old` in f32 gives the reference trajectory. Along it, one **shadow**
//! `F_old` per format is kept exactly as a device storing that format would keep it: `encode(Fisher(θ₁))` after
//! task 1, then after every task `encode(decode(F_old) + Fisher(θ*))`, re-quantized after each addition through
//! the whole history. At every task t ≥ 2 the α the format would give is computed from the same θ_GP, θ̂ and
//! `F_cur` as the f32 run ([`firmware::merge::became_alpha`]) with the shadow's decoded `F_old`, and
//! `Δα = α_format − α_f32` is recorded. This isolates the storage error from the (chaotic) divergence of two
//! trainings and costs one training instead of one per format. Optionally ([`Options::end_to_end`]) a second,
//! real run per seed stores `F_old` in one format ([`firmware::method::Became::fisher_format`]) and its ACC is
//! compared with the f32 run's.
//!
//! A run can be recorded ([`Options::dump`]: θ_GP, θ̂, F_cur, α and the added Fisher per task) and the formats
//! re-evaluated on the recording without training ([`Options::replay`]); both give the same numbers.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use firmware::fisher::{CompactFisher, FisherFormat, compact};
use firmware::merge::{add_assign, became_alpha};
use firmware::method::{Became, BecameTrace, LearnContext, MergeTrace, Method, TaskReport};
use firmware::nn::Model;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::Bar;
use crate::runs::presets::Preset;
use crate::runs::{registry, simulate};

/// Heading of the `docs/results.md` section these measurements go into.
pub const SECTION: &str = "## Compact Fisher: α deviation";

/// The bound each format's max |Δα| is held to (f32: exactly 0, it is the reference).
pub fn target(format: FisherFormat) -> f64 {
    match format {
        FisherFormat::F32 => 0.0,
        FisherFormat::Bf16 | FisherFormat::F16 | FisherFormat::Log8 => 1e-3,
        FisherFormat::Block4 => 1e-2,
    }
}

/// One shadow `F_old` per format, fed the f32 run's traces.
#[derive(Debug, Clone)]
pub struct Shadows {
    formats: Vec<FisherFormat>,
    /// Per format: the stored vector and its decoded form.
    stored: Vec<Option<(CompactFisher, Vec<f32>)>>,
}

/// α of one merge task, f32 and per format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAlphas {
    /// Task index in the stream (0-based; merges start at 1).
    pub task: usize,
    /// α of the f32 run.
    pub alpha_f32: f64,
    /// α with `F_old` as each format would have stored it, by format name.
    pub alpha: BTreeMap<String, f64>,
}

impl Shadows {
    /// Shadows for these formats.
    pub fn new(formats: &[FisherFormat]) -> Self {
        Self { formats: formats.to_vec(), stored: vec![None; formats.len()] }
    }

    /// Feed one task's trace: on a merge task, compute each format's α first; then add the new Fisher to every
    /// shadow and re-quantize it.
    pub fn observe(&mut self, trace: &BecameTrace<'_>) -> Result<Option<TaskAlphas>> {
        let mut row = trace.merge.as_ref().map(|m| TaskAlphas {
            task: trace.task_id,
            alpha_f32: m.alpha,
            alpha: BTreeMap::new(),
        });
        for (format, slot) in self.formats.iter().zip(&mut self.stored) {
            let f_new = match (slot.take(), &trace.merge, &mut row) {
                (None, None, _) => trace.fisher_added.to_vec(),
                (Some((_, mut old)), Some(m), Some(row)) => {
                    row.alpha.insert(format.name().into(), became_alpha(m.f_cur, &old, m.theta_gp, m.theta_hat)?);
                    add_assign(&mut old, trace.fisher_added)?;
                    old
                }
                _ => return Err(Error::Invalid(format!("task {}: merge trace out of order", trace.task_id))),
            };
            let c = compact::encode(&f_new, *format)?;
            let d = c.decode();
            *slot = Some((c, d));
        }
        Ok(row)
    }

    /// Bytes per parameter of each format as stored now, by format name.
    pub fn bytes_per_param(&self) -> BTreeMap<String, f64> {
        self.formats
            .iter()
            .zip(&self.stored)
            .filter_map(|(f, s)| s.as_ref().map(|(c, _)| (f.name().to_string(), c.bytes_per_param())))
            .collect()
    }
}

/// What one seed gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    /// Seed of the run.
    pub seed: u64,
    /// Trainable parameters (length of the Fisher vector).
    pub num_params: usize,
    /// ACC of the f32 run.
    pub acc_f32: f64,
    /// α per merge task, f32 and per format.
    pub tasks: Vec<TaskAlphas>,
    /// Storage of each format (bytes per parameter).
    pub bytes_per_param: BTreeMap<String, f64>,
    /// The real run with `F_old` stored compactly, when asked for.
    pub end_to_end: Option<EndToEnd>,
    /// Wall-clock seconds of the f32 run.
    pub seconds: f64,
}

/// A real GPM+BECAME run with `F_old` stored in `format`, beside the f32 run of the same seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndToEnd {
    /// The storage format.
    pub format: FisherFormat,
    /// ACC of this run.
    pub acc: f64,
    /// BWT of this run.
    pub bwt: f64,
    /// α per task of this run (`None` on task 1).
    pub alpha: Vec<Option<f64>>,
    /// Bytes kept between tasks after the last task (bases + stored Fisher).
    pub bytes_kept: usize,
    /// Bytes kept by the f32 run.
    pub bytes_kept_f32: usize,
}

/// |Δα| statistics of one format over every merge task of every seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FormatSummary {
    /// The format.
    pub format: FisherFormat,
    /// Bytes per parameter (codes plus scales/headers).
    pub bytes_per_param: f64,
    /// Largest |Δα|.
    pub max_abs: f64,
    /// Mean |Δα|.
    pub mean_abs: f64,
    /// Mean signed Δα (a bias shows here).
    pub mean: f64,
    /// Merge tasks counted (tasks ≥ 2 × seeds).
    pub count: usize,
    /// The bound ([`target`]).
    pub target: f64,
    /// Whether `max_abs ≤ target`.
    pub meets: bool,
}

/// The whole measurement on one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamResult {
    /// Stream name as given.
    pub stream: String,
    /// Epochs per stage.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// The formats, in table order.
    pub formats: Vec<FisherFormat>,
    /// Per-format summary.
    pub summary: Vec<FormatSummary>,
    /// Per-seed detail.
    pub runs: Vec<SeedResult>,
    /// The command line that produced it.
    pub command: String,
}

/// What `host fisher-alpha` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stream name (`pmnist`, `split-mnist`, ...).
    pub stream: String,
    /// The stream's settings (epochs possibly overridden).
    pub preset: Preset,
    /// Seeds, one f32 run each.
    pub seeds: Vec<u64>,
    /// Formats to shadow.
    pub formats: Vec<FisherFormat>,
    /// Also run BECAME with `F_old` stored in this format, per seed.
    pub end_to_end: Option<FisherFormat>,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Record each seed's trajectory into this folder.
    pub dump: Option<PathBuf>,
    /// Re-evaluate the formats on the recordings in this folder instead of training.
    pub replay: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

/// GPM+BECAME (f32) feeding the shadows (and an optional recorder) from its traces.
struct Observed<'a> {
    became: Became,
    shadows: Shadows,
    rows: Vec<TaskAlphas>,
    recorder: Option<&'a mut Recorder>,
}

impl Method for Observed<'_> {
    fn name(&self) -> String {
        self.became.name()
    }

    fn learn_task(
        &mut self,
        model: &mut Model,
        task: &firmware::data::TaskData<'_>,
        ctx: &mut LearnContext<'_>,
    ) -> firmware::Result<TaskReport> {
        let mut failed: Option<Error> = None;
        let (shadows, rows, recorder) = (&mut self.shadows, &mut self.rows, &mut self.recorder);
        let report = self.became.learn_task_observed(model, task, ctx, &mut |trace| {
            if failed.is_some() {
                return;
            }
            let step = shadows.observe(trace).and_then(|row| {
                rows.extend(row);
                recorder.as_mut().map_or(Ok(()), |r| r.record(trace))
            });
            if let Err(e) = step {
                failed = Some(e);
            }
        })?;
        match failed {
            // The Method interface speaks firmware errors; the host error is carried as its text.
            Some(e) => Err(firmware::Error::Config(format!("fisher-alpha observer: {e}"))),
            None => Ok(report),
        }
    }

    fn bytes_kept(&self) -> usize {
        self.became.bytes_kept()
    }
}

/// Run the measurement on one stream (or replay it) and summarize it.
pub fn run(opts: &Options) -> Result<StreamResult> {
    if opts.formats.is_empty() {
        return Err(Error::Invalid("no Fisher format to measure".into()));
    }
    let mut runs = Vec::new();
    for &seed in &opts.seeds {
        let r = match &opts.replay {
            Some(dir) => replay_seed(opts, dir, seed)?,
            None => run_seed(opts, seed)?,
        };
        runs.push(r);
    }
    let summary = summarize(&opts.formats, &runs);
    Ok(StreamResult {
        stream: opts.stream.clone(),
        epochs: opts.preset.train.epochs,
        batch_size: opts.preset.train.batch_size,
        formats: opts.formats.clone(),
        summary,
        runs,
        command: opts.command.clone(),
    })
}

fn run_seed(opts: &Options, seed: u64) -> Result<SeedResult> {
    let stream = opts.preset.load(&opts.data_dir, seed)?;
    let total = (stream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * opts.preset.train.epochs) as u64;
    let mut recorder = match &opts.dump {
        Some(dir) => Some(Recorder::create(&trace_path(dir, &opts.stream, seed))?),
        None => None,
    };
    let mut observed = Observed {
        became: registry::became(&opts.preset, FisherFormat::F32),
        shadows: Shadows::new(&opts.formats),
        rows: Vec::new(),
        recorder: recorder.as_mut(),
    };
    let model = opts.preset.model.build(&stream, seed)?;
    let mut bar = Bar::new(&format!("{} f32 seed {seed}", opts.stream), total);
    let (result, _) = simulate::run(&stream, model, &mut observed, seed, &mut bar)?;
    bar.finish();
    let bytes_kept_f32 = observed.became.bytes_kept();
    let end_to_end = match opts.end_to_end {
        Some(format) => {
            let mut method = registry::became(&opts.preset, format);
            let model = opts.preset.model.build(&stream, seed)?;
            let mut bar = Bar::new(&format!("{} {format} seed {seed}", opts.stream), total);
            let (r, _) = simulate::run(&stream, model, &mut method, seed, &mut bar)?;
            bar.finish();
            tracing::info!(seed, %format, acc = r.summary.acc, acc_f32 = result.summary.acc, "end-to-end run done");
            Some(EndToEnd {
                format,
                acc: r.summary.acc,
                bwt: r.summary.bwt,
                alpha: r.reports.iter().map(|t| t.alpha).collect(),
                bytes_kept: method.bytes_kept(),
                bytes_kept_f32,
            })
        }
        None => None,
    };
    let out = SeedResult {
        seed,
        num_params: result.num_params,
        acc_f32: result.summary.acc,
        tasks: observed.rows,
        bytes_per_param: observed.shadows.bytes_per_param(),
        end_to_end,
        seconds: result.seconds,
    };
    if let Some(mut r) = recorder {
        r.finish()?;
        crate::reports::write_json(
            &meta_path(opts.dump.as_deref().unwrap_or(Path::new(".")), &opts.stream, seed),
            &out,
        )?;
    }
    Ok(out)
}

fn replay_seed(opts: &Options, dir: &Path, seed: u64) -> Result<SeedResult> {
    let meta = meta_path(dir, &opts.stream, seed);
    let text = std::fs::read_to_string(&meta).map_err(|e| Error::io(&meta, e))?;
    let mut out: SeedResult = serde_json::from_str(&text)?;
    let mut shadows = Shadows::new(&opts.formats);
    let mut rows = Vec::new();
    read_traces(&trace_path(dir, &opts.stream, seed), &mut |trace| {
        rows.extend(shadows.observe(trace)?);
        Ok(())
    })?;
    out.tasks = rows;
    out.bytes_per_param = shadows.bytes_per_param();
    Ok(out)
}

/// Per-format |Δα| statistics over all seeds and merge tasks.
pub fn summarize(formats: &[FisherFormat], runs: &[SeedResult]) -> Vec<FormatSummary> {
    formats
        .iter()
        .map(|&format| {
            let name = format.name();
            let deltas: Vec<f64> = runs
                .iter()
                .flat_map(|r| r.tasks.iter())
                .filter_map(|t| t.alpha.get(name).map(|a| a - t.alpha_f32))
                .collect();
            let n = deltas.len().max(1) as f64;
            let max_abs = deltas.iter().fold(0.0f64, |m, d| m.max(d.abs()));
            let bytes = runs.iter().find_map(|r| r.bytes_per_param.get(name).copied()).unwrap_or(0.0);
            FormatSummary {
                format,
                bytes_per_param: bytes,
                max_abs,
                mean_abs: deltas.iter().map(|d| d.abs()).sum::<f64>() / n,
                mean: deltas.iter().sum::<f64>() / n,
                count: deltas.len(),
                target: target(format),
                meets: max_abs <= target(format),
            }
        })
        .collect()
}

/// The Markdown report: the per-format table, |Δα| per task, and the end-to-end comparison.
pub fn markdown(r: &StreamResult) -> String {
    use std::fmt::Write as _;
    let seeds: Vec<String> = r.runs.iter().map(|s| s.seed.to_string()).collect();
    let n = r.runs.first().map_or(0, |s| s.num_params);
    let mut s = format!(
        "### {} ({} epochs per stage, batch {}, seeds {}, {} parameters)\n\n`{}`\n\n",
        r.stream,
        r.epochs,
        r.batch_size,
        seeds.join(", "),
        n,
        r.command
    );
    s += "| format | bytes/param | max \\|Δα\\| | mean \\|Δα\\| | mean Δα | target | met |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for f in &r.summary {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.2e} | {:.2e} | {:+.1e} | ≤ {} | {} |",
            f.format,
            f.bytes_per_param,
            f.max_abs,
            f.mean_abs,
            f.mean,
            if f.target == 0.0 { "0".to_string() } else { format!("{:.0e}", f.target) },
            if f.meets { "yes" } else { "**no**" }
        );
    }
    // |Δα| per task, max over seeds.
    let tasks: Vec<usize> = {
        let mut t: Vec<usize> = r.runs.iter().flat_map(|s| s.tasks.iter().map(|t| t.task)).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    if !tasks.is_empty() {
        s += "\nmax |Δα| over seeds, per task (α of the f32 run: mean over seeds):\n\n| task | α f32 |";
        for f in &r.formats {
            let _ = write!(s, " {f} |");
        }
        s += "\n|---|---|";
        s += &"---|".repeat(r.formats.len());
        s += "\n";
        for &task in &tasks {
            let rows: Vec<&TaskAlphas> =
                r.runs.iter().flat_map(|sr| sr.tasks.iter().filter(move |t| t.task == task)).collect();
            let a = rows.iter().map(|t| t.alpha_f32).sum::<f64>() / rows.len().max(1) as f64;
            let _ = write!(s, "| {} | {a:.3} |", task + 1);
            for f in &r.formats {
                let m = rows
                    .iter()
                    .filter_map(|t| t.alpha.get(f.name()).map(|x| (x - t.alpha_f32).abs()))
                    .fold(0.0f64, f64::max);
                let _ = write!(s, " {m:.1e} |");
            }
            s += "\n";
        }
    }
    let e2e: Vec<(&SeedResult, &EndToEnd)> =
        r.runs.iter().filter_map(|sr| sr.end_to_end.as_ref().map(|e| (sr, e))).collect();
    if let Some((_, first)) = e2e.first() {
        let _ = write!(
            s,
            "\nEnd to end, `F_old` stored in {} for real (ACC %, last row of the accuracy matrix):\n\n\
             | seed | ACC f32 | ACC {} | Δ ACC | α f32 per task | α {} per task | bytes kept f32 → {} |\n\
             |---|---|---|---|---|---|---|\n",
            first.format, first.format, first.format, first.format
        );
        for (sr, e) in &e2e {
            let a32: Vec<String> = sr.tasks.iter().map(|t| format!("{:.3}", t.alpha_f32)).collect();
            let ac: Vec<String> = e.alpha.iter().flatten().map(|a| format!("{a:.3}")).collect();
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:+.2} | {} | {} | {} → {} |",
                sr.seed,
                100.0 * sr.acc_f32,
                100.0 * e.acc,
                100.0 * (e.acc - sr.acc_f32),
                a32.join(", "),
                ac.join(", "),
                e.bytes_kept_f32,
                e.bytes_kept
            );
        }
    }
    s
}

/// File of the recorded trajectory of one seed.
pub fn trace_path(dir: &Path, stream: &str, seed: u64) -> PathBuf {
    dir.join(format!("{stream}-seed{seed}.trace"))
}

fn meta_path(dir: &Path, stream: &str, seed: u64) -> PathBuf {
    dir.join(format!("{stream}-seed{seed}.json"))
}

const TRACE_MAGIC: &[u8; 8] = b"FATRACE1";

/// Writes [`BecameTrace`]s: per task `task u32, merge u8, n u64`, then for a merge `α f64, θ_GP, θ̂, F_cur`,
/// then the added Fisher (f32 vectors little-endian, `n` entries each).
struct Recorder {
    path: PathBuf,
    w: BufWriter<std::fs::File>,
}

impl Recorder {
    fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut r = Self { path: path.to_path_buf(), w: BufWriter::new(f) };
        r.put(TRACE_MAGIC)?;
        Ok(r)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|e| Error::io(&self.path, e))
    }

    fn put_vec(&mut self, v: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.put(&bytes)
    }

    fn record(&mut self, t: &BecameTrace<'_>) -> Result<()> {
        let task = u32::try_from(t.task_id).map_err(|_| Error::Invalid("task index too large".into()))?;
        self.put(&task.to_le_bytes())?;
        self.put(&[u8::from(t.merge.is_some())])?;
        self.put(&(t.fisher_added.len() as u64).to_le_bytes())?;
        if let Some(m) = &t.merge {
            self.put(&m.alpha.to_le_bytes())?;
            self.put_vec(m.theta_gp)?;
            self.put_vec(m.theta_hat)?;
            self.put_vec(m.f_cur)?;
        }
        self.put_vec(t.fisher_added)
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Read a recording written by [`Recorder`], calling `f` with each task's trace (its `f_old` is the f32
/// accumulated Fisher, rebuilt from the recorded additions).
fn read_traces(path: &Path, f: &mut dyn FnMut(&BecameTrace<'_>) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(file);
    let bad = |what: &str| Error::Invalid(format!("{}: not a fisher-alpha recording ({what})", path.display()));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| Error::io(path, e))?;
    if &magic != TRACE_MAGIC {
        return Err(bad("magic"));
    }
    let mut f_old: Vec<f32> = Vec::new();
    loop {
        let mut head = [0u8; 13];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        }
        let task = u32::from_le_bytes(head[0..4].try_into().map_err(|_| bad("header"))?) as usize;
        let merge = head[4] == 1;
        let n = usize::try_from(u64::from_le_bytes(head[5..13].try_into().map_err(|_| bad("header"))?))
            .map_err(|_| bad("length"))?;
        if n > 1 << 30 {
            return Err(bad("length"));
        }
        let mut get = |count: usize| -> Result<Vec<f32>> {
            let mut b = vec![0u8; count * 4];
            r.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
            Ok(b.chunks_exact(4).map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect())
        };
        if merge {
            let a = get(2)?;
            let alpha = f64::from_le_bytes(
                a.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().try_into().map_err(|_| bad("α"))?,
            );
            let (theta_gp, theta_hat, f_cur, added) = (get(n)?, get(n)?, get(n)?, get(n)?);
            let m = MergeTrace { theta_gp: &theta_gp, theta_hat: &theta_hat, f_cur: &f_cur, f_old: &f_old, alpha };
            f(&BecameTrace { task_id: task, merge: Some(m), fisher_added: &added })?;
            add_assign(&mut f_old, &added)?;
        } else {
            let added = get(n)?;
            f(&BecameTrace { task_id: task, merge: None, fisher_added: &added })?;
            f_old = added;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_run(shadows: &mut Shadows) -> Vec<TaskAlphas> {
        // Three tasks on 4 parameters with Fisher entries spread over many octaves.
        let f1 = [1e-9f32, 3e-4, 0.0, 2e-2];
        let f2 = [5e-5f32, 1e-3, 1e-7, 4e-3];
        let f3 = [2e-6f32, 0.0, 2e-2, 1e-4];
        let (gp, hat) = ([0.0f32, 0.1, -0.2, 0.3], [0.05f32, -0.1, 0.1, 0.35]);
        let mut rows = Vec::new();
        rows.extend(shadows.observe(&BecameTrace { task_id: 0, merge: None, fisher_added: &f1 }).unwrap());
        let mut f_old = f1.to_vec();
        for (t, (fc, fa)) in [(&f2, &f2), (&f3, &f3)].into_iter().enumerate() {
            let alpha = became_alpha(fc, &f_old, &gp, &hat).unwrap();
            let m = MergeTrace { theta_gp: &gp, theta_hat: &hat, f_cur: fc, f_old: &f_old, alpha };
            rows.extend(shadows.observe(&BecameTrace { task_id: t + 1, merge: Some(m), fisher_added: fa }).unwrap());
            add_assign(&mut f_old, fa).unwrap();
        }
        rows
    }

    #[test]
    fn f32_shadow_reproduces_alpha_exactly_and_others_stay_close() {
        let mut shadows = Shadows::new(&FisherFormat::ALL);
        let rows = trace_run(&mut shadows);
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(r.alpha["f32"], r.alpha_f32);
            for f in FisherFormat::ALL {
                assert!((r.alpha[f.name()] - r.alpha_f32).abs() < 0.05, "{f}: {r:?}");
            }
        }
        let b = shadows.bytes_per_param();
        assert_eq!(b["f32"], 4.0);
        assert_eq!(b["bf16"], 2.0);
    }

    #[test]
    fn shadows_refuse_out_of_order_traces() {
        let mut shadows = Shadows::new(&[FisherFormat::Log8]);
        let z = [0.0f32; 2];
        let m = MergeTrace { theta_gp: &z, theta_hat: &z, f_cur: &z, f_old: &z, alpha: 0.0 };
        assert!(shadows.observe(&BecameTrace { task_id: 1, merge: Some(m), fisher_added: &z }).is_err());
    }

    #[test]
    fn recording_replays_to_the_same_alphas() {
        let dir = std::env::temp_dir().join(format!("fisher-alpha-test-{}", std::process::id()));
        let path = trace_path(&dir, "toy", 0);
        let mut live = Shadows::new(&FisherFormat::ALL);
        let mut rec = Recorder::create(&path).unwrap();
        // Record the same toy run the live shadows see.
        let mut recorded = Shadows::new(&FisherFormat::ALL);
        let rows = trace_run(&mut live);
        {
            let f1 = [1e-9f32, 3e-4, 0.0, 2e-2];
            let f2 = [5e-5f32, 1e-3, 1e-7, 4e-3];
            let f3 = [2e-6f32, 0.0, 2e-2, 1e-4];
            let (gp, hat) = ([0.0f32, 0.1, -0.2, 0.3], [0.05f32, -0.1, 0.1, 0.35]);
            rec.record(&BecameTrace { task_id: 0, merge: None, fisher_added: &f1 }).unwrap();
            let mut f_old = f1.to_vec();
            for (t, f) in [f2, f3].iter().enumerate() {
                let alpha = became_alpha(f, &f_old, &gp, &hat).unwrap();
                let m = MergeTrace { theta_gp: &gp, theta_hat: &hat, f_cur: f, f_old: &f_old, alpha };
                rec.record(&BecameTrace { task_id: t + 1, merge: Some(m), fisher_added: f }).unwrap();
                add_assign(&mut f_old, f).unwrap();
            }
        }
        rec.finish().unwrap();
        drop(rec);
        let mut replayed = Vec::new();
        read_traces(&path, &mut |t| {
            replayed.extend(recorded.observe(t)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(replayed, rows);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summary_and_markdown() {
        let mut shadows = Shadows::new(&FisherFormat::ALL);
        let rows = trace_run(&mut shadows);
        let run = SeedResult {
            seed: 0,
            num_params: 4,
            acc_f32: 0.9,
            tasks: rows,
            bytes_per_param: shadows.bytes_per_param(),
            end_to_end: None,
            seconds: 0.0,
        };
        let summary = summarize(&FisherFormat::ALL, std::slice::from_ref(&run));
        assert_eq!(summary[0].max_abs, 0.0);
        assert!(summary[0].meets);
        assert_eq!(summary[0].count, 2);
        let r = StreamResult {
            stream: "toy".into(),
            epochs: 1,
            batch_size: 8,
            formats: FisherFormat::ALL.to_vec(),
            summary,
            runs: vec![run],
            command: "host fisher-alpha".into(),
        };
        let md = markdown(&r);
        assert!(md.contains("| q4 |") && md.contains("| f32 | 4.0000 | 0.00e0"), "{md}");
    }
}
