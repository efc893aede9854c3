//! `host fleet sim`: the fleet's accuracy, in one process (issue 18, the results part; no broker involved).
//!
//! N boards ship with the same base model (the shipped CNN, pre-trained on MNIST digits 0–3, cut where the daemon
//! cuts it) and are provisioned identically at the factory (the base classes' first training images, as
//! `host device-learn` does). In the field each board learns its own new digits from its own photos with the
//! device's learner ([`firmware::daemon::DeviceLearner`], the board profile's Fisher format and budgets): board
//! `i` gets `k = max(2, ⌈6/N⌉)` of the six new digits 4–9, round robin, so with 4 or 8 boards a digit is learned
//! on several boards, each from different photos (the training images of a digit are shuffled with the seed and
//! dealt out in disjoint slices, `1024/k` per digit and board: a sample buffer's worth). Each board's committed
//! state becomes its [`FleetUpdate`] (trainable parameters, accumulated Fisher in the board's compact format,
//! class registry, the SLDA statistics it learned), exactly what it would publish, and the updates are merged:
//!
//! - **merged** (the product): boards learn with the fleet method ([`firmware::method::fleet_method`]: the
//!   trunk stays the fleet's, only the SLDA statistics learn) and [`merge_updates`] pools their statistics into
//!   the head (the trunk's Fisher-weighted closed form θ* = (Σᵢ Fᵢ)⁻¹ Σᵢ Fᵢ θᵢ is then the shared trunk);
//! - **plain average**: the same updates, every parameter averaged (θ* = mean of θᵢ, head rows averaged over
//!   the boards that know the class);
//! - **Fisher rows**: the same updates, the head rows Fisher-weighted instead of pooled (the closed form applied
//!   to the head as to the trunk);
//! - **trained trunks**: boards that train their trunks with the field method ([`firmware::method::field_method`],
//!   GPM-projected), merged the same way (Fisher-weighted trunk, pooled statistics): each board's statistics are
//!   over its own trunk's features, which the merged trunk no longer computes;
//! - **joint**: one board provisioned the same way that learns every board's photos together as one task with
//!   the field method (trunk trained: the best one place with all data reaches), and with the fleet method;
//! - **alone**: each fleet board's own model.
//!
//! Every model is scored class-incrementally on the whole MNIST test set (10 000 images, digits 0–9, no task
//! id): a prediction is right when the class name of the predicted head row is the image's digit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use firmware::budget::BoardProfile;
use firmware::daemon::{DeviceLearner, PHOTOS_PER_LEARN};
use firmware::data::Samples;
use firmware::fisher::{FisherFormat, compact};
use firmware::fleet::{FleetUpdate, MergedModel, SldaSums, merge_updates};
use firmware::learner::Learner;
use firmware::method::Became;
use firmware::nn::{Linear, Model};
use firmware::onnx::{Cut, DeviceModel, OnnxModel};
use firmware::store::LearnerState;
use firmware::train::TrainConfig;
use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reports::MeanStd;

/// The digits the base model knows.
pub const BASE_CLASSES: [usize; 4] = [0, 1, 2, 3];
/// The digits the fleet learns in the field.
pub const NEW_CLASSES: [usize; 6] = [4, 5, 6, 7, 8, 9];
/// Sample capacity of the joint learner (every board's photos at once: 8 boards × 1024).
const JOINT_CAPACITY: usize = 8 * PHOTOS_PER_LEARN;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetSimConfig {
    /// The shipped base model (ONNX).
    pub model: PathBuf,
    /// Where the frozen prefix ends (the daemon's default `last:2`).
    pub cut: String,
    /// Board profile of every board.
    pub board: PathBuf,
    /// Fleet sizes.
    pub devices: Vec<usize>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Epochs per learning stage (the daemon's default is 3).
    pub epochs: usize,
    /// Data folder.
    pub data_dir: PathBuf,
}

/// One fleet size and seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetRun {
    /// Number of boards.
    pub devices: usize,
    /// Seed.
    pub seed: u64,
    /// The new digits each board learned.
    pub classes: Vec<Vec<usize>>,
    /// Accuracy (%) of the fleet's merge (fleet method, pooled SLDA statistics) over the 10 digits.
    pub merged: f64,
    /// Accuracy (%) of the plain parameter average of the same updates.
    pub average: f64,
    /// Accuracy (%) of the same updates with the head rows Fisher-weighted instead of pooled.
    pub fisher_rows: f64,
    /// Accuracy (%) of boards that trained their trunks (field method), merged the same way.
    pub trained_trunks: f64,
    /// Accuracy (%) of one board that learned all the boards' photos with the field method (trunk trained).
    pub joint: f64,
    /// Accuracy (%) of one board that learned all the boards' photos with the fleet method.
    pub joint_fleet_method: f64,
    /// Accuracy (%) of each board alone.
    pub alone: Vec<f64>,
    /// Bytes of each board's update frame as it would be published.
    pub update_bytes: Vec<usize>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// The new digits of each of `n` boards: `k = max(2, ⌈6/n⌉)` per board, dealt round robin.
pub fn assignment(n: usize) -> Vec<Vec<usize>> {
    let k = NEW_CLASSES.len().div_ceil(n.max(1)).max(2);
    (0..n).map(|i| (0..k).map(|j| NEW_CLASSES[(i * k + j) % NEW_CLASSES.len()]).collect()).collect()
}

/// Features of the whole data set through the base's frozen prefix, computed once.
pub(crate) struct Data {
    /// Training images' features and labels.
    pub(crate) train: Samples,
    /// Test images' features and labels.
    pub(crate) test: Samples,
    /// Rows of `train` every board is provisioned with ([`crate::data::provision_rows`] of the base digits).
    pub(crate) provision: Vec<usize>,
}

impl Data {
    /// MNIST's features through `dm`'s frozen prefix and the provisioning rows.
    pub(crate) fn load(dm: &DeviceModel, ds: &crate::data::Dataset) -> Result<Self> {
        let t0 = Instant::now();
        let features = |x: &Array2<f32>| dm.features_batched(&x.view(), 256);
        let provision = crate::data::provision_rows(&ds.train_y, &BASE_CLASSES);
        let data = Self {
            train: Samples::new(features(&ds.train_x)?, ds.train_y.clone())?,
            test: Samples::new(features(&ds.test_x)?, ds.test_y.clone())?,
            provision,
        };
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "features of MNIST through the frozen prefix");
        Ok(data)
    }
}

/// The new digits of each of `n` boards ([`assignment`]) and each board's photos (rows of the training set): each
/// new digit's images shuffled with `seed` and dealt to its boards in disjoint slices of `1024/k`; and the random
/// stream after the dealing (the joint learner's shuffle continues it).
pub(crate) fn deal(train_y: &[usize], n: usize, seed: u64) -> (Vec<Vec<usize>>, Vec<Vec<usize>>, ChaCha8Rng) {
    let classes = assignment(n);
    let mut rng = firmware::seeded_rng(seed ^ 0xF1EE7);
    let mut photos: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &c in &NEW_CLASSES {
        let mut rows: Vec<usize> = (0..train_y.len()).filter(|&i| train_y[i] == c).collect();
        rows.shuffle(&mut rng);
        let holders: Vec<usize> = (0..n).filter(|&d| classes[d].contains(&c)).collect();
        for (h, &d) in holders.iter().enumerate() {
            let per = PHOTOS_PER_LEARN / classes[d].len();
            photos[d].extend(rows.iter().skip(h * per).take(per));
        }
    }
    (classes, photos, rng)
}

/// Run every fleet size and seed; the runs in order.
pub fn run(cfg: &FleetSimConfig) -> Result<Vec<FleetRun>> {
    let file = OnnxModel::open(&cfg.model)?;
    let dm = file.split(&Cut::parse(&cfg.cut)?)?;
    let profile = BoardProfile::load(&cfg.board)?;
    firmware::threads::set_threads(profile.threads);
    let ds = crate::data::load_mnist(&cfg.data_dir.join("mnist"))?;
    let data = Data::load(&dm, &ds)?;
    let mut runs = Vec::new();
    for &n in &cfg.devices {
        for &seed in &cfg.seeds {
            let r = run_one(cfg, &profile, &dm, &data, n, seed)?;
            tracing::info!(
                devices = n,
                seed,
                merged = r.merged,
                average = r.average,
                joint = r.joint,
                secs = r.seconds,
                "fleet run done"
            );
            runs.push(r);
        }
    }
    Ok(runs)
}

fn names(classes: &[usize]) -> Vec<String> {
    classes.iter().map(usize::to_string).collect()
}

/// A learner of capacity `CAP` on the base model, provisioned with the base classes.
pub(crate) fn provisioned<const CAP: usize>(
    epochs: usize,
    profile: &BoardProfile,
    dm: &DeviceModel,
    data: &Data,
    seed: u64,
    fleet: bool,
) -> Result<Learner<Became, CAP>> {
    let train = TrainConfig { epochs, ..TrainConfig::default() };
    let method = if fleet { firmware::method::fleet_method } else { firmware::method::field_method };
    let method = method(train, profile.fisher_format, profile.budget.fisher)?;
    let base = names(&BASE_CLASSES);
    let refs: Vec<&str> = base.iter().map(String::as_str).collect();
    let mut l = Learner::new(profile.clone(), "fleet", dm.trainable.clone(), method, &refs, seed)?;
    for &i in &data.provision {
        add(&mut l, data, i)?;
    }
    l.learn()?;
    Ok(l)
}

pub(crate) fn add<const CAP: usize>(l: &mut Learner<Became, CAP>, data: &Data, i: usize) -> Result<()> {
    let row = data.train.x.row(i);
    let x = row.as_slice().ok_or_else(|| Error::Invalid("feature row not contiguous".into()))?;
    l.add_sample(&data.train.y[i].to_string(), x)?;
    Ok(())
}

/// Accuracy (%) of `model` (head rows named by `classes`) on the test set, over all ten digits.
pub(crate) fn accuracy(model: &Model, classes: &[String], test: &Samples) -> Result<f64> {
    let mut m = model.clone();
    let mut right = 0usize;
    for (x, y) in test.x.axis_chunks_iter(Axis(0), 1000).zip(test.y.chunks(1000)) {
        let pred = m.predict(&x, 0)?;
        right += pred.iter().zip(y).filter(|(p, y)| classes.get(**p).and_then(|c| c.parse().ok()) == Some(**y)).count();
    }
    Ok(100.0 * right as f64 / test.len().max(1) as f64)
}

/// `template` with its head resized to the merged registry and every parameter set from `merged`; errors when
/// the merged layout is not the model's.
pub(crate) fn model_of(template: &Model, merged: &MergedModel) -> Result<Model> {
    let width = template.heads.first().map(Linear::in_features).ok_or_else(|| Error::Invalid("no head".into()))?;
    let n = merged.classes.len();
    let head = Linear::from_weights("head.0", Array2::zeros((n, width)), Some(Array1::zeros(n)))?;
    let mut m = Model::new(template.input_shape.clone(), template.trunk.clone(), vec![head])?;
    let layout = LearnerState::from_model(&m, "fleet")?.layout;
    if layout != merged.layout {
        return Err(Error::Invalid("the merged layout is not the boards' model".into()));
    }
    m.set_flat_params(&merged.params)?;
    Ok(m)
}

/// `updates` with every Fisher set to one and no SLDA statistics: [`merge_updates`] of them is the plain average.
pub(crate) fn averaged(updates: &[FleetUpdate]) -> Result<Vec<FleetUpdate>> {
    updates
        .iter()
        .map(|u| {
            let c = compact::encode(&vec![1.0; u.params.len()], FisherFormat::F32)?;
            Ok(FleetUpdate { fisher: c.to_blob()?, slda: None, ..u.clone() })
        })
        .collect()
}

fn run_one(
    cfg: &FleetSimConfig,
    profile: &BoardProfile,
    dm: &DeviceModel,
    data: &Data,
    n: usize,
    seed: u64,
) -> Result<FleetRun> {
    let t0 = Instant::now();
    let (classes, photos, mut rng) = deal(&data.train.y, n, seed);
    let mut updates = Vec::with_capacity(n);
    let mut trained = Vec::with_capacity(n);
    let mut alone = Vec::with_capacity(n);
    let mut update_bytes = Vec::with_capacity(n);
    let mut template = None;
    for d in 0..n {
        // Interleave the board's digits, as photos arrive in the field.
        let mut rows = photos[d].clone();
        rows.sort_by_key(|&i| (data.train.y[i], i));
        let per_class: Vec<Vec<usize>> =
            classes[d].iter().map(|&c| rows.iter().copied().filter(|&i| data.train.y[i] == c).collect()).collect();
        let board_seed = seed.wrapping_mul(1000).wrapping_add(d as u64);
        for fleet in [true, false] {
            let mut l: DeviceLearner = provisioned(cfg.epochs, profile, dm, data, board_seed, fleet)?;
            for k in 0..per_class.iter().map(Vec::len).max().unwrap_or(0) {
                for rows in &per_class {
                    if let Some(&i) = rows.get(k) {
                        add(&mut l, data, i)?;
                    }
                }
            }
            l.learn()?;
            let u = update_of(cfg, &l, d)?;
            if fleet {
                let registry: Vec<String> = l.classes().iter().map(|c| c.name.clone()).collect();
                alone.push(accuracy(l.model(), &registry, &data.test)?);
                update_bytes.push(firmware::fleet::encode_update(&u, usize::MAX >> 1)?.len());
                updates.push(u);
                template.get_or_insert_with(|| l.model().clone());
            } else {
                trained.push(u);
            }
        }
    }
    let template = template.ok_or_else(|| Error::Invalid("a fleet needs at least one board".into()))?;
    let score = |us: &[FleetUpdate]| -> Result<f64> {
        let m = merge_updates(us)?;
        accuracy(&model_of(&template, &m)?, &m.classes, &data.test)
    };
    let merged_acc = score(&updates)?;
    let average_acc = score(&averaged(&updates)?)?;
    let rows_acc = score(&updates.iter().map(|u| FleetUpdate { slda: None, ..u.clone() }).collect::<Vec<_>>())?;
    let trained_acc = score(&trained)?;
    // Joint: every board's photos on one board, one task, with either method.
    let mut all: Vec<usize> = photos.concat();
    all.shuffle(&mut rng);
    let mut joint = [0.0; 2];
    for (fleet, acc) in [false, true].into_iter().zip(joint.iter_mut()) {
        let mut l: Learner<Became, JOINT_CAPACITY> =
            provisioned(cfg.epochs, profile, dm, data, seed.wrapping_mul(1000), fleet)?;
        for &i in &all {
            add(&mut l, data, i)?;
        }
        l.learn()?;
        let registry: Vec<String> = l.classes().iter().map(|c| c.name.clone()).collect();
        *acc = accuracy(l.model(), &registry, &data.test)?;
    }
    Ok(FleetRun {
        devices: n,
        seed,
        classes,
        merged: merged_acc,
        average: average_acc,
        fisher_rows: rows_acc,
        trained_trunks: trained_acc,
        joint: joint[0],
        joint_fleet_method: joint[1],
        alone,
        update_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The update board `d` would publish from learner `l`'s committed state: its whole state, and as SLDA
/// statistics everything it learned (its one update holds the provisioning task and its own).
fn update_of<const CAP: usize>(cfg: &FleetSimConfig, l: &Learner<Became, CAP>, d: usize) -> Result<FleetUpdate> {
    let registry: Vec<String> = l.classes().iter().map(|c| c.name.clone()).collect();
    let state = l.state()?;
    let slda = state.slda.as_ref().ok_or_else(|| Error::Invalid("a board kept no SLDA statistics".into()))?;
    let slda = SldaSums::of_state(slda, &registry)?;
    let fisher = state.fisher.ok_or_else(|| Error::Invalid("a board kept no Fisher".into()))?;
    Ok(FleetUpdate {
        fleet: "sim".into(),
        device: format!("board-{d:02}"),
        generation: 2,
        base_model: cfg.model.file_name().map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
        layout: state.layout,
        params: state.params,
        fisher,
        classes: registry,
        slda: Some(slda),
    })
}

/// The Markdown table: one row per fleet size, mean ± std over seeds.
pub fn markdown(runs: &[FleetRun], command: &str) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "Command: `{command}`\n\nClass-incremental accuracy (%) on the 10 000 MNIST test images, digits 0–9, no task \
         id; mean ± std over seeds.\n\n| boards | new digits per board | seeds | **merged** (fleet method, pooled SLDA) | \
         plain average | Fisher-weighted head rows | trained trunks, pooled SLDA | joint (field method) | joint (fleet \
         method) | each board alone | merged − joint | update frame |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut sizes: Vec<usize> = runs.iter().map(|r| r.devices).collect();
    sizes.dedup();
    for n in sizes {
        let rs: Vec<&FleetRun> = runs.iter().filter(|r| r.devices == n).collect();
        let col = |f: &dyn Fn(&FleetRun) -> f64| MeanStd::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let cols = [
            col(&|r| r.merged),
            col(&|r| r.average),
            col(&|r| r.fisher_rows),
            col(&|r| r.trained_trunks),
            col(&|r| r.joint),
            col(&|r| r.joint_fleet_method),
            MeanStd::of(&rs.iter().flat_map(|r| r.alone.iter().copied()).collect::<Vec<_>>()),
        ];
        let gap = col(&|r| r.merged - r.joint);
        let bytes = rs.iter().flat_map(|r| r.update_bytes.iter().copied()).max().unwrap_or(0);
        let _ =
            write!(s, "| {n} | {} | {} |", rs.first().map_or(0, |r| r.classes.first().map_or(0, Vec::len)), rs.len());
        for c in cols {
            let _ = write!(s, " {:.2} ± {:.2} |", c.mean, c.std);
        }
        let _ = writeln!(s, " {:+.2} ± {:.2} | {:.0} KiB |", gap.mean, gap.std, bytes as f64 / 1024.0);
    }
    s
}

/// Write `fleet-sim.json` and `fleet-sim.md` into `out`.
pub fn write(runs: &[FleetRun], command: &str, out: &Path) -> Result<String> {
    let md = markdown(runs, command);
    crate::reports::write_json(&out.join("fleet-sim.json"), &runs)?;
    crate::reports::write_text(&out.join("fleet-sim.md"), &md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_new_digit_has_a_board_and_boards_get_at_least_two() {
        for n in 1..=8 {
            let a = assignment(n);
            assert_eq!(a.len(), n);
            for c in NEW_CLASSES {
                assert!(a.iter().any(|b| b.contains(&c)), "{n} boards: digit {c} unassigned");
            }
            for b in &a {
                assert!(b.len() >= 2);
                let mut u = b.clone();
                u.dedup();
                assert_eq!(u.len(), b.len(), "a board got a digit twice: {b:?}");
            }
        }
        assert_eq!(assignment(2), [vec![4, 5, 6], vec![7, 8, 9]]);
        assert_eq!(assignment(4)[3], [4, 5]);
    }
}
