//! From photos landing in a board's inbox to their task committed (issue 31 item 7): the daemon itself
//! ([`firmware::daemon::Device`]) on a camera model — EfficientNet-Lite0 cut at its pooled features, an MLP
//! 1280-256 and a head over two base categories — under a board profile, its compute threads set as asked, learning
//! two new tuxpaint categories at a time from `per_class` photos each. Each learn is split into decoding,
//! backbone (copies included), learning and commit ([`firmware::daemon::LearnTimes`]); the heap's peak during the
//! learn and the process's peak resident memory are reported beside them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::benches::replay::HeapMeter;
use crate::data::photos::{self, TUX8_CLASSES, TUX8_FOLDER, TUX8_TEST_PER_CLASS};
use crate::error::{Error, Result};
use firmware::daemon::{Config, Device, LearnTimes};
use firmware::onnx::{Cut, Engine, OnnxModel};

/// What to run.
#[derive(Debug, Clone)]
pub struct InboxBench {
    /// Data folder (Lite0 and the tuxpaint photos).
    pub data_dir: PathBuf,
    /// Board profile (its `threads` replaced by [`InboxBench::threads`]).
    pub board: PathBuf,
    /// Compute threads.
    pub threads: usize,
    /// Photos per new category in each learn (two categories a learn).
    pub per_class: usize,
    /// Learns per repetition (2, 4 or 6 new categories after the two base ones).
    pub learns: usize,
    /// Repetitions, each from a fresh state.
    pub reps: usize,
    /// The prefix's engine.
    pub engine: Engine,
}

/// One learn of one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LearnTiming {
    /// Repetition.
    pub rep: usize,
    /// Learn within the repetition (0-based).
    pub learn: usize,
    /// Photos learned from the inbox.
    pub photos: u32,
    /// Rows through the backbone and into the learner: the photos and their jittered copies.
    pub buffered: usize,
    /// Decode and resize, seconds.
    pub decode: f64,
    /// Backbone over photos and copies, seconds.
    pub backbone: f64,
    /// The learner's task, seconds.
    pub learn_s: f64,
    /// Commit, seconds.
    pub commit: f64,
    /// Inbox to committed, seconds.
    pub total: f64,
    /// Largest heap in use during the learn (Rust allocations), bytes.
    pub heap_peak: usize,
}

/// The benchmark's result (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxResult {
    /// Board profile.
    pub board: String,
    /// Compute threads.
    pub threads: usize,
    /// The prefix's engine.
    pub engine: String,
    /// Photos per category per learn.
    pub per_class: usize,
    /// Every learn.
    pub learns: Vec<LearnTiming>,
    /// The process's peak resident set (VmHWM) at the end, bytes (0 where /proc is missing).
    pub peak_rss: u64,
    /// The state store's size on disk at the end of the last repetition, bytes.
    pub state_bytes: u64,
}

/// The process's peak resident set size (Linux `VmHWM`), bytes; 0 when unknown.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024))
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { dir_bytes(&p) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}

/// Run the benchmark in `work` (created; its contents replaced).
pub fn run(b: &InboxBench, work: &Path, heap: &dyn HeapMeter) -> Result<InboxResult> {
    let new_classes = 2 * b.learns;
    if b.learns == 0 || 2 + new_classes > TUX8_CLASSES.len() || b.per_class == 0 || b.reps == 0 {
        return Err(Error::Invalid(format!(
            "learns 1..={}, per-class and reps at least 1",
            (TUX8_CLASSES.len() - 2) / 2
        )));
    }
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    // The camera model: Lite0 cut at its features, a fresh MLP and a head over the two base categories.
    let lite0 = photos::lite0_path(&b.data_dir);
    crate::data::require_fetched(&lite0)?;
    let mut dm = OnnxModel::open(&lite0)?.split(&Cut::parse(photos::LITE0_FEATURES)?)?;
    dm.trainable = firmware::nn::zoo::mlp(1280, &[256], &[2], true, &mut firmware::seeded_rng(0))?;
    let model = work.join("camera.onnx");
    dm.write_onnx(&model)?;
    // The board profile with the asked thread count.
    let text = std::fs::read_to_string(&b.board).map_err(|e| Error::io(&b.board, e))?;
    let mut replaced = false;
    let text: String = text
        .lines()
        .map(|l| {
            if !replaced && l.trim_start().starts_with("threads") && l.contains('=') {
                replaced = true;
                format!("threads = {}", b.threads)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !replaced {
        return Err(Error::Invalid(format!("{}: no `threads` line to set", b.board.display())));
    }
    // The profile's name must match its file name.
    let board =
        work.join(b.board.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file", b.board.display())))?);
    std::fs::write(&board, text).map_err(|e| Error::io(&board, e))?;
    // Training photos of each category (the fixed test split left out), in path order.
    let root = b.data_dir.join(TUX8_FOLDER);
    let mut train = Vec::new();
    for files in photos::list_classes(&root, &TUX8_CLASSES)? {
        train.push(photos::split_fixed(&files, TUX8_TEST_PER_CLASS)?.0);
    }
    let mut out = Vec::new();
    let mut state_bytes = 0;
    for rep in 0..b.reps {
        let dir = work.join(format!("rep{rep}"));
        let mut cfg = Config::new(&board, &model, dir.join("state"));
        cfg.cut = photos::LITE0_FEATURES.into();
        cfg.classes = Some(TUX8_CLASSES[..2].iter().map(|c| c.to_string()).collect());
        cfg.inbox = Some(dir.join("field"));
        cfg.engine = b.engine;
        let mut dev = Device::open(cfg)?;
        for learn in 0..b.learns {
            for class in 2 + 2 * learn..4 + 2 * learn {
                let name = TUX8_CLASSES[class];
                let d = dir.join("field/inbox").join(name);
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                // Other photos each repetition (the learner's time depends on how many copies, not which photos).
                for f in train[class].iter().cycle().skip(rep * b.per_class).take(b.per_class) {
                    let to = d.join(f.rel.replace('/', "_"));
                    std::fs::copy(&f.path, &to).map_err(|e| Error::io(&to, e))?;
                }
            }
            dev.refresh();
            heap.reset_peak();
            let o = dev.learn()?;
            let LearnTimes { decode, backbone, learn: learn_s, commit, total, backbone_rows } = o.times;
            let t = LearnTiming {
                rep,
                learn,
                photos: o.from_inbox,
                buffered: backbone_rows,
                decode,
                backbone,
                learn_s,
                commit,
                total,
                heap_peak: heap.peak(),
            };
            println!(
                "rep {rep} learn {learn}: {} photos ({} rows with copies) → committed in {:.3} s (decode {:.3}, backbone {:.3}, learn {:.3}, \
                 commit {:.3}); heap peak {:.1} MiB",
                t.photos,
                t.buffered,
                t.total,
                t.decode,
                t.backbone,
                t.learn_s,
                t.commit,
                t.heap_peak as f64 / 1048576.0
            );
            out.push(t);
        }
        state_bytes = dir_bytes(&dir.join("state"));
    }
    Ok(InboxResult {
        board: b.board.display().to_string(),
        threads: b.threads,
        engine: b.engine.to_string(),
        per_class: b.per_class,
        learns: out,
        peak_rss: peak_rss(),
        state_bytes,
    })
}
