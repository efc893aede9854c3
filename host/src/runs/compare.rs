//! `host compare`: many methods × streams × seeds on the same budgets, one table and one set of plots.
//!
//! Runs are independent jobs spread over worker threads (each run is single-threaded, like the device). Each
//! (stream, method) pair is aggregated over its seeds ([`Aggregate`]); the report ranks the methods per stream by
//! ACC, names the winner and its margin over the runner-up, and places BECAME among them. Plots are in [`plots`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::Bar;
use crate::reports::plots;
use crate::reports::{Aggregate, MeanStd, write_json, write_text};
use crate::runs::presets::Preset;
use crate::runs::{registry, simulate};

/// What to run.
#[derive(Debug, Clone)]
pub struct ComparePlan {
    /// Streams (label, preset), in report order.
    pub streams: Vec<(String, Preset)>,
    /// Method names ([`registry::METHODS`] and their `name:<weight>` forms).
    pub methods: Vec<String>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Worker threads.
    pub jobs: usize,
    /// Data folder.
    pub data_dir: PathBuf,
}

/// Everything `host compare` measured, as written to `compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The command line that produced it.
    pub command: String,
    /// One aggregate per (stream, method), streams in plan order, methods in plan order.
    pub aggregates: Vec<Aggregate>,
}

/// Run every (stream, method, seed) of `plan` on `plan.jobs` threads; a failed run fails the comparison with the
/// run named in the error.
pub fn run(plan: &ComparePlan, command: &str) -> Result<Comparison> {
    if plan.streams.is_empty() || plan.methods.is_empty() || plan.seeds.is_empty() {
        return Err(Error::Invalid("compare needs at least one stream, method and seed".into()));
    }
    let host = simulate::host_profile()?;
    for (_, preset) in &plan.streams {
        for m in &plan.methods {
            registry::build(m, preset, &host)?; // unknown names fail before any data is loaded
        }
    }
    // A class-incremental-only method (the device's `field`) is not run on a task-incremental stream.
    let runs_on =
        |s: usize, m: usize| !(plan.streams[s].1.multi_head && registry::class_incremental_only(&plan.methods[m]));
    let jobs: Vec<(usize, usize, u64)> = (0..plan.streams.len())
        .flat_map(|s| (0..plan.methods.len()).flat_map(move |m| plan.seeds.iter().map(move |&seed| (s, m, seed))))
        .filter(|&(s, m, _)| runs_on(s, m))
        .collect();
    for (s, (name, _)) in plan.streams.iter().enumerate() {
        for (m, method) in plan.methods.iter().enumerate().filter(|&(m, _)| !runs_on(s, m)) {
            tracing::info!(stream = %name, method = %method, m, "not run: class-incremental only, the stream is task-incremental");
        }
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.clamp(1, jobs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, m, seed)) = jobs.get(i) else { break };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    match run_one(&plan.streams[s], &plan.methods[m], seed, &plan.data_dir) {
                        Ok(r) => {
                            tracing::info!(stream = %r.stream, method = %r.method, seed, acc = r.summary.acc, "run done");
                            if let Ok(mut v) = results.lock() {
                                v.push((s, m, r));
                            }
                        }
                        Err(e) => {
                            let e = Error::Invalid(format!("{} on {} seed {seed}: {e}", plan.methods[m], plan.streams[s].0));
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().map_err(|_| Error::Invalid("a compare worker panicked".into()))? {
        return Err(e);
    }
    let mut results = results.into_inner().map_err(|_| Error::Invalid("a compare worker panicked".into()))?;
    results.sort_by_key(|(s, m, r)| (*s, *m, r.seed));
    let mut aggregates = Vec::new();
    for s in 0..plan.streams.len() {
        for m in (0..plan.methods.len()).filter(|&m| runs_on(s, m)) {
            let runs: Vec<_> =
                results.iter().filter(|(rs, rm, _)| *rs == s && *rm == m).map(|(_, _, r)| r.clone()).collect();
            aggregates.push(Aggregate::new(runs)?);
        }
    }
    Ok(Comparison { command: command.to_string(), aggregates })
}

fn run_one(
    (label, preset): &(String, Preset),
    method: &str,
    seed: u64,
    data_dir: &Path,
) -> Result<simulate::RunResult> {
    let stream = preset.load(data_dir, seed)?;
    let model = preset.build_model(&stream, seed)?;
    let mut m = registry::build_for_stream(method, preset, &simulate::host_profile()?, &stream)?;
    let total: usize = stream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * preset.train.epochs;
    let mut bar = Bar::new(&format!("{label} {method} seed {seed}"), total as u64);
    let (result, _) = simulate::run(&stream, model, m.as_mut(), seed, &mut bar)?;
    bar.finish();
    Ok(result)
}

fn pct(m: &MeanStd) -> String {
    format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.std)
}

fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1024.0 * 1024.0 => format!("{:.2} MiB", b / (1024.0 * 1024.0)),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b:.0} B"),
    }
}

/// The Markdown report: one table per stream (ACC, BWT, forgetting, time, memory), ranked by ACC, with the
/// winner, its margin over the runner-up, and BECAME's rank. Memory is given as what each method keeps beside the
/// model ("statistics kept": bases, Fisher, class means and covariances, seeds), the model's trainable parameters,
/// its fixed random matrices (held in memory to answer, rebuilt from widths or a seed, never stored), and their
/// sum, so rows can be compared at equal memory.
pub fn markdown(cmp: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{}`\n", cmp.command);
    let mut streams: Vec<&str> = Vec::new();
    for a in &cmp.aggregates {
        if !streams.contains(&a.stream.as_str()) {
            streams.push(&a.stream);
        }
    }
    for stream in streams {
        let mut rows: Vec<&Aggregate> = cmp.aggregates.iter().filter(|a| a.stream == stream).collect();
        rows.sort_by(|a, b| b.acc.mean.total_cmp(&a.acc.mean));
        let seeds = rows.first().map_or(0, |a| a.seeds.len());
        let _ = writeln!(s, "### {stream} ({seeds} seeds)\n");
        let _ = writeln!(
            s,
            "| rank | method | ACC (%) | BWT (pt) | forgetting (pt) | time per run (s) | bytes kept | model params | \
             fixed random | memory total |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for (i, a) in rows.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                i + 1,
                a.method,
                pct(&a.acc),
                pct(&a.bwt),
                pct(&a.forgetting),
                a.seconds.mean,
                human_bytes(a.bytes_kept),
                human_bytes(a.param_bytes),
                human_bytes(a.fixed_bytes),
                human_bytes(a.bytes_kept + a.param_bytes + a.fixed_bytes)
            );
        }
        if let [first, second, ..] = rows.as_slice() {
            let margin = 100.0 * (first.acc.mean - second.acc.mean);
            let noise = 100.0 * first.acc.std.max(second.acc.std);
            let _ = writeln!(
                s,
                "\nWinner: **{}**, {margin:.2} pt ACC ahead of {} ({}).",
                first.method,
                second.method,
                if margin > noise { "more than one standard deviation" } else { "within one standard deviation" }
            );
        }
        // Plain BECAME when it ran; otherwise its first variant (`gpm+became:q4`, the field's `gpm+became+…`).
        let became = rows
            .iter()
            .position(|a| a.method == "gpm+became")
            .or_else(|| rows.iter().position(|a| a.method.starts_with("gpm+became")));
        if let Some(pos) = became {
            let best = rows[0];
            let _ = writeln!(
                s,
                "BECAME ({}) ranks {} of {}{}.",
                rows[pos].method,
                pos + 1,
                rows.len(),
                if pos == 0 {
                    String::new()
                } else {
                    format!(", {:.2} pt behind {}", 100.0 * (best.acc.mean - rows[pos].acc.mean), best.method)
                }
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// Write `compare.json`, `compare.md` and the plots (PNG and SVG) into `out`; returns the Markdown.
pub fn write(cmp: &Comparison, out: &Path) -> Result<String> {
    write_json(&out.join("compare.json"), cmp)?;
    let md = markdown(cmp);
    write_text(&out.join("compare.md"), &md)?;
    plots::write_all(&cmp.aggregates, out)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use firmware::method::TaskReport;
    use firmware::metrics::AccuracyMatrix;

    use super::*;
    use crate::reports::acc_curve;
    use crate::runs::simulate::RunResult;

    fn run(method: &str, seed: u64, rows: Vec<Vec<f64>>, alpha: Option<f64>, bytes: usize) -> RunResult {
        let mut matrix = AccuracyMatrix::new(rows.len());
        matrix.random_init = vec![0.5; rows.len()];
        for r in rows {
            matrix.push_row(r).unwrap();
        }
        let reports = (0..matrix.tasks())
            .map(|t| TaskReport {
                task_id: t,
                alpha: (t > 0).then_some(alpha).flatten(),
                bytes_kept: bytes,
                ..Default::default()
            })
            .collect();
        RunResult {
            stream: "s".into(),
            method: method.into(),
            seed,
            tasks: vec!["t0".into(), "t1".into()],
            summary: matrix.summary().unwrap(),
            matrix,
            reports,
            num_params: 10,
            seconds: 1.0,
            replay_samples: 0,
            replay_bytes: 0,
            param_bytes: 40,
            fixed_bytes: if method == "pam" { 1024 } else { 0 },
        }
    }

    fn comparison() -> Comparison {
        let agg = |m: &str, last: f64, alpha, bytes| {
            Aggregate::new(vec![
                run(m, 0, vec![vec![1.0, 0.0], vec![last, 1.0]], alpha, bytes),
                run(m, 1, vec![vec![1.0, 0.0], vec![last - 0.02, 1.0]], alpha, bytes),
            ])
            .unwrap()
        };
        Comparison {
            command: "host compare".into(),
            aggregates: vec![
                agg("finetune", 0.5, None, 0),
                agg("gpm+became", 0.9, Some(0.3), 4096),
                agg("pam", 0.8, Some(0.6), 80),
            ],
        }
    }

    #[test]
    fn acc_curve_is_the_mean_of_rows_so_far() {
        let c = comparison();
        // After task 1: 1.0; after task 2: mean over seeds of (0.9 + 1)/2 and (0.88 + 1)/2.
        let curve = acc_curve(&c.aggregates[1]);
        assert_eq!(curve.len(), 2);
        assert!((curve[0] - 1.0).abs() < 1e-12 && (curve[1] - 0.945).abs() < 1e-12, "{curve:?}");
    }

    #[test]
    fn report_ranks_names_the_winner_and_places_became() {
        let md = markdown(&comparison());
        let became = md.find("| 1 | gpm+became").expect("gpm+became ranked first");
        let pam = md.find("| 2 | pam").expect("pam second");
        assert!(became < pam && md.contains("| 3 | finetune"), "{md}");
        assert!(md.contains("Winner: **gpm+became**, 5.00 pt ACC ahead of pam"), "{md}");
        assert!(md.contains("BECAME (gpm+became) ranks 1 of 3"), "{md}");
        assert!(md.contains("4.0 KiB") && md.contains("80 B"), "{md}");
        // Memory: kept 80 B + parameters 40 B + fixed 1024 B for pam.
        assert!(md.contains("| 80 B | 40 B | 1.0 KiB | 1.1 KiB |"), "{md}");
    }

    #[test]
    fn report_places_plain_became_not_a_variant_ranked_above_it() {
        let mut c = comparison();
        let field = Aggregate::new(vec![
            run("gpm+became+lt+slda", 0, vec![vec![1.0, 0.0], vec![0.99, 1.0]], None, 0),
            run("gpm+became+lt+slda", 1, vec![vec![1.0, 0.0], vec![0.99, 1.0]], None, 0),
        ])
        .unwrap();
        c.aggregates.push(field);
        let md = markdown(&c);
        assert!(md.contains("| 1 | gpm+became+lt+slda"), "{md}");
        assert!(md.contains("BECAME (gpm+became) ranks 2 of 4"), "{md}");
    }

    #[test]
    fn writes_json_markdown_and_png_svg_plots() {
        let dir = std::env::temp_dir().join(format!("edgelearn-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&comparison(), &dir).unwrap();
        let back: Comparison = serde_json::from_slice(&std::fs::read(dir.join("compare.json")).unwrap()).unwrap();
        assert_eq!(back.aggregates.len(), 3);
        for stem in ["heatmaps-s", "acc-curve-s", "alpha-s", "acc-vs-memory-s"] {
            let img = image::open(dir.join(format!("{stem}.png"))).unwrap();
            assert!(img.width() >= 900 && img.height() >= 300, "{stem}");
            let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("<text"), "{stem}");
        }
        let curve = std::fs::read_to_string(dir.join("acc-curve-s.svg")).unwrap();
        assert!(curve.contains("gpm+became") && curve.contains("finetune"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
