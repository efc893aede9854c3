//! `host device-learn`: the device path on the host — load an ONNX model, cut it into a frozen prefix (tract) and
//! native trainable layers, learn a stream of new tasks, re-export. With `--base-classes`, first the
//! class-incremental field run through the board's learner (the product's mode).
//!
//! The device path calls exactly the firmware code the board runs ([`firmware::onnx`], [`firmware::method`]);
//! the host only supplies data from IDX files and prints reports.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use firmware::augment::{AugmentPolicy, ImageShape};
use firmware::data::Samples;
use firmware::intake::take_photos;
use firmware::nn::Model;
use firmware::onnx::{Cut, DeviceModel, OnnxModel};
use firmware::train::{TrainConfig, evaluate};
use ndarray::{Array2, Axis, s};

use super::{command_line, parse_classes};
use crate::data::backbone::feature_stream;
use crate::data::stream::{self, Stream};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::models::onnx::write_checked;
use crate::progress::Bar;
use crate::reports::{self, Aggregate};
use crate::runs::presets::Preset;
use crate::runs::{registry, simulate};

/// `host device-learn`: the device path on the host — load an ONNX model, cut it into a frozen prefix (tract)
/// and native trainable layers, learn a stream of new tasks (one new head each), re-export.
#[derive(Debug, Args)]
pub struct DeviceLearnArgs {
    /// ONNX model to start from (e.g. the output of `host pretrain`).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to cut: `last:K` (the last K layers with parameters stay trainable, heads counting as one),
    /// a tensor name, or `input` (everything trainable).
    #[arg(long, default_value = "last:2")]
    pub cut: String,
    /// Data set of the new tasks.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new tasks' class groups, e.g. "4,5;6,7;8,9" (one new head per task).
    #[arg(long, default_value = "4,5;6,7;8,9")]
    pub groups: String,
    /// Classes the file's existing head 0 was trained on (labels in this order), to report how it fares.
    #[arg(long)]
    pub base_classes: Option<String>,
    /// Method (see `host simulate --method`).
    #[arg(long, default_value = "gpm+became")]
    pub method: String,
    /// Epochs per stage.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Seed (new heads, shuffling, validation slices).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the adapted model.
    #[arg(long, default_value = "out/device/adapted.onnx")]
    pub out: PathBuf,
    /// Also write reference outputs of the adapted model for `scripts/check-onnx.py`.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Folder for the JSON and Markdown report.
    #[arg(long, default_value = "out/device")]
    pub report_dir: PathBuf,
    /// Board profile of the class-incremental field run (budgets, Fisher format).
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    pub board: PathBuf,
    /// Photos per new class the field run's board is taught with (the first K of each class after the seed's
    /// shuffle; default: as many as the board's sample buffer holds). A user teaching a camera brings a handful.
    #[arg(long)]
    pub shots: Option<usize>,
    /// Run the class-incremental field run only (no task-incremental comparison and its re-export).
    #[arg(long)]
    pub field_only: bool,
    /// Export the field run's adapted model here: one ONNX file with the frozen prefix, the trained layers and one
    /// head over every class the board has learned (output `i` is class `i`, in the order printed), checked by
    /// reloading it whole in tract on real test photos (what the daemon's `Export` sends).
    #[arg(long)]
    pub field_out: Option<PathBuf>,
    /// Also write reference outputs of the field's model on those photos for `scripts/check-onnx.py`.
    #[arg(long)]
    pub field_reference: Option<PathBuf>,
    /// The method of the class-incremental run, through the same board learner (default: `field`, the board's
    /// own; a training-free peer such as `slda-oas`, `slda-oas+rp2048`, `ncm` or `randumb2048` measures what the
    /// frozen features give without learning).
    #[arg(long, default_value = "field")]
    pub field_method: String,
    /// Training-free peers run after the field run on the same photos, the same copies and the same board, and
    /// printed beside it (comma-separated method names; `none` for none). The default is the strongest measured
    /// on the device path: LDA/OAS over the frozen prefix's features.
    #[arg(long, value_delimiter = ',', default_value = "slda-oas+input")]
    pub peers: Vec<String>,
    /// Teach the field run's board the photos alone, without the jittered copies its profile's `[augment]`
    /// table adds to a class with few photos (for measuring what the copies give).
    #[arg(long)]
    pub no_augment: bool,
}

/// The preset of the stream family the trainable part belongs to (`split-fmnist` for a convolutional trunk,
/// `split-mnist` otherwise) with `epochs` per stage.
fn preset_for(model: &Model, epochs: usize) -> Result<Preset> {
    let conv = model.trunk.iter().any(|l| matches!(l, firmware::nn::Layer::Conv2d(_)));
    let mut preset = Preset::named(if conv { "split-fmnist" } else { "split-mnist" }, None)?;
    preset.train.epochs = epochs;
    preset.train.validate()?;
    Ok(preset)
}

/// Rows of `ds`'s test split whose label is in `classes`, labelled by position in `classes`.
fn class_test_samples(ds: &Dataset, classes: &[usize]) -> Result<Samples> {
    let rows: Vec<usize> = (0..ds.test_y.len()).filter(|&i| classes.contains(&ds.test_y[i])).collect();
    let y = rows.iter().filter_map(|&i| classes.iter().position(|&c| c == ds.test_y[i])).collect();
    Ok(Samples::new(ds.test_x.select(Axis(0), &rows), y)?)
}

/// Run the device path and print the accuracy matrix and α per task.
pub fn run(a: &DeviceLearnArgs) -> Result<()> {
    let t0 = Instant::now();
    if a.shots == Some(0) {
        return Err(Error::Invalid("--shots must be at least 1".into()));
    }
    if a.field_only && a.base_classes.is_none() {
        return Err(Error::Invalid("--field-only needs --base-classes (the field run starts from them)".into()));
    }
    let file = OnnxModel::open(&a.model)?;
    let cut = Cut::parse(&a.cut)?;
    let mut dm = file.split(&cut)?;
    let frozen = dm.prefix.as_ref().map_or(0, |p| p.graph.nodes.len());
    println!(
        "loaded {}: cut at '{}' → {frozen} frozen nodes in tract ({}), trainable: {} ({} parameters)",
        a.model.display(),
        file.cut_tensor(&cut)?,
        dm.prefix.as_ref().map_or("none", |p| p.plan_kind().describe()),
        dm.trainable
            .trunk
            .iter()
            .map(|l| l.kind())
            .chain(dm.trainable.heads.iter().map(|_| "Head"))
            .collect::<Vec<_>>()
            .join(" → "),
        dm.trainable.num_params()
    );
    let ds = data::load_by_name(&a.dataset, a.data_dir.as_deref())?;
    if ds.features() != dm.input_len() {
        return Err(Error::Invalid(format!(
            "the model takes {} inputs per sample, {} images have {}",
            dm.input_len(),
            ds.name,
            ds.features()
        )));
    }
    let groups = stream::parse_groups(&a.groups)?;
    let stream = stream::split(&ds, &format!("{}-new-tasks", ds.name), &groups, true, a.seed, 0.05)?;
    // The class-incremental field run starts from the file's model as it is (one head over the base classes).
    let base_model = dm.trainable.clone();
    // One new head per task, behind the file's heads.
    let offset = dm.trainable.heads.len();
    let mut rng = firmware::seeded_rng(a.seed ^ 0x4EAD);
    for &classes in &stream.head_sizes {
        dm.add_head(classes, &mut rng)?;
    }
    let base_raw = match &a.base_classes {
        Some(c) => Some(class_test_samples(&ds, &parse_classes(c)?)?),
        None => None,
    };
    let base_feats = match &base_raw {
        Some(b) => Some(Samples::new(dm.features_batched(&b.x.view(), 256)?, b.y.clone())?),
        None => None,
    };
    let tf = Instant::now();
    let fstream = feature_stream(&dm, &stream, offset)?;
    let n_feat: usize = fstream.tasks.iter().map(|t| t.train.len() + t.val.len() + t.test.len()).sum();
    println!(
        "features of {n_feat} samples computed once through the frozen prefix in {:.1} s ({} values each)",
        tf.elapsed().as_secs_f64(),
        dm.trainable.input_len()
    );
    let base_before = match &base_feats {
        Some(b) => Some(evaluate(&mut dm.trainable, b, 0, simulate::EVAL_BATCH)?.1),
        None => None,
    };

    if let Some(base) = &base_feats {
        let base_classes = parse_classes(a.base_classes.as_deref().unwrap_or_default())?;
        // Factory provisioning: the base classes' own training images (data::provision_rows) through the frozen
        // prefix.
        let rows = data::provision_rows(&ds.train_y, &base_classes);
        let labels: Vec<usize> =
            rows.iter().filter_map(|&i| base_classes.iter().position(|&c| c == ds.train_y[i])).collect();
        let provision = Samples::new(ds.train_x.select(Axis(0), &rows), labels)?;
        let shape = ImageShape { channels: ds.channels, height: ds.rows, width: ds.cols, channels_last: false };
        let check = reference_batch(base_raw.as_ref(), &stream)?;
        let photos = Photos { dm: &dm, shape, provision: &provision, stream: &stream, check };
        field_learn(a, base_model, &base_classes, &photos, base, &fstream, &groups)?;
    }
    if a.field_only {
        println!("device path (field run only) done in {:.1} s", t0.elapsed().as_secs_f64());
        return Ok(());
    }
    println!("== task-incremental (one head per task, task id given at test time; for comparison with papers)");
    let preset = preset_for(&dm.trainable, a.epochs)?;
    let mut method = registry::build(&a.method, &preset, &simulate::host_profile()?)?;
    let total: usize = fstream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * a.epochs;
    let mut bar = Bar::new(&a.method, total as u64);
    let (result, learned) = simulate::run(&fstream, dm.trainable.clone(), method.as_mut(), a.seed, &mut bar)?;
    bar.finish();
    dm.trainable = learned;

    let agg = Aggregate::new(vec![result])?;
    let command = command_line();
    let md = reports::markdown(&agg, &command);
    println!("{md}");
    if let (Some(b), Some(before)) = (&base_feats, base_before) {
        let after = evaluate(&mut dm.trainable, b, 0, simulate::EVAL_BATCH)?.1;
        println!(
            "head 0 of the file (classes {}): test accuracy {:.1} % before, {:.1} % after learning the new tasks",
            a.base_classes.as_deref().unwrap_or_default(),
            100.0 * before,
            100.0 * after
        );
    }
    let stem = format!("{}-{}", agg.stream, agg.method);
    reports::write_json(&a.report_dir.join(format!("{stem}.json")), &agg)?;
    reports::write_text(&a.report_dir.join(format!("{stem}.md")), &md)?;

    let bytes_of = |p: &std::path::Path| std::fs::metadata(p).map_err(|e| Error::io(p, e)).map(|m| m.len());
    // Reference batch: 16 test images of every new task (raw pixels).
    let x = reference_batch(None, &stream)?;
    let (worst, heads) = write_checked(&mut dm, &a.out, &x, a.reference.as_deref(), "device model")?;
    println!(
        "adapted model written to {} ({} bytes, {heads} heads); reloaded whole in tract: max output difference {worst:.1e}",
        a.out.display(),
        bytes_of(&a.out)?,
    );
    println!("device path done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Raw test photos for checking an exported model: the first 16 of `base` (when given) and of every task's test
/// split.
fn reference_batch(base: Option<&Samples>, stream: &Stream) -> Result<Array2<f32>> {
    let rows: Vec<Array2<f32>> = base
        .into_iter()
        .chain(stream.tasks.iter().map(|t| &t.test))
        .map(|s| s.x.slice(s![..s.len().min(16), ..]).to_owned())
        .collect();
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Invalid(format!("reference batch: {e}")))
}

/// The field path, class-incremental: the board's learner ([`firmware::learner::Learner`] under the `--board`
/// profile, with the device's default method [`firmware::method::FIELD_METHOD`]) starts from the file's model (one
/// head over `base_classes`), receives each new group's training samples class by class (as many as its sample
/// buffer holds, every class equally), learns them as one task with a head that grows by one row per class, and is
/// scored after every task over the test images of every class seen so far, with no task id. Prints the accuracy
/// matrix and the headline: accuracy over all test images of all classes seen.
///
/// Before it ships, the board is **provisioned** with its base classes: the learner's first task is `provision`
/// (training images of the base classes the factory has, labels = positions in `base_classes`), so that the
/// device starts with GPM bases, a Fisher and exemplars of the base classes, not with a bare model whose old
/// classes nothing protects.
/// The raw photos the field run's board is taught with, and the frozen prefix that turns them (and their
/// jittered copies) into the learner's features.
struct Photos<'a> {
    dm: &'a DeviceModel,
    shape: ImageShape,
    /// The base classes' provisioning photos (labels = positions in the base classes).
    provision: &'a Samples,
    /// The new tasks' photos (labels = positions in each group).
    stream: &'a Stream,
    /// Raw test photos of the base classes (up to 16) and of every new group (16 each): the exported model's check.
    check: Array2<f32>,
}

/// What one class-incremental run scored after its last task.
struct FieldScore {
    /// The method's name.
    method: String,
    /// % of the new classes' test images right.
    new: f64,
    /// % of the base classes' test images right.
    base: f64,
    /// % of every test image right.
    all: f64,
    /// Seconds of the run (provisioning and every task).
    seconds: f64,
}

/// The field run with `a.field_method`, then each of `a.peers` on the same photos, copies and board, and a table
/// of them side by side.
fn field_learn(
    a: &DeviceLearnArgs,
    model: Model,
    base_classes: &[usize],
    photos: &Photos<'_>,
    base_test: &Samples,
    fstream: &Stream,
    groups: &[Vec<usize>],
) -> Result<()> {
    let setup = FieldSetup { model: &model, base_classes, photos, base_test, fstream, groups };
    let (field, adapted) = field_run(a, &setup, &a.field_method, false)?;
    if let Some(path) = &a.field_out {
        let mut dm = photos.dm.clone();
        dm.trainable = adapted.model;
        let (worst, _) = write_checked(&mut dm, path, &photos.check, a.field_reference.as_deref(), "field model")?;
        println!(
            "field model written to {} ({} bytes; one head over the classes {}); reloaded whole in tract on {} real \
             test photos: max output difference {worst:.1e}",
            path.display(),
            std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len(),
            adapted.classes.join(","),
            photos.check.nrows()
        );
    }
    let peers: Vec<&String> = a.peers.iter().filter(|p| !p.is_empty() && p.as_str() != "none").collect();
    if peers.is_empty() {
        return Ok(());
    }
    let mut rows = vec![field];
    for p in peers {
        rows.push(field_run(a, &setup, p, true)?.0);
    }
    println!("the field next to the peers that learn nothing (the same photos, copies and board; no task id):");
    println!("| learner | new classes % | base classes % | all % | seconds |\n|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        let what = if i == 0 { "field" } else { "peer, training-free" };
        println!("| {what}: {} | {:.2} | {:.2} | {:.2} | {:.1} |", r.method, r.new, r.base, r.all, r.seconds);
    }
    if let Some(best) = rows[1..].iter().max_by(|x, y| x.all.total_cmp(&y.all)) {
        println!(
            "FIELD VS BEST PEER: {:+.2} points on all classes, {:+.2} on the new ones ({})",
            rows[0].all - best.all,
            rows[0].new - best.new,
            best.method
        );
    }
    Ok(())
}

/// What every class-incremental run of one `device-learn` call shares: the file's trainable model, its base
/// classes, the photos, the base classes' test features, the new tasks' features and the class groups.
#[derive(Clone, Copy)]
struct FieldSetup<'a> {
    model: &'a Model,
    base_classes: &'a [usize],
    photos: &'a Photos<'a>,
    base_test: &'a Samples,
    fstream: &'a Stream,
    groups: &'a [Vec<usize>],
}

/// The model a class-incremental run ends with and its classes, in the head's order.
struct Adapted {
    model: Model,
    classes: Vec<String>,
}

/// One class-incremental run of `method_spec` (`field`: the board's own) on `setup`, printing its progress and
/// matrix unless `quiet`.
fn field_run(
    a: &DeviceLearnArgs,
    setup: &FieldSetup<'_>,
    method_spec: &str,
    quiet: bool,
) -> Result<(FieldScore, Adapted)> {
    let FieldSetup { model, base_classes, photos, base_test, fstream, groups } = *setup;
    let model = model.clone();
    use firmware::budget::BoardProfile;
    use firmware::daemon::{PHOTOS_PER_LEARN, SAMPLE_CAPACITY};
    type DeviceLearner = firmware::learner::Learner<Box<dyn firmware::method::Method>, SAMPLE_CAPACITY>;
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    let t0 = Instant::now();
    let profile = BoardProfile::load(&a.board)?;
    firmware::threads::set_threads(profile.threads);
    let method: Box<dyn firmware::method::Method> = if method_spec == "field" {
        let train = TrainConfig { epochs: a.epochs, ..TrainConfig::default() };
        Box::new(firmware::method::field_method(train, profile.fisher_format, profile.budget.fisher)?)
    } else {
        let preset = preset_for(&model, a.epochs)?;
        registry::build(method_spec, &preset, &profile)?
    };
    let method_name = method.name();
    let names: Vec<String> = base_classes.iter().map(|c| c.to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let head = model.heads.first().ok_or_else(|| Error::Invalid("the model has no head".into()))?;
    if head.out_features() != base_classes.len() || model.heads.len() != 1 {
        return Err(Error::Invalid(format!(
            "the field run needs one head over the {} base classes; the file has {} head(s), the first with {} outputs",
            base_classes.len(),
            model.heads.len(),
            head.out_features()
        )));
    }
    let mut learner = DeviceLearner::new(profile.clone(), "device-learn", model, method, &refs, a.seed)?;
    say(format!(
        "== class-incremental field run (the product's mode: one growing head, no task id), board {}, method {}",
        profile.name, method_name
    ));
    // Test sets in digit labels: the base classes, then each group.
    let digits = |s: &Samples, classes: &[usize]| -> Result<Samples> {
        Ok(Samples::new(s.x.clone(), s.y.iter().map(|&y| classes[y]).collect())?)
    };
    let mut tests = vec![digits(base_test, base_classes)?];
    for (t, g) in fstream.tasks.iter().zip(groups) {
        tests.push(digits(&t.test, g)?);
    }
    let score = |learner: &DeviceLearner, upto: usize| -> Result<(Vec<f64>, f64)> {
        let mut m = learner.model().clone();
        let (mut per, mut hit, mut all) = (Vec::new(), 0usize, 0usize);
        for t in &tests[..=upto] {
            let pred = m.predict(&t.x.view(), 0)?;
            let ok = pred
                .iter()
                .zip(&t.y)
                .filter(|(p, y)| learner.class_name(**p as u32).ok().and_then(|n| n.parse::<usize>().ok()) == Some(**y))
                .count();
            per.push(100.0 * ok as f64 / t.len().max(1) as f64);
            hit += ok;
            all += t.len();
        }
        Ok((per, 100.0 * hit as f64 / all.max(1) as f64))
    };
    // The board's intake: each batch of photos with the jittered copies its profile adds to a class with few
    // photos (firmware::intake::take_photos, the daemon's own intake), through the frozen prefix, into the
    // sample buffer.
    let policy = if a.no_augment { AugmentPolicy::OFF } else { profile.augment };
    let mut aug_rng = firmware::seeded_rng(a.seed ^ 0xA06_E17);
    let mut intake = |learner: &mut DeviceLearner, x: &Array2<f32>, labels: &[u32], names: &[String]| -> Result<()> {
        let classes: Vec<&str> = labels.iter().map(|&y| names[y as usize].as_str()).collect();
        take_photos(learner, photos.dm, x.view(), &classes, photos.shape, &policy, &mut aug_rng, |_, e| Err(e))?;
        Ok(())
    };
    let mut rows = vec![score(&learner, 0)?];
    let provision = photos.provision;
    let labels: Vec<u32> = provision.y.iter().map(|&y| y as u32).collect();
    intake(&mut learner, &provision.x, &labels, &names)?;
    let buffered = learner.buffer().len();
    learner.learn()?;
    say(format!(
        "provisioned with {} training images of the base classes ({buffered} samples with their jittered copies): \
         accuracy on them {:.2} %",
        provision.len(),
        score(&learner, 0)?.1
    ));
    let mut rng = firmware::seeded_rng(a.seed ^ 0xF1E1D);
    for (ti, (t, g)) in photos.stream.tasks.iter().zip(groups).enumerate() {
        // Every class of the group equally, interleaved: `--shots` photos each, or as many as one learn takes.
        let per_class = (PHOTOS_PER_LEARN / g.len()).min(a.shots.unwrap_or(usize::MAX));
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); g.len()];
        for (i, &y) in t.train.y.iter().enumerate() {
            by_class[y].push(i);
        }
        for idx in &mut by_class {
            rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
            idx.truncate(per_class);
        }
        let mut picked = Vec::new();
        for k in 0..per_class {
            for (c, idx) in by_class.iter().enumerate() {
                if let Some(&i) = idx.get(k) {
                    picked.push((i, c as u32));
                }
            }
        }
        let x = t.train.x.select(Axis(0), &picked.iter().map(|p| p.0).collect::<Vec<_>>());
        let labels: Vec<u32> = picked.iter().map(|p| p.1).collect();
        let group_names: Vec<String> = g.iter().map(|c| c.to_string()).collect();
        intake(&mut learner, &x, &labels, &group_names)?;
        let (photos_taught, n) = (labels.len(), learner.buffer().len());
        let report = learner.learn()?;
        rows.push(score(&learner, ti + 1)?);
        say(format!(
            "learned classes {:?} from {photos_taught} photos ({n} samples with their jittered copies, α {}): \
             accuracy over the {} classes seen, no task id: {:.2} %",
            g,
            report.alpha.map_or("–".into(), |x| format!("{x:.3}")),
            learner.classes().len(),
            rows[ti + 1].1
        ));
    }
    let mut head = String::from("| after ↓ / on → | classes ");
    head.push_str(&base_classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    for g in groups {
        head.push_str(&format!(" | classes {}", g.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")));
    }
    say(format!("{head} | all seen |"));
    say(format!("|---{}|---|", "|---".repeat(groups.len() + 1)));
    for (i, (per, all)) in rows.iter().enumerate() {
        let name = if i == 0 { "base model".to_string() } else { format!("classes {:?}", groups[i - 1]) };
        let cells: Vec<String> =
            (0..=groups.len()).map(|j| per.get(j).map_or("–".into(), |v| format!("{v:.1}"))).collect();
        say(format!("| {name} | {} | {all:.2} |", cells.join(" | ")));
    }
    let (per, all) = &rows[rows.len() - 1];
    let acc = per.iter().sum::<f64>() / per.len().max(1) as f64;
    say(format!(
        "FIELD RESULT (class-incremental, no task id): {all:.2} % of the test images of all {} digits right \
         (mean over the {} class groups: {acc:.2} %), {:.1} s",
        learner.classes().len(),
        per.len(),
        t0.elapsed().as_secs_f64()
    ));
    // The new classes' images together (every group after the base), and the base classes' alone.
    let (hit, n) =
        per.iter().zip(&tests).skip(1).fold((0.0, 0usize), |(h, n), (p, t)| (h + p * t.len() as f64, n + t.len()));
    say(format!(
        "FIELD NEW/BASE: new classes {:.2} % of {n} test images, base classes {:.2} % ({} photos per new class)",
        hit / n.max(1) as f64,
        per[0],
        a.shots.map_or_else(|| "all buffered".to_string(), |k| k.to_string())
    ));
    let new = hit / n.max(1) as f64;
    let score = FieldScore { method: method_name, new, base: per[0], all: *all, seconds: t0.elapsed().as_secs_f64() };
    let classes = learner.classes().iter().map(|c| c.name.clone()).collect();
    Ok((score, Adapted { model: learner.model().clone(), classes }))
}
