use super::*;
use edgelearn_core::nn::{Mode, zoo};
use ndarray::Array2;

fn shape_lookup(model: &Model) -> impl Fn(&str) -> Option<Vec<u32>> + '_ {
    |name| {
        model.params().into_iter().find(|p| p.name == name).map(|p| p.value.shape().iter().map(|&d| d as u32).collect())
    }
}

/// Two hidden layers: the widened model computes the same logits on a non-negative input, the head reads the
/// input beside the last hidden layer, and the stored shapes tell a widened model from the plain one.
#[test]
fn widening_keeps_the_function_and_carries_the_input() {
    let plain = zoo::mlp(6, &[5, 4], &[3], true, &mut edgelearn_core::seeded_rng(2)).unwrap();
    let x = Array2::from_shape_fn((7, 6), |(i, j)| ((i * 7 + j * 3) % 5) as f32 * 0.4);
    let mut before = plain.clone();
    let want = before.forward(&x.view(), 0, Mode::Eval).unwrap();
    let mut wide = plain.clone();
    ensure_identity_skip(&mut wide).unwrap();
    assert_eq!(wide.heads[0].in_features(), 6 + 4);
    let got = wide.forward(&x.view(), 0, Mode::Eval).unwrap();
    assert!((&got - &want).iter().all(|d| d.abs() < 1e-5), "{got:?} vs {want:?}");
    // The head's new columns see x itself: a head reading only them returns x's first values.
    let mut probe = wide.clone();
    let mut w = Array2::<f32>::zeros((3, 10));
    for c in 0..3 {
        w[[c, c]] = 1.0;
    }
    probe.heads[0] = Linear::from_weights("head.0", w, Some(Array1::zeros(3))).unwrap();
    let seen = probe.forward(&x.view(), 0, Mode::Eval).unwrap();
    assert_eq!(seen, x.slice(s![.., ..3]));
    assert!(identity_skip_of(&plain, shape_lookup(&wide)));
    assert!(!identity_skip_of(&plain, shape_lookup(&plain)));
}

/// A negative input value reaches the head as 0 (the ReLU after the widened Linear).
#[test]
fn a_negative_input_reaches_the_head_as_zero() {
    let mut m = zoo::mlp(2, &[3], &[2], true, &mut edgelearn_core::seeded_rng(5)).unwrap();
    ensure_identity_skip(&mut m).unwrap();
    let mut w = Array2::<f32>::zeros((2, 5));
    w[[0, 0]] = 1.0;
    w[[1, 1]] = 1.0;
    m.heads[0] = Linear::from_weights("head.0", w, None).unwrap();
    let out = m.forward(&ndarray::array![[-1.5f32, 2.0]].view(), 0, Mode::Eval).unwrap();
    assert_eq!(out, ndarray::array![[0.0f32, 2.0]]);
}

/// A CNN carries its flattened convolutional features (non-negative after ReLU and pooling) beside its fully
/// connected layers: the same logits, the head wider by the features' width.
#[test]
fn a_cnn_carries_its_convolutional_features() {
    let plain = zoo::cnn([1, 16, 16], 4, &[2], &mut edgelearn_core::seeded_rng(1)).unwrap();
    let Some((_, lin)) = first_linear(&plain) else { panic!("no Linear") };
    let (d, h) = (lin.in_features(), lin.out_features());
    let x = Array2::from_shape_fn((3, 256), |(i, j)| ((i + j) % 7) as f32 * 0.3 - 0.5);
    let mut wide = plain.clone();
    ensure_identity_skip(&mut wide).unwrap();
    assert_eq!(wide.heads[0].in_features(), d + h);
    let (a, b) =
        (plain.clone().forward(&x.view(), 0, Mode::Eval).unwrap(), wide.forward(&x.view(), 0, Mode::Eval).unwrap());
    assert!((&a - &b).iter().all(|v| v.abs() < 1e-5));
}

/// A trunk whose fully connected part is not a Linear + ReLU chain is refused unchanged; one without a Linear is
/// left as it is.
#[test]
fn what_cannot_be_carried_is_refused_and_nothing_changes() {
    let mut rng = edgelearn_core::seeded_rng(4);
    let head = Linear::new("head.0", 3, 2, true, &mut rng);
    let mut no_relu =
        Model::new(vec![4], vec![Layer::Linear(Linear::new("t", 4, 3, true, &mut rng))], vec![head.clone()]).unwrap();
    let before = no_relu.flat_params();
    assert!(matches!(ensure_identity_skip(&mut no_relu), Err(Error::Config(_))));
    assert_eq!(no_relu.flat_params(), before);
    let mut bare = Model::new(vec![3], Vec::new(), vec![head]).unwrap();
    ensure_identity_skip(&mut bare).unwrap();
    assert_eq!(bare.heads[0].in_features(), 3);
}
