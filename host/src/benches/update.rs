//! Benchmarks of the device learner (not tests): how long one task's update takes, phase by phase.
//!
//! [`update`] runs GPM + BECAME ([`firmware::method::Became`], built by [`crate::runs::registry::build`]) over the first
//! tasks of a stream with the stream's preset and reports the timings of the **last** task learned (task 2 by
//! default), the first task that goes through every phase: projected stage 1, unconstrained stage 2, the two
//! Fisher passes, the merge and the basis update. `scripts/bench_torch.py` times the same algorithm written the
//! way the authors' PyTorch code does it and writes the same JSON ([`UpdateTiming`]); [`table`] puts the two
//! side by side as ratios and [`replace_section`] writes the result into `docs/benchmarks.md`.
//!
//! The Rust learner runs on `--threads` cores (`firmware::threads::set_threads`: its GEMMs, faer's, and its
//! Fisher batches), which the result records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use firmware::method::TaskReport;
use firmware::train::Silent;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runs::presets::Preset;
use crate::runs::{registry, simulate};

/// The method the update benchmark times.
pub const UPDATE_METHOD: &str = "gpm+became";

/// The phases of one task's update, in the order they run.
pub const PHASES: &[&str] = &["stage1", "stage2", "fisher", "merge", "basis"];

/// Heading of the section of `docs/benchmarks.md` that [`table`] fills.
pub const UPDATE_SECTION: &str = "## Per-task update: Rust vs PyTorch";

/// Timings of one task's update by one implementation; the JSON both `host bench update` and
/// `scripts/bench_torch.py` write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateTiming {
    /// `"rust"` or `"pytorch"`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Stream name as given on the command line (`pmnist`, `split-mnist`).
    pub stream: String,
    /// Epochs per training stage.
    pub epochs: usize,
    /// Compute threads the implementation used.
    pub threads: usize,
    /// Seconds per phase (`stage1`, `stage2`, `fisher`, `merge`, `basis`).
    pub phases: BTreeMap<String, f64>,
    /// Sum of the phases, seconds.
    pub total: f64,
    /// Runs from scratch behind the figures; each phase is its fastest run (and `total` the sum of those).
    #[serde(default)]
    pub repeats: Option<usize>,
    /// Training throughput of stages 1 and 2: samples stepped through (all epochs of both stages) per second of
    /// stage-1 plus stage-2 time (validation passes included in the time).
    #[serde(default)]
    pub samples_per_s: Option<f64>,
    /// 0-based index of the timed task in the stream.
    #[serde(default)]
    pub task: Option<usize>,
    /// Training samples of the timed task.
    #[serde(default)]
    pub train_samples: Option<usize>,
    /// Validation samples of the timed task.
    #[serde(default)]
    pub val_samples: Option<usize>,
    /// Mini-batch size of both stages.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// BECAME's α for the timed task.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Basis size per projected layer after the timed task.
    #[serde(default)]
    pub basis_sizes: Option<Vec<usize>>,
    /// Library version, when the implementation has one worth naming (`torch.__version__`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl UpdateTiming {
    /// Seconds of phase `name`, if it was measured.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases.get(name).copied()
    }
}

/// Phase timings of a task report, summed by phase name (a phase reported twice counts once, with both times).
pub fn phase_seconds(report: &TaskReport) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, secs) in &report.timings {
        *out.entry(name.clone()).or_insert(0.0) += secs;
    }
    out
}

/// Per-phase minimum over runs (a phase missing from a run keeps the minimum of the others).
pub fn min_phases(runs: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for run in runs {
        for (name, &secs) in run {
            out.entry(name.clone()).and_modify(|v| *v = v.min(secs)).or_insert(secs);
        }
    }
    out
}

/// Run GPM + BECAME over the first `tasks` tasks of the preset's stream and time the last one; `repeat` times
/// from scratch (same seed, same work), keeping each phase's fastest run (the machine may be shared).
///
/// `method` is any method of the registry, run by the one learner; its large products run where
/// `firmware::backend::install` put them. The result's `impl` is `rust` for [`UPDATE_METHOD`] on the CPU, and
/// `rust:<method>`, `rust@cuda` or `rust:<method>@cuda` otherwise.
///
/// `preset.train` decides epochs, batch size and learning rate of both stages; `stream` is only the label that
/// goes into the result. Errors when `tasks < 2` (task 1 has no stage 2 and no merge), `repeat` is 0, or the
/// stream is shorter than `tasks`.
pub fn update(
    preset: &Preset,
    stream: &str,
    method: &str,
    tasks: usize,
    repeat: usize,
    data_dir: &Path,
    seed: u64,
) -> Result<UpdateTiming> {
    if tasks < 2 {
        return Err(Error::Invalid(format!("the update benchmark needs at least 2 tasks, got {tasks}")));
    }
    if repeat == 0 {
        return Err(Error::Invalid("--repeat must be at least 1".into()));
    }
    let data = preset.load(data_dir, seed)?;
    if data.tasks.len() < tasks {
        return Err(Error::Invalid(format!("stream {stream} has {} tasks, asked for {tasks}", data.tasks.len())));
    }
    let task = &data.tasks[tasks - 1];
    let mut runs = Vec::with_capacity(repeat);
    let mut report = TaskReport::default();
    for r in 0..repeat {
        let model = preset.model.build(&data, seed)?;
        let method = registry::build(method, preset, &simulate::host_profile()?)?;
        let mut learner = simulate::learner_for(&data, model, method, seed, &simulate::RunConfig::host(0)?)?;
        for (i, t) in data.tasks[..tasks].iter().enumerate() {
            simulate::register_classes(&mut learner, &data, i)?;
            let td = firmware::data::TaskData { task_id: t.id, head: t.head, train: &t.train, val: &t.val };
            report = learner.learn_task(&td, &mut Silent)?;
        }
        let phases = phase_seconds(&report);
        tracing::info!(run = r + 1, of = repeat, total = phases.values().sum::<f64>(), "timed task learned");
        runs.push(phases);
    }
    let phases = min_phases(&runs);
    let epochs_run: usize = report.stages.iter().map(|(_, log)| log.epochs.len()).sum();
    let train_time = phases.get("stage1").copied().unwrap_or(0.0) + phases.get("stage2").copied().unwrap_or(0.0);
    let samples_per_s = (train_time > 0.0).then(|| (epochs_run * task.train.len()) as f64 / train_time);
    Ok(UpdateTiming {
        implementation: {
            let name = if method == UPDATE_METHOD { "rust".to_string() } else { format!("rust:{method}") };
            match firmware::backend::installed() {
                "cpu" => name,
                device => format!("{name}@{device}"),
            }
        },
        stream: stream.to_string(),
        epochs: preset.train.epochs,
        threads: firmware::threads::threads(),
        total: phases.values().sum(),
        phases,
        samples_per_s,
        repeats: Some(repeat),
        task: Some(task.id),
        train_samples: Some(task.train.len()),
        val_samples: Some(task.val.len()),
        batch_size: Some(preset.train.batch_size),
        alpha: report.alpha,
        basis_sizes: Some(report.basis_sizes.clone()),
        version: None,
    })
}

/// A plain-text listing of one result (what `host bench update` prints).
pub fn describe(t: &UpdateTiming) -> String {
    let mut s = format!(
        "{} on {} ({} epoch(s), {} thread(s), fastest of {} run(s) per phase), task {}: {} train / {} val samples, \
         batch {}\n",
        t.implementation,
        t.stream,
        t.epochs,
        t.threads,
        opt(t.repeats),
        t.task.map_or("?".into(), |v| (v + 1).to_string()),
        opt(t.train_samples),
        opt(t.val_samples),
        opt(t.batch_size),
    );
    for name in ordered_phases(std::slice::from_ref(t)) {
        if let Some(v) = t.phase(&name) {
            s += &format!("  {name:<8} {v:>10.4} s\n");
        }
    }
    s += &format!("  {:<8} {:>10.4} s\n", "total", t.total);
    if let Some(v) = t.samples_per_s {
        s += &format!("  training throughput {v:.0} samples/s\n");
    }
    if let Some(a) = t.alpha {
        s += &format!("  alpha {a:.4}\n");
    }
    s
}

fn opt(v: Option<usize>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// Phase names present in any of `results`: the known [`PHASES`] first, in run order, then any others sorted.
fn ordered_phases(results: &[UpdateTiming]) -> Vec<String> {
    let mut names: Vec<String> =
        PHASES.iter().filter(|p| results.iter().any(|r| r.phases.contains_key(**p))).map(|p| p.to_string()).collect();
    let mut extra: Vec<String> =
        results.iter().flat_map(|r| r.phases.keys()).filter(|k| !PHASES.contains(&k.as_str())).cloned().collect();
    extra.sort();
    extra.dedup();
    names.extend(extra);
    names
}

fn column_label(t: &UpdateTiming) -> String {
    let threads = format!("{} thread{}", t.threads, if t.threads == 1 { "" } else { "s" });
    let best = match t.repeats {
        Some(n) if n > 1 => format!(", best of {n}"),
        _ => String::new(),
    };
    match t.implementation.as_str() {
        "rust" => format!("Rust, {threads}{best}"),
        "pytorch" => {
            format!("PyTorch{}, {threads}{best}", t.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default())
        }
        other => format!("{other}, {threads}{best}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
        _ => "–".into(),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| if v >= 0.1 { format!("{v:.2}") } else { format!("{v:.4}") })
}

/// Markdown tables, one per stream and Rust thread count: phase × (Rust seconds, then per other result with the
/// same thread count its seconds and the ratio Rust / it). A row for the total and one for training throughput
/// close each table.
///
/// Errors when a stream has no Rust result, two with one thread count, or results that disagree on epochs.
pub fn table(results: &[UpdateTiming]) -> Result<String> {
    let mut streams: Vec<&str> = Vec::new();
    for r in results {
        if !streams.contains(&r.stream.as_str()) {
            streams.push(&r.stream);
        }
    }
    let mut out = String::new();
    for stream in streams {
        let mut threads: Vec<usize> =
            results.iter().filter(|r| r.stream == stream && r.implementation == "rust").map(|r| r.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        if threads.is_empty() {
            return Err(Error::Invalid(format!("stream {stream}: no Rust result")));
        }
        for t in threads {
            out += &stream_table(results, stream, t, |r| r.stream == stream && r.threads == t)?;
        }
    }
    Ok(out)
}

/// The table of one stream and thread count (`keep` selects its results).
fn stream_table(
    results: &[UpdateTiming],
    stream: &str,
    threads: usize,
    keep: impl Fn(&UpdateTiming) -> bool,
) -> Result<String> {
    let mut out = String::new();
    {
        let of_stream: Vec<&UpdateTiming> = results.iter().filter(|r| keep(r)).collect();
        let rust: Vec<&&UpdateTiming> = of_stream.iter().filter(|r| r.implementation == "rust").collect();
        let [rust] = rust.as_slice() else {
            return Err(Error::Invalid(format!(
                "stream {stream}, {threads} thread(s): need exactly one Rust result, got {}",
                rust.len()
            )));
        };
        if let Some(r) = of_stream.iter().find(|r| r.epochs != rust.epochs) {
            return Err(Error::Invalid(format!(
                "stream {stream}: {} ran {} epoch(s), Rust {}",
                r.implementation, r.epochs, rust.epochs
            )));
        }
        let others: Vec<&UpdateTiming> = of_stream.iter().filter(|r| r.implementation != "rust").copied().collect();
        out += &format!(
            "**{stream}**, {threads} thread(s) on each side, task {} ({} train / {} val samples, batch {}, {} epoch(s) \
             per stage)\n\n",
            rust.task.map_or("?".into(), |v| (v + 1).to_string()),
            opt(rust.train_samples),
            opt(rust.val_samples),
            opt(rust.batch_size),
            rust.epochs
        );
        let mut header = format!("| phase | {} (s) |", column_label(rust));
        let mut rule = "|---|---:|".to_string();
        for o in &others {
            header += &format!(" {} (s) | Rust / it |", column_label(o));
            rule += "---:|---:|";
        }
        out += &header;
        out += "\n";
        out += &rule;
        out += "\n";
        let all: Vec<UpdateTiming> = of_stream.iter().map(|r| (*r).clone()).collect();
        for name in ordered_phases(&all) {
            let mut row = format!("| {name} | {} |", secs(rust.phase(&name)));
            for o in &others {
                row += &format!(" {} | {} |", secs(o.phase(&name)), ratio(rust.phase(&name), o.phase(&name)));
            }
            out += &row;
            out += "\n";
        }
        let mut row = format!("| **total** | **{}** |", secs(Some(rust.total)));
        for o in &others {
            row += &format!(" **{}** | **{}** |", secs(Some(o.total)), ratio(Some(rust.total), Some(o.total)));
        }
        out += &row;
        out += "\n";
        let tput = |t: &UpdateTiming| t.samples_per_s.map_or("–".into(), |v| format!("{v:.0}"));
        let mut row = format!("| training samples/s | {} |", tput(rust));
        for o in &others {
            row += &format!(" {} | {} |", tput(o), ratio(o.samples_per_s, rust.samples_per_s));
        }
        out += &row;
        out += "\n\n";
    }
    Ok(out)
}

/// Read [`UpdateTiming`] JSON files.
pub fn read_results(files: &[PathBuf]) -> Result<Vec<UpdateTiming>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Invalid(format!("{}: not an update-benchmark result: {e}", f.display())))
        })
        .collect()
}

/// Marker lines that delimit the generated part of the [`UPDATE_SECTION`]; text after the end marker (analysis
/// written by hand) survives a re-run.
pub const GENERATED_BEGIN: &str = "<!-- bench-update: generated, do not edit -->";
/// See [`GENERATED_BEGIN`].
pub const GENERATED_END: &str = "<!-- bench-update: end of generated part -->";

/// Write `preamble` and `tables` into the [`UPDATE_SECTION`] of the Markdown file `doc` (created with a
/// `# Benchmarks` title when missing), between [`GENERATED_BEGIN`] and [`GENERATED_END`]; see [`update_generated`].
pub fn write_section(doc: &Path, preamble: &str, tables: &str) -> Result<()> {
    write_section_under(doc, UPDATE_SECTION, preamble, tables)
}

/// [`write_section`] into the section `heading` (another benchmark's).
pub fn write_section_under(doc: &Path, heading: &str, preamble: &str, tables: &str) -> Result<()> {
    let old = match std::fs::read_to_string(doc) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(Error::io(doc, e)),
    };
    let body =
        if preamble.trim().is_empty() { tables.to_string() } else { format!("{}\n\n{tables}", preamble.trim_end()) };
    crate::reports::write_text(doc, &update_generated(&old, heading, &body))
}

/// Put `generated` between the [`GENERATED_BEGIN`] and [`GENERATED_END`] lines of the section `heading` of `doc`,
/// keeping the rest of the section; when the section lacks the markers (or is missing), its whole body becomes
/// the marked block ([`replace_section`]).
pub fn update_generated(doc: &str, heading: &str, generated: &str) -> String {
    let block = format!("{GENERATED_BEGIN}\n\n{}\n\n{GENERATED_END}", generated.trim_matches('\n'));
    let lines: Vec<&str> = doc.lines().collect();
    if let Some((start, end)) = section_range(&lines, heading) {
        let body = &lines[start + 1..end];
        let begin = body.iter().position(|l| l.trim_end() == GENERATED_BEGIN);
        let finish = body.iter().position(|l| l.trim_end() == GENERATED_END);
        if let (Some(b), Some(e)) = (begin, finish)
            && b < e
        {
            let mut out: Vec<String> = lines[..start + 1 + b].iter().map(|l| l.to_string()).collect();
            out.push(block);
            out.extend(lines[start + 2 + e..].iter().map(|l| l.to_string()));
            return out.join("\n") + "\n";
        }
    }
    replace_section(doc, heading, &block)
}

/// Line range `(heading line, end)` of the section headed exactly `heading`: up to the next heading of the same or a
/// higher level, or the end of the document.
fn section_range(lines: &[&str], heading: &str) -> Option<(usize, usize)> {
    let level = heading.chars().take_while(|&c| c == '#').count().max(1);
    let is_boundary = |line: &str| {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        hashes >= 1 && hashes <= level && line[hashes..].starts_with(' ')
    };
    let start = lines.iter().position(|l| l.trim_end() == heading)?;
    let end = lines[start + 1..].iter().position(|l| is_boundary(l)).map_or(lines.len(), |i| start + 1 + i);
    Some((start, end))
}

/// Replace the body of the section headed exactly `heading` (a `## ` line) in `doc` with `body`, up to the next
/// heading of the same or a higher level; append the section when it is missing. Other sections are untouched.
pub fn replace_section(doc: &str, heading: &str, body: &str) -> String {
    let body = body.trim_end_matches('\n');
    let lines: Vec<&str> = doc.lines().collect();
    let Some((start, end)) = section_range(&lines, heading) else {
        let mut out = doc.trim_end_matches('\n').to_string();
        if !out.is_empty() {
            out += "\n\n";
        }
        return format!("{out}{heading}\n\n{body}\n");
    };
    let mut out = String::new();
    for l in &lines[..start] {
        out += l;
        out += "\n";
    }
    out += &format!("{heading}\n\n{body}\n");
    if end < lines.len() {
        out += "\n";
        for l in &lines[end..] {
            out += l;
            out += "\n";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(implementation: &str, threads: usize, scale: f64) -> UpdateTiming {
        let phases: BTreeMap<String, f64> = PHASES.iter().map(|p| (p.to_string(), scale)).collect();
        UpdateTiming {
            implementation: implementation.into(),
            stream: "pmnist".into(),
            epochs: 1,
            threads,
            total: scale * PHASES.len() as f64,
            phases,
            samples_per_s: Some(1000.0 / scale),
            repeats: Some(3),
            task: Some(1),
            train_samples: Some(54000),
            val_samples: Some(6000),
            batch_size: Some(10),
            alpha: Some(0.5),
            basis_sizes: Some(vec![1, 2, 3]),
            version: (implementation == "pytorch").then(|| "2.0".into()),
        }
    }

    #[test]
    fn json_round_trip_uses_impl_key_and_reads_minimal_files() {
        let t = timing("rust", 1, 1.0);
        let s = serde_json::to_string(&t).unwrap();
        assert!(s.contains("\"impl\":\"rust\""));
        assert_eq!(serde_json::from_str::<UpdateTiming>(&s).unwrap(), t);
        let minimal =
            r#"{"impl":"pytorch","stream":"pmnist","epochs":1,"threads":2,"phases":{"stage1":2.0},"total":2.0}"#;
        let m: UpdateTiming = serde_json::from_str(minimal).unwrap();
        assert_eq!(m.phase("stage1"), Some(2.0));
        assert_eq!(m.samples_per_s, None);
    }

    #[test]
    fn table_has_ratios_in_phase_order() {
        let rows =
            [timing("rust", 1, 1.0), timing("pytorch", 2, 4.0), timing("pytorch", 1, 5.0), timing("rust", 2, 0.5)];
        let t = table(&rows).unwrap();
        let phase_lines: Vec<&str> =
            t.lines().filter(|l| PHASES.iter().any(|p| l.starts_with(&format!("| {p} ")))).collect();
        // One table per thread count, each against PyTorch with the same threads.
        assert_eq!(phase_lines.len(), 10);
        assert!(phase_lines[0].starts_with("| stage1 |") && phase_lines[4].starts_with("| basis |"));
        assert!(phase_lines[0].ends_with("| 0.200 |"), "{}", phase_lines[0]);
        assert!(phase_lines[5].ends_with("| 0.125 |"), "{}", phase_lines[5]);
        assert!(
            t.contains("**pmnist**, 1 thread(s) on each side") && t.contains("**pmnist**, 2 thread(s) on each side")
        );
        assert!(t.contains("PyTorch 2.0, 2 threads"));
        assert!(t.contains("| **total** | **5.00** |"));
    }

    #[test]
    fn min_phases_takes_each_phase_fastest_run() {
        let a: BTreeMap<String, f64> = [("stage1".to_string(), 2.0), ("fisher".to_string(), 1.0)].into();
        let b: BTreeMap<String, f64> = [("stage1".to_string(), 1.5), ("fisher".to_string(), 3.0)].into();
        let m = min_phases(&[a, b]);
        assert_eq!(m["stage1"], 1.5);
        assert_eq!(m["fisher"], 1.0);
    }

    #[test]
    fn table_rejects_missing_rust_and_epoch_mismatch() {
        assert!(table(&[timing("pytorch", 2, 1.0)]).is_err());
        let mut other = timing("pytorch", 1, 1.0);
        other.epochs = 3;
        assert!(table(&[timing("rust", 1, 1.0), other]).is_err());
        assert!(table(&[timing("rust", 1, 1.0), timing("rust", 1, 2.0)]).is_err());
    }

    #[test]
    fn section_is_replaced_in_place_or_appended() {
        let doc = "# Benchmarks\n\n## Other\n\nkeep me\n\n## Per-task update: Rust vs PyTorch\n\nold\n### sub\nold too\n\n## Later\n\nkeep\n";
        let out = replace_section(doc, UPDATE_SECTION, "new body\n");
        assert_eq!(
            out,
            "# Benchmarks\n\n## Other\n\nkeep me\n\n## Per-task update: Rust vs PyTorch\n\nnew body\n\n## Later\n\nkeep\n"
        );
        assert_eq!(replace_section(&out, UPDATE_SECTION, "new body"), out, "idempotent");
        let appended = replace_section("# Benchmarks\n", UPDATE_SECTION, "x");
        assert_eq!(appended, "# Benchmarks\n\n## Per-task update: Rust vs PyTorch\n\nx\n");
        let last = replace_section("# B\n\n## Per-task update: Rust vs PyTorch\n\nold\n", UPDATE_SECTION, "y");
        assert_eq!(last, "# B\n\n## Per-task update: Rust vs PyTorch\n\ny\n");
    }

    #[test]
    fn generated_block_keeps_hand_written_analysis() {
        let first = update_generated("# Benchmarks\n\n## Other\n\nkeep\n", UPDATE_SECTION, "tables v1\n");
        assert!(first.contains(&format!("{GENERATED_BEGIN}\n\ntables v1\n\n{GENERATED_END}\n")), "{first}");
        assert!(first.starts_with("# Benchmarks\n\n## Other\n\nkeep\n\n## Per-task"));
        let edited = first.replace(GENERATED_END, &format!("{GENERATED_END}\n\n### Findings\n\nhand text"));
        let second = update_generated(&(edited + "\n## Later\n\nlater\n"), UPDATE_SECTION, "tables v2");
        assert!(second.contains("tables v2") && !second.contains("tables v1"));
        assert!(second.contains("### Findings\n\nhand text\n"));
        assert!(second.ends_with("## Later\n\nlater\n"));
        assert_eq!(update_generated(&second, UPDATE_SECTION, "tables v2"), second, "idempotent");
    }
}
