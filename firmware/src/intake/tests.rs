use super::*;

use crate::budget::BoardProfile;
use crate::method::Became;
use crate::nn::zoo;
use crate::train::TrainConfig;
use ndarray::Array2;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const SHAPE: ImageShape = ImageShape { channels: 1, height: 6, width: 6, channels_last: false };

type Dev = Learner<Became, 64>;

fn setup(policy: AugmentPolicy) -> (Dev, DeviceModel, AugmentPolicy) {
    let profile = BoardProfile::load(format!("{ROOT}/boards/host-sim.toml")).unwrap();
    let model = zoo::mlp(SHAPE.len(), &[8], &[1], true, &mut crate::seeded_rng(1)).unwrap();
    let base = DeviceModel::new(None, model.clone()).unwrap();
    let cfg = TrainConfig { epochs: 1, batch_size: 8, lr: 0.05, ..TrainConfig::default() };
    let gcfg =
        crate::gpm::GpmConfig { thresholds: vec![0.95], threshold_increment: 0.0, samples: 50, project_heads: true };
    let method = Became::new(cfg, gcfg);
    let learner = Learner::new(profile, "mlp-36-8", model, method, &["a"], 3).unwrap();
    (learner, base, policy)
}

/// Photos with a bright square whose place depends on the photo's index.
fn photos(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, SHAPE.len()), |(i, j)| {
        let (y, x) = (j / 6, j % 6);
        if (1..4).contains(&(y + i % 2)) && (1..4).contains(&(x + i % 3)) { 1.0 } else { 0.1 }
    })
}

#[test]
fn photos_bring_their_copies_and_the_ledger_counts_photos() {
    // Two photos of "b" get ⌈8/2⌉ − 1 = 3 copies each (capped at 3), the one of "a" min(⌈8/1⌉ − 1, 3) = 3.
    let (mut l, base, policy) = setup(AugmentPolicy { samples_per_class: 8, max_variants: 3 });
    let mut rng = crate::seeded_rng(9);
    let x = photos(3);
    let used = take_photos(&mut l, &base, x.view(), &["b", "a", "b"], SHAPE, &policy, &mut rng, |_, e| Err(e)).unwrap();
    assert_eq!(used, vec![0, 1, 2]);
    assert_eq!(l.buffer().len(), 3 * 4);
    // The photo's own row comes first and is the photo itself (no prefix: features = input).
    let all = l.buffer().all().unwrap();
    assert_eq!(all.x.row(0), x.row(0));
    assert_ne!(all.x.row(1), x.row(0), "a copy is jittered");
    assert_eq!(l.class_id("b").unwrap(), all.y[0] as u32);
    l.learn().unwrap();
    assert_eq!(l.inbox_ledger().samples_learned, 3, "copies are learned, not counted as samples learned");
    assert_eq!(l.buffer().len(), 0);
}

#[test]
fn a_refused_photo_goes_to_the_callback_and_the_rest_are_taken() {
    let (mut l, base, _) = setup(AugmentPolicy::OFF);
    let mut rng = crate::seeded_rng(9);
    let mut refused = Vec::new();
    let used = take_photos(
        &mut l,
        &base,
        photos(3).view(),
        &["a", "bad\nname", "c"],
        SHAPE,
        &AugmentPolicy::OFF,
        &mut rng,
        |i, e| {
            refused.push((i, matches!(e, Error::Config(_))));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((used, refused), (vec![0, 2], vec![(1, true)]));
    assert_eq!(l.buffer().len(), 2);
    // A callback that errs stops the intake with its error.
    let stopped =
        take_photos(&mut l, &base, photos(1).view(), &[""], SHAPE, &AugmentPolicy::OFF, &mut rng, |_, e| Err(e));
    assert!(matches!(stopped, Err(Error::Config(_))), "{stopped:?}");
}

#[test]
fn names_must_match_the_photos() {
    let (mut l, base, policy) = setup(AugmentPolicy::OFF);
    let mut rng = crate::seeded_rng(9);
    let r = take_photos(&mut l, &base, photos(2).view(), &["a"], SHAPE, &policy, &mut rng, |_, e| Err(e));
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    assert_eq!(l.buffer().len(), 0);
}
