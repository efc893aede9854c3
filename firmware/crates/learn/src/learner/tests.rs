use super::*;
use crate::budget::Budgets;
use crate::fisher::FisherFormat;
use crate::gpm::GpmConfig;
use crate::method::{Became, Ewc, FineTune, GpmMethod};
use edgelearn_core::nn::zoo;
use edgelearn_core::train::{Silent, TrainConfig};
use edgelearn_store::{CRC32C, FORMAT_VERSION, ReplayState};
use rand::Rng;

const FEATURES: usize = 12;

fn profile(max_classes: usize, format: FisherFormat, budget: Budgets) -> BoardProfile {
    BoardProfile {
        name: "test".into(),
        description: String::new(),
        target: "x86_64-unknown-linux-gnu".into(),
        glibc_max: "2.36".into(),
        jetpack: String::new(),
        cuda_arch: String::new(),
        cuda_feature: String::new(),
        max_classes,
        fisher_format: format,
        budget,
        threads: 2,
        augment: edgelearn_core::augment::AugmentPolicy::OFF,
    }
}

/// A sample of class `c`: a bump on features `2c, 2c+1` plus noise (classes 0..6 are separable).
fn sample(c: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..FEATURES).map(|i| rng.random_range(-0.3f32..0.3) + if i / 2 == c { 1.5 } else { 0.0 }).collect()
}

fn became(format: FisherFormat) -> Became {
    let cfg = TrainConfig { epochs: 3, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
    let gcfg = GpmConfig { thresholds: vec![0.95], threshold_increment: 0.0, samples: 100, project_heads: true };
    Became::new(cfg, gcfg).with_fisher_format(format)
}

type Dev = Learner<Became, 64>;

fn learner(format: FisherFormat, budget: Budgets, max_classes: usize) -> Dev {
    let model = zoo::mlp(FEATURES, &[16], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    Learner::new(profile(max_classes, format, budget), "mlp-12-16", model, became(format), &["c0"], 5).unwrap()
}

fn feed(l: &mut Dev, classes: &[usize], per_class: usize, seed: u64) {
    let mut rng = edgelearn_core::seeded_rng(seed);
    for i in 0..per_class * classes.len() {
        let c = classes[i % classes.len()];
        l.add_sample(&format!("c{c}"), &sample(c, &mut rng)).unwrap();
    }
}

fn accuracy(l: &mut Dev, classes: &[usize], seed: u64) -> f64 {
    let mut rng = edgelearn_core::seeded_rng(seed);
    let mut ok = 0;
    for i in 0..40 {
        let c = classes[i % classes.len()];
        ok += usize::from(l.predict(&sample(c, &mut rng)).unwrap() == c as u32);
    }
    ok as f64 / 40.0
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("learner-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// Everything a refused request must leave untouched, bit for bit.
fn snapshot(l: &Dev) -> (LearnerState, Vec<u32>, Vec<u32>, usize) {
    let state = l.state().unwrap();
    let bits = state.params.iter().map(|v| v.to_bits()).collect();
    (state, bits, l.buffer().labels().to_vec(), l.model().head_outputs(0).unwrap())
}

#[test]
fn classes_arrive_and_the_head_grows_gpm_became_unchanged() {
    let dir = tmp("grow");
    let mut l = learner(FisherFormat::Log8, Budgets::UNLIMITED, 8).with_store(&dir).unwrap();
    assert_eq!(l.model().head_outputs(0).unwrap(), 1);
    feed(&mut l, &[0, 1], 30, 1);
    assert_eq!(l.model().head_outputs(0).unwrap(), 2, "c1 grew the head");
    let r1 = l.learn().unwrap();
    assert!(r1.alpha.is_none());
    assert!(l.buffer().is_empty());
    let acc01 = accuracy(&mut l, &[0, 1], 100);
    assert!(acc01 > 0.9, "task 1 accuracy {acc01}");
    let n_before = l.model().num_params();
    let f_before = l.method().f_old.clone();

    // Two new classes: the head grows by two zero rows, F_old by zeros for exactly those parameters.
    feed(&mut l, &[2, 3], 30, 2);
    assert_eq!(l.model().head_outputs(0).unwrap(), 4);
    let grown = l.method().f_old.clone();
    assert_eq!(grown.len(), l.model().num_params());
    assert_eq!(grown.len(), n_before + 2 * (16 + 1));
    let infos = l.model().param_infos();
    let w = infos.iter().find(|p| p.name == "head.0.weight").unwrap();
    let b = infos.iter().find(|p| p.name == "head.0.bias").unwrap();
    let new_rows = (w.offset + 2 * 16..w.offset + 4 * 16).chain(b.offset + 2..b.offset + 4);
    for i in new_rows {
        assert_eq!(grown[i], 0.0, "new parameter {i} must have zero Fisher");
    }
    assert_eq!(grown.iter().filter(|&&f| f != 0.0).count(), f_before.iter().filter(|&&f| f != 0.0).count());

    let r2 = l.learn().unwrap();
    let alpha = r2.alpha.unwrap();
    assert!((0.0..=1.0).contains(&alpha));
    assert!(accuracy(&mut l, &[0, 1, 2, 3], 101) > 0.7, "after task 2");
    assert_eq!(l.tasks().len(), 2);
    assert_eq!(l.task(1).unwrap().classes, vec![2, 3]);
    assert_eq!(l.metrics().alphas, vec![None, Some(alpha)]);
    assert_eq!(l.class_id("c3").unwrap(), 3);
    assert_eq!(l.class_name(2).unwrap(), "c2");

    // Commit, then a fresh learner (same base model) loads everything back bit for bit.
    assert_eq!(l.commit().unwrap(), 1);
    let mut fresh = learner(FisherFormat::Log8, Budgets::UNLIMITED, 8).with_store(&dir).unwrap();
    assert_eq!(fresh.load().unwrap(), Some(1));
    assert_eq!(fresh.state().unwrap(), l.state().unwrap());
    assert_eq!(fresh.method().f_old, l.method().f_old);
    assert_eq!(fresh.method().tasks_seen(), 2);
    assert_eq!(fresh.method().gpm.as_ref().unwrap().bases, l.method().gpm.as_ref().unwrap().bases);
    // It keeps learning where the other left off.
    feed(&mut fresh, &[4], 20, 3);
    assert_eq!(fresh.class_id("c4").unwrap(), 4);
    fresh.learn().unwrap();
    assert_eq!(fresh.commit().unwrap(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn other_methods_follow_the_growing_head() {
    fn run<M: Method + Clone>(method: M) {
        let model = zoo::mlp(FEATURES, &[16], &[1], false, &mut edgelearn_core::seeded_rng(3)).unwrap();
        let p = profile(6, FisherFormat::F32, Budgets::UNLIMITED);
        let mut l: Learner<M, 64> = Learner::new(p, "m", model, method, &["c0"], 1).unwrap();
        let mut rng = edgelearn_core::seeded_rng(2);
        for round in [[0usize, 1], [2, 3]] {
            for i in 0..40 {
                let c = round[i % 2];
                l.add_sample(&format!("c{c}"), &sample(c, &mut rng)).unwrap();
            }
            l.learn().unwrap();
        }
        assert_eq!(l.model().head_outputs(0).unwrap(), 4);
        let s = l.state().unwrap();
        assert_eq!(s.tasks.len(), 2);
        if let Some(f) = &s.fisher {
            assert_eq!(f.entries, s.params.len() as u64);
        }
    }
    let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
    let gcfg = GpmConfig { thresholds: vec![0.95], threshold_increment: 0.0, samples: 100, project_heads: true };
    run(FineTune::new(cfg.clone()));
    run(Ewc::new(cfg.clone(), 100.0));
    run(GpmMethod::new(cfg.clone(), gcfg.clone()));
    run(Became::new(cfg, gcfg).with_fisher_format(FisherFormat::Block4));
}

#[test]
fn bad_samples_are_typed_errors_and_change_nothing() {
    let mut l = learner(FisherFormat::F16, Budgets::UNLIMITED, 3);
    feed(&mut l, &[0, 1], 5, 1);
    let before = snapshot(&l);
    let mut good = sample(1, &mut edgelearn_core::seeded_rng(9));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        good[4] = bad;
        let e = l.add_sample("c1", &good).unwrap_err();
        assert!(matches!(e, Error::NonFinite(_)), "{e}");
        assert!(e.to_string().contains("pixel 4"), "{e}");
        // Not even a new class gets registered by a bad sample.
        assert!(matches!(l.add_sample("new-class", &good), Err(Error::NonFinite(_))));
        assert!(matches!(l.predict(&good), Err(Error::NonFinite(_))));
    }
    for len in [0, FEATURES - 1, FEATURES + 1] {
        let e = l.add_sample("c0", &vec![0.5; len]).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
        assert!(matches!(l.add_sample("brand-new", &vec![0.5; len]), Err(Error::Shape { .. })));
    }
    // Unknown class ids and names, unknown task ids.
    let ok = sample(0, &mut edgelearn_core::seeded_rng(1));
    assert!(matches!(l.add_sample_id(7, &ok), Err(Error::UnknownClass(_))));
    assert!(matches!(l.class_id("zebra"), Err(Error::UnknownClass(_))));
    assert!(matches!(l.class_name(99), Err(Error::UnknownClass(_))));
    assert!(matches!(l.task(0), Err(Error::UnknownTask { id: 0, known: 0 })));
    // Bad class names.
    for name in ["", "tab\there", &"x".repeat(MAX_CLASS_NAME + 1)] {
        assert!(matches!(l.add_sample(name, &ok), Err(Error::Config(_))), "{name:?}");
    }
    // One more class fits (max 3), the fourth does not.
    assert_eq!(snapshot(&l), before);
    l.add_sample("c2", &sample(2, &mut edgelearn_core::seeded_rng(2))).unwrap();
    let before = snapshot(&l);
    let e = l.add_sample("c3", &ok).unwrap_err();
    assert!(matches!(&e, Error::TooManyClasses { max: 3, name } if name == "c3"), "{e}");
    assert_eq!(snapshot(&l), before);
    // After a task, task 0 exists and task 1 does not.
    l.learn().unwrap();
    assert_eq!(l.task(0).unwrap().classes, vec![0, 1, 2]);
    assert!(matches!(l.task(1), Err(Error::UnknownTask { id: 1, known: 1 })));
    assert!(matches!(l.learn(), Err(Error::Empty(_))), "nothing buffered");
}

#[test]
fn buffer_overflow_is_an_error_not_a_drop() {
    let model = zoo::mlp(FEATURES, &[8], &[1], false, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let p = profile(4, FisherFormat::F32, Budgets::UNLIMITED);
    let mut l: Learner<Became, 5> = Learner::new(p, "m", model, became(FisherFormat::F32), &["c0"], 1).unwrap();
    let mut rng = edgelearn_core::seeded_rng(1);
    for i in 0..5 {
        l.add_sample("c0", &sample(i % 2, &mut rng)).unwrap();
    }
    let labels = l.buffer().labels().to_vec();
    let e = l.add_sample("c0", &sample(0, &mut rng)).unwrap_err();
    assert!(matches!(e, Error::BufferFull { what: "sample", capacity: 5 }), "{e}");
    // A sample of a new class is refused too, and does not grow the head.
    assert!(matches!(l.add_sample("c1", &sample(1, &mut rng)), Err(Error::BufferFull { .. })));
    assert_eq!(l.model().head_outputs(0).unwrap(), 1);
    assert_eq!(l.buffer().labels(), labels.as_slice());
    assert_eq!(l.buffer().len(), 5);
    // The buffer itself refuses too (and keeps its contents).
    let mut b = SampleBuffer::<2>::new(3);
    b.push(0, &[1.0, 2.0, 3.0]).unwrap();
    b.push(1, &[4.0, 5.0, 6.0]).unwrap();
    assert!(matches!(b.push(0, &[7.0, 8.0, 9.0]), Err(Error::BufferFull { capacity: 2, .. })));
    let (all, (t, v)) = (b.all().unwrap(), split_indices(b.len()));
    let (train, val) = (all.select(&t), all.select(&v));
    assert_eq!(train.y, vec![0, 1]);
    assert!(val.is_empty());
    assert_eq!(train.x.row(1).to_vec(), vec![4.0, 5.0, 6.0]);
}

#[test]
fn requests_over_budget_are_refused_before_anything_changes() {
    // Learn one task with plenty of room, then measure what the next steps need.
    let mut l = learner(FisherFormat::Log8, Budgets::UNLIMITED, 8);
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    let fp_now = l.footprint().unwrap();

    // A new class whose grown head would not fit the params budget.
    let budget = Budgets { params: fp_now.params, ..Budgets::UNLIMITED };
    let mut tight = learner(FisherFormat::Log8, Budgets::UNLIMITED, 8);
    feed(&mut tight, &[0, 1], 20, 1);
    tight.learn().unwrap();
    tight.profile.budget = budget;
    let before = snapshot(&tight);
    let e = tight.add_sample("c2", &sample(2, &mut edgelearn_core::seeded_rng(4))).unwrap_err();
    let grown = 4 * (16 + 1);
    assert!(
        matches!(e, Error::OverBudget { budget: "params", needed, limit } if needed == limit + grown as u64),
        "{e}"
    );
    assert_eq!(snapshot(&tight), before, "refused class changed state");
    assert_eq!(tight.method().f_old.len(), tight.model().num_params());
    // Samples of known classes still arrive.
    tight.add_sample("c1", &sample(1, &mut edgelearn_core::seeded_rng(4))).unwrap();

    // A task whose workspace does not fit: refused, samples stay buffered, model/bases/Fisher bit-identical.
    feed(&mut l, &[0, 1], 10, 2);
    let fp = l.footprint().unwrap();
    l.profile.budget = Budgets { workspace: fp.workspace - 1, ..Budgets::UNLIMITED };
    let before = snapshot(&l);
    let f_bits: Vec<u32> = l.method().f_old.iter().map(|v| v.to_bits()).collect();
    let e = l.learn().unwrap_err();
    assert!(matches!(e, Error::OverBudget { budget: "workspace", needed, limit } if needed == limit + 1), "{e}");
    assert!(e.to_string().contains("1 bytes over"), "{e}");
    assert_eq!(snapshot(&l), before);
    assert_eq!(l.method().f_old.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f_bits);
    assert_eq!(l.tasks().len(), 1);
    // With the budget back, the same samples are learned.
    l.profile.budget = Budgets::UNLIMITED;
    l.learn().unwrap();
    assert_eq!(l.tasks().len(), 2);
}

#[test]
fn a_model_over_budget_cannot_become_a_learner() {
    let model = zoo::mlp(FEATURES, &[16], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let n = model.num_params() as u64;
    let p = profile(4, FisherFormat::F32, Budgets { params: 4 * n - 1, ..Budgets::UNLIMITED });
    let e = Dev::new(p, "m", model.clone(), became(FisherFormat::F32), &["c0"], 1).unwrap_err();
    assert!(matches!(e, Error::OverBudget { budget: "params", .. }), "{e}");
    let p = profile(4, FisherFormat::F32, Budgets::UNLIMITED);
    assert!(matches!(
        Dev::new(p.clone(), "m", model.clone(), became(FisherFormat::F32), &[], 1),
        Err(Error::Shape { .. })
    ));
    let p1 = profile(0, FisherFormat::F32, Budgets::UNLIMITED);
    assert!(matches!(
        Dev::new(p1, "m", model, became(FisherFormat::F32), &["c0"], 1),
        Err(Error::TooManyClasses { .. })
    ));
}

/// A valid state frame whose header says `version`, CRC fixed up (as a newer firmware would write it).
fn with_version(bytes: &[u8], version: u16) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[4..6].copy_from_slice(&version.to_le_bytes());
    let n = b.len() - 4;
    let crc = CRC32C.checksum(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_state_file_from_a_newer_firmware_is_refused_and_nothing_changes() {
    let dir = tmp("newer");
    let mut l = learner(FisherFormat::F16, Budgets::UNLIMITED, 8).with_store(&dir).unwrap();
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    l.commit().unwrap();
    let slot = dir.join("state.a");
    let newer = with_version(&std::fs::read(&slot).unwrap(), FORMAT_VERSION + 1);
    std::fs::write(&slot, &newer).unwrap();

    // A learner that has learned something else meanwhile: load() refuses and leaves it as it was.
    let mut other = learner(FisherFormat::F16, Budgets::UNLIMITED, 8).with_store(&dir).unwrap();
    feed(&mut other, &[0, 1, 2], 10, 7);
    let before = snapshot(&other);
    let e = other.load().unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedVersion { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{e}"
    );
    assert_eq!(snapshot(&other), before);
    assert_eq!(std::fs::read(&slot).unwrap(), newer, "the newer file must not be touched");
    // A corrupt slot is reported as corrupt, also with nothing changed.
    let mut flipped = newer.clone();
    flipped[30] ^= 0x40;
    std::fs::write(&slot, &flipped).unwrap();
    assert!(matches!(other.load(), Err(Error::NoValidState(_))));
    assert_eq!(snapshot(&other), before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stored_state_for_another_model_is_refused() {
    let dir = tmp("other-model");
    let mut l = learner(FisherFormat::F32, Budgets::UNLIMITED, 8).with_store(&dir).unwrap();
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    l.commit().unwrap();
    let model = zoo::mlp(FEATURES, &[17], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let p = profile(8, FisherFormat::F32, Budgets::UNLIMITED);
    let mut other =
        Dev::new(p, "mlp-12-16", model, became(FisherFormat::F32), &["c0"], 1).unwrap().with_store(&dir).unwrap();
    let before = snapshot(&other);
    assert!(matches!(other.load(), Err(Error::Shape { .. })));
    assert_eq!(snapshot(&other), before);
    // A profile that allows fewer classes than the state has refuses it too.
    let model = zoo::mlp(FEATURES, &[16], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let p = profile(1, FisherFormat::F32, Budgets::UNLIMITED);
    let mut small =
        Dev::new(p, "mlp-12-16", model, became(FisherFormat::F32), &["c0"], 1).unwrap().with_store(&dir).unwrap();
    assert!(matches!(small.load(), Err(Error::TooManyClasses { max: 1, .. })));
    std::fs::remove_dir_all(&dir).ok();
}

/// Budgets with room for `samples` replay samples of the test model's input, nothing else limited.
fn replay_budget(samples: u64) -> Budgets {
    Budgets { replay: samples * crate::replay::bytes_per_sample(FEATURES), ..Budgets::UNLIMITED }
}

#[test]
fn the_replay_buffer_fills_class_balanced_and_lives_in_the_state() {
    let dir = tmp("replay");
    let mut l = learner(FisherFormat::F16, replay_budget(10), 8).with_store(&dir).unwrap();
    assert_eq!((l.replay().capacity(), l.replay().len()), (10, 0));
    assert_eq!(l.footprint().unwrap().replay, 10 * 52);
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    assert_eq!(l.replay().class_counts(), vec![(0, 5), (1, 5)]);
    l.commit().unwrap();
    feed(&mut l, &[2], 20, 2);
    l.learn().unwrap();
    let counts = l.replay().class_counts();
    assert_eq!(counts.iter().map(|c| c.1).sum::<usize>(), 10);
    assert!(counts.iter().all(|c| (3..=4).contains(&c.1)), "{counts:?}");
    assert_eq!(l.replay_samples(&[2]).unwrap().len(), counts[2].1);
    l.commit().unwrap();

    // A restart gets the same buffer back.
    let mut again = learner(FisherFormat::F16, replay_budget(10), 8).with_store(&dir).unwrap();
    assert_eq!(again.load().unwrap(), Some(2));
    assert_eq!(again.replay(), l.replay());
    assert_eq!(again.state().unwrap(), l.state().unwrap());

    // A replay request for a class with nothing stored, bad samples: typed errors, nothing changes.
    let before = snapshot(&again);
    assert!(matches!(again.replay_samples(&[0, 6]), Err(Error::UnknownClass(_))));
    assert!(matches!(again.add_sample("c0", &[f32::NAN; FEATURES]), Err(Error::NonFinite(_))));
    assert!(matches!(again.add_sample("c0", &[0.5; FEATURES + 1]), Err(Error::Shape { .. })));
    assert_eq!(snapshot(&again), before);
    assert_eq!(again.replay(), l.replay());

    // A board whose replay budget is smaller than the stored buffer refuses the state, and changes nothing.
    let mut small = learner(FisherFormat::F16, replay_budget(9), 8).with_store(&dir).unwrap();
    let before = snapshot(&small);
    let e = small.load().unwrap_err();
    assert!(matches!(e, Error::OverBudget { budget: "replay", needed: 520, limit: 468 }), "{e}");
    assert_eq!(snapshot(&small), before);
    assert!(small.replay().is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_version_2_state_file_loads_with_an_empty_replay_buffer() {
    let dir = tmp("replay-v2");
    let mut l = learner(FisherFormat::F16, replay_budget(10), 8).with_store(&dir).unwrap();
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    l.commit().unwrap();
    // The version 2 layout by hand: the current payload of the same state without its (empty) replay buffer and
    // its SLDA statistics and fleet record (none), which postcard writes as the last six bytes 00 00 00 00 00 00.
    let mut state = l.state().unwrap();
    state.generation = 1;
    state.replay = ReplayState::default();
    assert!(state.slda.is_none() && state.fleet.is_none());
    let payload = postcard::to_allocvec(&state).unwrap();
    assert_eq!(payload[payload.len() - 6..], [0, 0, 0, 0, 0, 0]);
    let payload = &payload[..payload.len() - 6];
    let mut v2 = Vec::new();
    v2.extend_from_slice(b"ELST");
    v2.extend_from_slice(&2u16.to_le_bytes());
    v2.extend_from_slice(&0u16.to_le_bytes());
    v2.extend_from_slice(&1u64.to_le_bytes());
    v2.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v2.extend_from_slice(payload);
    let crc = CRC32C.checksum(&v2);
    v2.extend_from_slice(&crc.to_le_bytes());
    std::fs::remove_file(dir.join("state.b")).ok();
    std::fs::write(dir.join("state.a"), &v2).unwrap();

    let mut again = learner(FisherFormat::F16, replay_budget(10), 8).with_store(&dir).unwrap();
    assert_eq!(again.load().unwrap(), Some(1));
    assert!(again.replay().is_empty());
    assert_eq!(again.replay().capacity(), 10);
    assert_eq!(again.state().unwrap().params, l.state().unwrap().params);
    assert_eq!(again.tasks(), l.tasks());
    // It goes on learning and storing samples, and commits as the current version.
    feed(&mut again, &[2], 10, 3);
    again.learn().unwrap();
    assert_eq!(again.replay().class_counts(), vec![(2, 10)]);
    assert_eq!(again.commit().unwrap(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

/// A learner on an MLP 12-16 with BECAME and the class-incremental options `tokens` (F16 Fisher, no budget), its
/// state stored in `dir`: the same one each call, as a board after a restart.
fn stored_class_il(tokens: &[&str], dir: &std::path::Path) -> Dev {
    let (ci, lt) = crate::method::class_il::ClassIl::parse_tokens(tokens.iter().copied()).unwrap();
    let model = zoo::mlp(FEATURES, &[16], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let method = became(FisherFormat::F16).with_class_il(ci, lt);
    Learner::new(profile(8, FisherFormat::F16, Budgets::UNLIMITED), "mlp", model, method, &["c0"], 5)
        .unwrap()
        .with_store(dir)
        .unwrap()
}

#[test]
fn random_features_survive_a_restart_and_go_on_learning() {
    let dir = tmp("rp");
    let make = || stored_class_il(&["lt", "slda", "rp48"], &dir);
    let mut l = make();
    // Before the first task the footprint already counts the expanded head (16 -> 48 features) and the SLDA Σ.
    assert!(l.footprint().unwrap().fisher >= 8 * 48 * 48, "{:?}", l.footprint().unwrap());
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    assert_eq!(crate::method::random_features_width(l.model()), Some(48));
    assert_eq!(l.model().heads[0].in_features(), 48);
    l.commit().unwrap();
    let acc = accuracy(&mut l, &[0, 1], 9);
    assert!(acc > 0.9, "accuracy {acc}");

    // A restart rebuilds the expansion from its widths: the same state, the same answers.
    let mut again = make();
    assert_eq!(again.load().unwrap(), Some(1));
    assert_eq!(again.state().unwrap(), l.state().unwrap());
    assert_eq!(accuracy(&mut again, &[0, 1], 9), acc);
    feed(&mut again, &[2], 20, 2);
    again.learn().unwrap();
    assert_eq!(again.model().head_outputs(0).unwrap(), 3);
    assert!(accuracy(&mut again, &[0, 1, 2], 10) > 0.8);
    std::fs::remove_dir_all(&dir).ok();
}

/// `+id` (the input beside the trunk): the footprint counts the widened model before the first task, the first
/// task widens it (16 hidden + 12 inputs before the head), and a restart rebuilds the widening from the stored
/// shapes: the same state, the same answers, and learning goes on.
#[test]
fn the_identity_skip_survives_a_restart_and_goes_on_learning() {
    let dir = tmp("id");
    let make = || stored_class_il(&["lt", "slda", "oas", "id"], &dir);
    let mut l = make();
    let plain = l.footprint().unwrap();
    assert!(plain.fisher >= 8 * 28 * 28, "Σ over the 28 widened features counted before: {plain:?}");
    feed(&mut l, &[0, 1], 20, 1);
    l.learn().unwrap();
    assert_eq!(l.model().heads[0].in_features(), 16 + FEATURES);
    l.commit().unwrap();
    let acc = accuracy(&mut l, &[0, 1], 9);
    assert!(acc > 0.9, "accuracy {acc}");
    let mut again = make();
    assert_eq!(again.load().unwrap(), Some(1));
    assert_eq!(again.state().unwrap(), l.state().unwrap());
    assert_eq!(accuracy(&mut again, &[0, 1], 9), acc);
    feed(&mut again, &[2], 20, 2);
    again.learn().unwrap();
    assert_eq!(again.model().heads[0].in_features(), 16 + FEATURES, "widened once");
    assert!(accuracy(&mut again, &[0, 1, 2], 10) > 0.8);
    std::fs::remove_dir_all(&dir).ok();
}

/// A method that trains nothing (`+ft`, the fleet's) gets every buffered sample: none is held out for a
/// validation split it would not use, so its statistics count all of them (the fleet's pool counts every sample a
/// board learned).
#[test]
fn a_method_that_trains_nothing_gets_every_sample() {
    let (ci, lt) = crate::method::class_il::ClassIl::parse_tokens(["lt", "slda", "ft"]).unwrap();
    let model = zoo::mlp(FEATURES, &[16], &[1], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
    let method = became(FisherFormat::F32).with_class_il(ci, lt);
    let mut l: Dev =
        Learner::new(profile(8, FisherFormat::F32, Budgets::UNLIMITED), "mlp", model, method, &["c0"], 5).unwrap();
    feed(&mut l, &[0, 1, 2], 7, 1);
    assert!(l.buffer().len() >= VAL_EVERY);
    l.learn().unwrap();
    let slda = l.state().unwrap().slda.unwrap();
    assert_eq!(slda.counts.iter().sum::<u64>(), 21, "every sample in the statistics");
    assert_eq!(slda.updates, 21);
}

/// A task refused by any budget changes nothing (parameters, bases, Fisher, registries); the same task with room
/// is then learned. Task-incremental (two heads), the learner's one budget check.
#[test]
fn a_refused_task_changes_nothing() {
    let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
    let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: false };
    let model = zoo::mlp(6, &[8], &[2, 2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
    let method = Became::new(cfg, gcfg).with_fisher_format(FisherFormat::Block4);
    let p = profile(8, FisherFormat::Block4, Budgets::UNLIMITED);
    let mut l: Learner<Became, 1> = Learner::new(p, "mlp", model, method, &[], 5).unwrap();
    let (tr1, va1) = edgelearn_core::test_util::tiny_task(1, 0, 48);
    let (tr2, va2) = edgelearn_core::test_util::tiny_task(2, 3, 48);
    let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
    let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
    l.learn_task(&t1, &mut Silent).unwrap();

    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let snapshot = |l: &Learner<Became, 1>| {
        let b = l.method();
        let gpm = b.gpm.as_ref().unwrap();
        (
            bits(&l.model().flat_params()),
            gpm.bases.iter().map(|a| bits(a.as_slice().unwrap())).collect::<Vec<_>>(),
            bits(&b.f_old),
            b.f_old_stored().cloned(),
            b.tasks_seen(),
            l.tasks().len(),
        )
    };
    let before = snapshot(&l);
    let fp = l.footprint_with(tr2.len()).unwrap();
    for budget in ["params", "fisher", "workspace", "state_file"] {
        let mut tight = Budgets::UNLIMITED;
        match budget {
            "params" => tight.params = fp.params - 1,
            "fisher" => tight.fisher = fp.fisher - 1,
            "workspace" => tight.workspace = fp.workspace - 1,
            _ => tight.state_file = fp.state_file - 1,
        }
        l.profile.budget = tight;
        let e = l.learn_task(&t2, &mut Silent).unwrap_err();
        assert!(
            matches!(e, Error::OverBudget { budget: b, needed, limit } if b == budget && needed == limit + 1),
            "{budget}: {e}"
        );
        assert_eq!(snapshot(&l), before, "a step refused by the {budget} budget changed state");
    }
    l.profile.budget = Budgets::UNLIMITED;
    let r = l.learn_task(&t2, &mut Silent).unwrap();
    assert!(r.alpha.is_some());
    assert_ne!(snapshot(&l).0, before.0);
    assert_eq!(l.tasks()[1].head, 1);
}
