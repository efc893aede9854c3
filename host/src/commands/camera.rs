//! `host camera`: the camera board on the host — EfficientNet-Lite0 as the frozen backbone, colour photos of any
//! size from class folders, the board's learner (its profile, its field method, its intake with the jittered
//! copies) learning the classes two at a time from K photos each, scored over every class seen with no task id,
//! next to a training-free peer fed the very same photos and copies; the adapted model exported as one ONNX file
//! (backbone, trained layers, one head over every class) and checked in tract on real photos.
//!
//! Every step is the firmware's: photos are decoded by [`firmware::inbox::Preprocess::decode`] with the spec that
//! travels with the backbone, turned into features by [`firmware::intake::photo_features`] and buffered by
//! [`firmware::intake::buffer_intake`] (the daemon's intake, split so that one intake feeds both learners), and
//! learned by [`firmware::learner::Learner::learn`]. The host only picks the photos and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use firmware::budget::BoardProfile;
use firmware::daemon::SAMPLE_CAPACITY;
use firmware::data::Samples;
use firmware::intake::{buffer_intake, photo_features};
use firmware::method::Method;
use firmware::nn::zoo;
use firmware::onnx::DeviceModel;
use firmware::train::TrainConfig;
use ndarray::Array2;
use rand::seq::SliceRandom;

use super::parse_list;
use crate::data::photos::{self, PhotoFile};
use crate::error::{Error, Result};
use crate::models::onnx::write_checked;
use crate::runs::{presets::Preset, registry};

type BoardLearner = firmware::learner::Learner<Box<dyn Method>, SAMPLE_CAPACITY>;

/// `host camera`'s options.
#[derive(Debug, Args)]
pub struct CameraArgs {
    /// The backbone (an ONNX file with its preprocessing spec embedded or beside it).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the backbone is cut: its pooled features.
    #[arg(long, default_value = photos::LITE0_FEATURES)]
    pub cut: String,
    /// Folder with one sub-folder of photos per class (default: the tuxpaint stamps `scripts/fetch-data.sh`
    /// installs).
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Class folders, in the order the board learns them, two at a time.
    #[arg(long, value_delimiter = ',', default_values_t = photos::TUX8_CLASSES.map(String::from))]
    pub classes: Vec<String>,
    /// Fixed test photos per class (never taught).
    #[arg(long, default_value_t = photos::TUX8_TEST_PER_CLASS)]
    pub test_per_class: usize,
    /// Photos per class the board is taught, one run per value (comma separated).
    #[arg(long, default_value = "5,10,20")]
    pub shots: String,
    /// Seed (which photos, the new layers' initialisation, the copies' jitter).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The board's profile (budgets, Fisher format, threads, copies per photo). The default is the Orin Nano, a
    /// camera board (the Jetson Nano's profile fits too since its workspace budget became 160 MiB).
    #[arg(long, default_value = "boards/jetson-orin-nano-8gb.toml")]
    pub board: PathBuf,
    /// Training-free peers taught the same photos and copies (comma separated; `none` for none).
    #[arg(long, value_delimiter = ',', default_value = "slda-oas+input")]
    pub peers: Vec<String>,
    /// Export the field's model of the last run here (one ONNX file: backbone, trained layers, one head over
    /// every class), checked by reloading it whole in tract on one test photo per class.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write reference outputs on those photos for `scripts/check-onnx.py` (onnxruntime).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// One learner of a run and what it scored after its latest task (% of the test photos of every class seen).
struct Run {
    name: String,
    learner: BoardLearner,
    score: f64,
}

/// % of `test` (features, labels = class positions in `classes`) that `learner` names right, over the classes
/// it has learned.
fn score(learner: &BoardLearner, test: &Samples, classes: &[String]) -> Result<f64> {
    let mut model = learner.model().clone();
    let pred = model.predict(&test.x.view(), 0)?;
    let right = pred
        .iter()
        .zip(&test.y)
        .filter(|(p, y)| learner.class_name(**p as u32).ok() == classes.get(**y).map(String::as_str))
        .count();
    Ok(100.0 * right as f64 / test.len().max(1) as f64)
}

/// Decode `files` as the board decodes its inbox: one model input per row.
fn decode_all(pre: &firmware::inbox::Preprocess, files: &[PhotoFile]) -> Result<Array2<f32>> {
    let mut data = Vec::with_capacity(files.len() * pre.len());
    for f in files {
        let bytes = std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?;
        data.extend(pre.decode(&bytes, &f.rel)?);
    }
    Array2::from_shape_vec((files.len(), pre.len()), data).map_err(|e| Error::Invalid(format!("photos: {e}")))
}

/// Run the camera board: see the module documentation.
pub fn run(a: &CameraArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::data::data_dir);
    let model_path = a.model.clone().unwrap_or_else(|| photos::lite0_path(&data_dir));
    let root = a.photos.clone().unwrap_or_else(|| data_dir.join(photos::TUX8_FOLDER));
    let shots: Vec<usize> = parse_list(&a.shots, "shots")?;
    if shots.contains(&0) || a.classes.len() < 2 {
        return Err(Error::Invalid("--shots must be ≥ 1 and --classes must name at least two classes".into()).into());
    }
    let profile = BoardProfile::load(&a.board)?;
    firmware::threads::set_threads(profile.threads);
    let (prefix, pre) = photos::open_backbone(&model_path, &a.cut)?;
    let width = prefix.feature_len();
    let names: Vec<&str> = a.classes.iter().map(String::as_str).collect();
    let (mut train, mut tests) = (Vec::new(), Vec::new());
    for files in photos::list_classes(&root, &names)? {
        let (tr, te) = photos::split_fixed(&files, a.test_per_class)?;
        train.push(tr);
        tests.extend(te);
    }
    let fewest = train.iter().map(Vec::len).min().unwrap_or(0);
    if let Some(k) = shots.iter().find(|&&k| k > fewest) {
        return Err(Error::Invalid(format!("--shots {k}: a class has only {fewest} training photos")).into());
    }
    println!(
        "camera board {}: backbone {} cut at '{}' ({width} features, preprocessing from its spec), {} classes from \
         {}, {} test photos",
        profile.name,
        model_path.display(),
        a.cut,
        names.len(),
        root.display(),
        tests.len()
    );
    // The test photos' features: what the board's backbone makes of them (cached on disk for the next run).
    let test_x = photos::cached_features(&data_dir.join("cache"), &model_path, &a.cut, &tests)?;
    let test_y: Vec<usize> = tests.iter().map(|f| f.class).collect();
    let mut dm = DeviceModel::new(Some(prefix), zoo::mlp(width, &[256], &[2], true, &mut firmware::seeded_rng(0))?)?;
    let groups: Vec<Vec<usize>> = (0..names.len()).collect::<Vec<_>>().chunks(2).map(<[usize]>::to_vec).collect();
    let mut summary = Vec::new();
    let mut last_field = None;
    for &k in &shots {
        let mut runs = Vec::new();
        let methods: Vec<&str> = std::iter::once("field")
            .chain(a.peers.iter().map(String::as_str).filter(|p| !p.is_empty() && *p != "none"))
            .collect();
        for m in &methods {
            let model = zoo::mlp(width, &[256], &[groups[0].len()], true, &mut firmware::seeded_rng(a.seed))?;
            let method: Box<dyn Method> = if *m == "field" {
                let train = TrainConfig::default();
                Box::new(firmware::method::field_method(train, profile.fisher_format, profile.budget.fisher)?)
            } else {
                registry::build(m, &Preset::named("tux8-ci", None)?, &profile)?
            };
            let first: Vec<&str> = groups[0].iter().map(|&c| names[c]).collect();
            let learner = BoardLearner::new(profile.clone(), "lite0-mlp", model, method, &first, a.seed)?;
            runs.push(Run { name: learner.method().name(), learner, score: 0.0 });
        }
        let mut pick_rng = firmware::seeded_rng(a.seed ^ 0xCA3E_0000 ^ k as u64);
        let mut aug_rng = firmware::seeded_rng(a.seed ^ 0xA06_E17);
        let tk = Instant::now();
        for g in &groups {
            // K photos of each class of the group, interleaved class by class.
            let mut picked: Vec<Vec<PhotoFile>> = g
                .iter()
                .map(|&c| {
                    let mut files = train[c].clone();
                    files.shuffle(&mut pick_rng);
                    files.truncate(k);
                    files
                })
                .collect();
            let mut files = Vec::new();
            for i in 0..k {
                for p in &mut picked {
                    if let Some(f) = p.get(i) {
                        files.push(f.clone());
                    }
                }
            }
            let x = decode_all(&pre, &files)?;
            let classes: Vec<&str> = files.iter().map(|f| names[f.class]).collect();
            let room = SAMPLE_CAPACITY.saturating_sub(runs[0].learner.buffer().len());
            let intake = photo_features(&dm, x.view(), &classes, pre.shape(), &profile.augment, room, &mut aug_rng)?;
            let seen: Vec<usize> = groups.iter().take_while(|h| h[0] <= g[0]).flatten().copied().collect();
            let rows: Vec<usize> = (0..test_y.len()).filter(|&i| seen.contains(&test_y[i])).collect();
            let test = Samples::new(test_x.select(ndarray::Axis(0), &rows), rows.iter().map(|&i| test_y[i]).collect())?;
            for r in &mut runs {
                buffer_intake(&mut r.learner, &intake, &classes, |_, e| Err(e))?;
                r.learner.learn()?;
                r.score = score(&r.learner, &test, &a.classes)?;
            }
            println!(
                "K = {k}: learned {} from {} photos ({} samples with their jittered copies); over the {} classes \
                 seen, no task id: {}",
                g.iter().map(|&c| names[c]).collect::<Vec<_>>().join(" + "),
                files.len(),
                intake.features.nrows(),
                seen.len(),
                runs.iter().map(|r| format!("{} {:.2} %", r.name, r.score)).collect::<Vec<_>>().join(", ")
            );
        }
        let secs = tk.elapsed().as_secs_f64();
        summary.push((k, runs.iter().map(|r| (r.name.clone(), r.score)).collect::<Vec<_>>(), secs));
        last_field = runs.into_iter().next().map(|r| r.learner);
    }
    println!("the camera board over all {} classes, no task id (% of {} test photos):", names.len(), tests.len());
    println!(
        "| photos per class | {} | seconds |",
        summary[0].1.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(summary[0].1.len()));
    for (k, row, secs) in &summary {
        let cells: Vec<String> = row.iter().map(|(_, v)| format!("{v:.2}")).collect();
        println!("| {k} | {} | {secs:.1} |", cells.join(" | "));
    }
    for (k, row, _) in &summary {
        if let (Some((_, field)), Some(best)) = (row.first(), row[1..].iter().map(|(_, v)| *v).reduce(f64::max)) {
            println!(
                "CAMERA K={k}: field {field:.2} %, best training-free peer {best:.2} % ({:+.2} points)",
                field - best
            );
        }
    }
    if let (Some(path), Some(learner)) = (&a.out, last_field) {
        export(&mut dm, learner, path, a.reference.as_deref(), &pre, &tests, names.len())?;
    }
    println!("camera board done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Export the field learner's model behind the backbone and check it on the first test photo of each class.
fn export(
    dm: &mut DeviceModel,
    learner: BoardLearner,
    path: &Path,
    reference: Option<&Path>,
    pre: &firmware::inbox::Preprocess,
    tests: &[PhotoFile],
    classes: usize,
) -> Result<()> {
    let order: Vec<String> = learner.classes().iter().map(|c| c.name.clone()).collect();
    dm.trainable = learner.into_model();
    let one_each: Vec<PhotoFile> = (0..classes).filter_map(|c| tests.iter().find(|f| f.class == c).cloned()).collect();
    let x = decode_all(pre, &one_each)?;
    let (worst, _) = write_checked(dm, path, &x, reference, "camera field model")?;
    println!(
        "camera field model written to {} ({} bytes; backbone, trained layers, one head over {}); reloaded whole in \
         tract on {} real photos: max output difference {worst:.1e}",
        path.display(),
        std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len(),
        order.join(", "),
        x.nrows()
    );
    Ok(())
}
