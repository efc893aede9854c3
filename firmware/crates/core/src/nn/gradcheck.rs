//! Finite-difference gradient checks for every layer, the loss and whole models, plus forward references,
//! shape, determinism and error-path tests of the conv-net layers.
//!
//! Scheme: for a layer `f`, a fixed random `r` and the scalar `L = Σ r ⊙ f(x)` (summed in f64), the analytic
//! input and parameter gradients from `backward(r)` are compared with central differences
//! `(L(θ+ε) − L(θ−ε)) / 2ε`, `ε = 1e-2`, element by element with `|a − n| ≤ 1e-2·|n| + 1e-3·max|n|`.
//! Kinks are avoided by construction (ReLU inputs at least 0.1 away from 0, max-pool inputs with gaps of 0.05
//! between all values); through whole models, coordinates whose perturbation flips a ReLU sign or a max-pool
//! argmax are detected and skipped (and must be rare). `tolerance_rejects_wrong_gradients` shows that the
//! tolerance is tight enough to fail a slightly wrong backward.

use std::sync::Arc;

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, Axis, IxDyn, s};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::ops::{self, Window2d};
use super::*;
use crate::seeded_rng;

const EPS: f32 = 1e-2;
const RTOL: f32 = 1e-2;
const ATOL_REL: f32 = 1e-3;

// ---------------------------------------------------------------------------------------------------------------
// helpers

fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut ChaCha8Rng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(lo..hi))
}

/// Values with `0.1 ≤ |v| ≤ 1` and random sign: no ReLU kink within ±ε.
fn away_from_zero(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        let m = rng.random_range(0.1f32..1.0);
        if rng.random::<bool>() { m } else { -m }
    })
}

/// All values distinct with gaps of 0.05 (≫ 2ε): no max-pool tie can be crossed by a perturbation.
fn distinct(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.05).collect();
    v.shuffle(rng);
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn dot64(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

fn flat(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Central differences of `f(i, δ)` (the loss with coordinate `i` moved by `δ`) for `i` in `coords`.
fn numeric(coords: &[usize], eps: f32, mut f: impl FnMut(usize, f32) -> f64) -> Vec<f32> {
    coords.iter().map(|&i| ((f(i, eps) - f(i, -eps)) / (2.0 * f64::from(eps))) as f32).collect()
}

/// Mismatches between analytic and numeric gradients, as messages (empty = pass).
fn mismatches(what: &str, analytic: &[f32], numeric: &[f32]) -> Vec<String> {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    let scale = numeric.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    let within = |a: f32, n: f32| (a - n).abs() <= RTOL * n.abs() + ATOL_REL * scale; // false for NaN
    analytic
        .iter()
        .zip(numeric)
        .enumerate()
        .filter(|(_, (a, n))| !within(**a, **n))
        .map(|(i, (a, n))| format!("{what}[{i}]: analytic {a}, numeric {n}"))
        .collect()
}

fn assert_close(what: &str, analytic: &[f32], numeric: &[f32]) {
    let bad = mismatches(what, analytic, numeric);
    assert!(bad.is_empty(), "{} mismatches, first: {:?}", bad.len(), &bad[..bad.len().min(5)]);
}

fn set_flat(a: &mut ArrayD<f32>, i: usize, delta: f32) {
    *a.iter_mut().nth(i).unwrap() += delta;
}

/// Gradient check of one layer: `L = Σ r ⊙ layer(x)`; input gradient and every parameter gradient.
/// Each evaluation runs on a clone of `layer`, so a dropout mask is the same in every evaluation.
fn check_layer(name: &str, layer: &Layer, x: &ArrayD<f32>, mode: Mode, rng: &mut ChaCha8Rng) {
    let mut l = layer.clone();
    for p in l.params_mut() {
        p.zero_grad();
    }
    let y = l.forward(x.clone(), mode).unwrap();
    let r = uniform(y.shape(), -1.0, 1.0, rng);
    let dx = l.backward(r.clone()).unwrap();
    assert_eq!(dx.shape(), x.shape(), "{name}: dx shape");
    let loss = |layer: &Layer, x: &ArrayD<f32>| {
        let mut c = layer.clone();
        dot64(&c.forward(x.clone(), mode).unwrap(), &r)
    };
    let all: Vec<usize> = (0..x.len()).collect();
    let num_dx = numeric(&all, EPS, |i, d| {
        let mut xp = x.clone();
        set_flat(&mut xp, i, d);
        loss(layer, &xp)
    });
    assert_close(&format!("{name} dx"), &flat(&dx), &num_dx);
    for (pi, p) in l.params().iter().enumerate() {
        let all: Vec<usize> = (0..p.len()).collect();
        let num = numeric(&all, EPS, |i, d| {
            let mut c = layer.clone();
            set_flat(&mut c.params_mut()[pi].value, i, d);
            loss(&c, x)
        });
        assert_close(&format!("{name} {}", p.name), &flat(&p.grad), &num);
    }
}

/// Mean cross-entropy in f64 (the finite-difference reference should not be limited by f32 rounding of the loss).
fn ce64(logits: &ArrayView2<'_, f32>, labels: &[usize]) -> f64 {
    let mut total = 0.0;
    for (row, &y) in logits.axis_iter(Axis(0)).zip(labels) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
        let lse = row.iter().map(|&v| (f64::from(v) - m).exp()).sum::<f64>().ln() + m;
        total += lse - f64::from(row[y]);
    }
    total / labels.len() as f64
}

/// Every ReLU sign and max-pool argmax along the trunk: if a perturbation changes it, a kink was crossed.
fn kink_pattern(model: &Model, x: &Array2<f32>) -> Vec<bool> {
    let mut m = model.clone();
    let mut h = batch_tensor(&x.view(), &m.input_shape).unwrap();
    let mut pattern = Vec::new();
    for layer in &mut m.trunk {
        match layer {
            Layer::Relu(_) => pattern.extend(h.iter().map(|&v| v > 0.0)),
            Layer::MaxPool2d(p) => {
                let mut q = p.clone();
                let y = q.forward(h.clone()).unwrap();
                let d = q.backward(ArrayD::ones(y.raw_dim())).unwrap();
                pattern.extend(d.iter().map(|&v| v > 0.0));
            }
            _ => {}
        }
        h = layer.forward(h, Mode::Train).unwrap();
    }
    pattern
}

/// Gradient check of `Model::loss_and_grad` over the parameter coordinates `coords` (all when `None`).
///
/// Per coordinate, the largest step `ε ∈ {5e-3, 2e-3, 1e-3, 5e-4}` whose `±ε` perturbations cross no kink (same
/// [`kink_pattern`] as the unperturbed model) is used; coordinates that cross a kink at every step are skipped, at
/// most a fraction `max_skipped` of them. Returns the coordinates that were checked.
fn check_model(
    name: &str,
    model: &Model,
    x: &Array2<f32>,
    labels: &[usize],
    head: usize,
    coords: Option<Vec<usize>>,
    max_skipped: f32,
) -> Vec<usize> {
    let mut m = model.clone();
    m.zero_grad();
    m.loss_and_grad(&x.view(), labels, head).unwrap();
    let analytic = m.flat_grads();
    let base = model.flat_params();
    let base_pattern = kink_pattern(model, x);
    let coords = coords.unwrap_or_else(|| (0..base.len()).collect());
    let eval = |i: usize, d: f32| {
        let mut c = model.clone();
        let mut p = base.clone();
        p[i] += d;
        c.set_flat_params(&p).unwrap();
        let logits = c.forward(&x.view(), head, Mode::Train).unwrap();
        (ce64(&logits.view(), labels), kink_pattern(&c, x) == base_pattern)
    };
    let (mut a, mut n, mut checked) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &coords {
        let found = [5e-3f32, 2e-3, 1e-3, 5e-4].into_iter().find_map(|eps| {
            let ((lp, okp), (lm, okm)) = (eval(i, eps), eval(i, -eps));
            (okp && okm).then(|| ((lp - lm) / (2.0 * f64::from(eps))) as f32)
        });
        if let Some(num) = found {
            a.push(analytic[i]);
            n.push(num);
            checked.push(i);
        }
    }
    let skipped = coords.len() - checked.len();
    assert!(
        skipped as f32 <= max_skipped * coords.len() as f32,
        "{name}: {skipped} of {} coordinates cross a kink",
        coords.len()
    );
    assert!(n.iter().any(|v| v.abs() > 1e-3), "{name}: gradients vanish, the check would be vacuous");
    assert_close(name, &a, &n);
    checked
}

// ---------------------------------------------------------------------------------------------------------------
// per-layer gradient checks

#[test]
fn tolerance_rejects_wrong_gradients() {
    let mut rng = seeded_rng(1);
    let n: Vec<f32> = (0..50).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    assert!(mismatches("same", &n, &n).is_empty());
    for (i, f) in [(3usize, 1.05f32), (10, 0.95), (20, -1.0)] {
        let mut a = n.clone();
        a[i] *= f;
        if n[i].abs() > 0.2 {
            assert!(!mismatches("wrong", &a, &n).is_empty(), "a {f}× error at {i} must be caught");
        }
    }
    // A batch norm backward that forgets the gradient through the batch statistics must fail the check.
    let mut rng = seeded_rng(2);
    let x = uniform(&[6, 3], -1.0, 1.0, &mut rng);
    let r = uniform(&[6, 3], -1.0, 1.0, &mut rng);
    let mut bn = BatchNorm::new("bn", 3);
    bn.forward(x.clone()).unwrap();
    let dx = bn.backward(r.clone()).unwrap();
    let mut naive = r.clone(); // γ/σ · g, the "constant statistics" gradient
    let var = x.var_axis(Axis(0), 0.0);
    for mut row in naive.axis_iter_mut(Axis(0)) {
        for (j, v) in row.iter_mut().enumerate() {
            *v /= (var[j] + BATCH_NORM_EPS).sqrt();
        }
    }
    assert!(!mismatches("naive bn", &flat(&naive), &flat(&dx)).is_empty());
}

#[test]
fn linear_with_and_without_bias() {
    let mut rng = seeded_rng(10);
    for bias in [true, false] {
        let l = Layer::Linear(Linear::new("fc", 5, 4, bias, &mut rng));
        let x = uniform(&[3, 5], -1.0, 1.0, &mut rng);
        check_layer(&format!("linear bias={bias}"), &l, &x, Mode::Train, &mut rng);
    }
}

#[test]
fn relu() {
    let mut rng = seeded_rng(11);
    let x = away_from_zero(&[4, 7], &mut rng);
    check_layer("relu", &Layer::Relu(Relu::default()), &x, Mode::Train, &mut rng);
    let x4 = away_from_zero(&[2, 2, 3, 3], &mut rng);
    check_layer("relu 4-D", &Layer::Relu(Relu::default()), &x4, Mode::Eval, &mut rng);
}

#[test]
fn conv2d_stride_padding_bias() {
    let mut rng = seeded_rng(12);
    // (stride, padding, bias, kernel): square and non-square kernels, odd sizes so floors matter.
    for (stride, padding, bias) in [(1, 0, true), (2, 1, true), (1, 2, false), (3, 1, true)] {
        let c = Conv2d::new("conv", 3, 4, 3, stride, padding, bias, &mut rng).unwrap();
        let x = uniform(&[2, 3, 7, 6], -1.0, 1.0, &mut rng);
        check_layer(&format!("conv s{stride} p{padding} b{bias}"), &Layer::Conv2d(c), &x, Mode::Train, &mut rng);
    }
    let w = uniform(&[2, 2, 3, 2], -0.5, 0.5, &mut rng).into_dimensionality().unwrap();
    let b = Array1::from_vec(vec![0.3, -0.2]);
    let c = Conv2d::from_weights("conv", w, Some(b), 2, 1).unwrap();
    let x = uniform(&[3, 2, 5, 6], -1.0, 1.0, &mut rng);
    check_layer("conv 3x2 kernel", &Layer::Conv2d(c), &x, Mode::Train, &mut rng);
}

#[test]
fn maxpool2d() {
    let mut rng = seeded_rng(13);
    for (k, s, h, w) in [(2, 2, 6, 6), (2, 2, 5, 7), (3, 2, 7, 8), (3, 1, 5, 5)] {
        let p = MaxPool2d::new(k, s).unwrap();
        let x = distinct(&[2, 3, h, w], &mut rng);
        check_layer(&format!("maxpool k{k} s{s} {h}x{w}"), &Layer::MaxPool2d(p), &x, Mode::Train, &mut rng);
    }
}

fn random_affine_bn(features: usize, rng: &mut ChaCha8Rng) -> BatchNorm {
    let g = Array1::from_shape_fn(features, |_| rng.random_range(0.5f32..1.5));
    let b = Array1::from_shape_fn(features, |_| rng.random_range(-0.5f32..0.5));
    BatchNorm::from_weights("bn", g, b).unwrap()
}

#[test]
fn batchnorm_2d_and_4d() {
    let mut rng = seeded_rng(14);
    let bn = random_affine_bn(3, &mut rng);
    let x = uniform(&[5, 3], -2.0, 2.0, &mut rng);
    check_layer("bn 2-D", &Layer::BatchNorm(bn), &x, Mode::Train, &mut rng);
    let bn = random_affine_bn(2, &mut rng);
    let x = uniform(&[3, 2, 3, 4], -1.0, 3.0, &mut rng);
    check_layer("bn 4-D", &Layer::BatchNorm(bn.clone()), &x, Mode::Train, &mut rng);
    // Eval mode uses the same batch statistics.
    check_layer("bn 4-D eval", &Layer::BatchNorm(bn), &x, Mode::Eval, &mut rng);
    // Two values per channel is the smallest legal batch.
    let x = uniform(&[2, 4], -1.0, 1.0, &mut rng);
    check_layer("bn N=2", &Layer::BatchNorm(BatchNorm::new("bn", 4)), &x, Mode::Train, &mut rng);
}

#[test]
fn dropout_train_with_fixed_mask() {
    let mut rng = seeded_rng(15);
    let d = Dropout::new(0.4, 99).unwrap();
    let x = uniform(&[6, 10], -1.0, 1.0, &mut rng);
    check_layer("dropout train", &Layer::Dropout(d.clone()), &x, Mode::Train, &mut rng);
    check_layer("dropout eval", &Layer::Dropout(d.clone()), &x, Mode::Eval, &mut rng);
    let x4 = uniform(&[2, 3, 4, 4], -1.0, 1.0, &mut rng);
    check_layer("dropout 4-D", &Layer::Dropout(d), &x4, Mode::Train, &mut rng);
}

#[test]
fn flatten() {
    let mut rng = seeded_rng(16);
    let x = uniform(&[3, 2, 3, 4], -1.0, 1.0, &mut rng);
    check_layer("flatten", &Layer::Flatten(Flatten::default()), &x, Mode::Train, &mut rng);
}

#[test]
fn softmax_cross_entropy_gradient() {
    let mut rng = seeded_rng(17);
    let z = uniform(&[4, 5], -2.0, 2.0, &mut rng).into_dimensionality::<ndarray::Ix2>().unwrap();
    let labels = [0, 3, 4, 3];
    let (loss, grad) = softmax_cross_entropy(&z.view(), &labels).unwrap();
    assert!((f64::from(loss) - ce64(&z.view(), &labels)).abs() < 1e-5);
    let all: Vec<usize> = (0..z.len()).collect();
    let num = numeric(&all, EPS, |i, d| {
        let mut zp = z.clone();
        *zp.iter_mut().nth(i).unwrap() += d;
        f64::from(softmax_cross_entropy(&zp.view(), &labels).unwrap().0)
    });
    assert_close("softmax cross-entropy", &grad.iter().copied().collect::<Vec<_>>(), &num);
}

// ---------------------------------------------------------------------------------------------------------------
// whole-model gradient checks

fn labels(n: usize, classes: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..classes)).collect()
}

fn flat_batch(n: usize, len: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    Array2::from_shape_fn((n, len), |_| rng.random_range(-1.0f32..1.0))
}

#[test]
fn model_mlp() {
    let mut rng = seeded_rng(20);
    for bias in [true, false] {
        let model = zoo::mlp(6, &[7, 5], &[3, 4], bias, &mut rng).unwrap();
        let x = flat_batch(5, 6, &mut rng);
        for head in 0..2 {
            let y = labels(5, model.head_outputs(head).unwrap(), &mut rng);
            check_model(&format!("mlp bias={bias} head {head}"), &model, &x, &y, head, None, 0.05);
        }
    }
}

/// A LeNet-shaped network with tiny sizes and every layer kind (conv with stride/padding/bias, 4-D and 2-D
/// batch norm, max-pool, dropout, flatten, linear, multi-head).
fn tiny_lenet(rng: &mut ChaCha8Rng) -> Model {
    let trunk = vec![
        Layer::Conv2d(Conv2d::new("c", 2, 3, 3, 1, 1, true, rng).unwrap()),
        Layer::BatchNorm(BatchNorm::new("bn", 3)),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2).unwrap()),
        Layer::Conv2d(Conv2d::new("c", 3, 4, 3, 1, 0, false, rng).unwrap()),
        Layer::BatchNorm(BatchNorm::new("bn", 4)),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2).unwrap()),
        Layer::Flatten(Flatten::default()),
        Layer::Linear(Linear::new("fc", 4, 6, false, rng)),
        Layer::BatchNorm(BatchNorm::new("bn", 6)),
        Layer::Relu(Relu::default()),
        Layer::Dropout(Dropout::new(0.25, 5).unwrap()),
    ];
    let heads = vec![Linear::new("h", 6, 3, false, rng), Linear::new("h", 6, 2, true, rng)];
    Model::new(vec![2, 8, 8], trunk, heads).unwrap()
}

#[test]
fn model_lenet_like_tiny() {
    let mut rng = seeded_rng(21);
    let model = tiny_lenet(&mut rng);
    let names: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names[..3], ["trunk.0.weight", "trunk.0.bias", "trunk.1.weight"]);
    let x = flat_batch(6, 2 * 8 * 8, &mut rng);
    for head in 0..2 {
        let y = labels(6, model.head_outputs(head).unwrap(), &mut rng);
        check_model(&format!("tiny lenet head {head}"), &model, &x, &y, head, None, 0.05);
    }
}

#[test]
fn model_zoo_lenet_sampled() {
    let mut rng = seeded_rng(22);
    let model = zoo::lenet([1, 16, 16], 8, &[3], &mut rng).unwrap();
    let x = flat_batch(2, 256, &mut rng);
    let y = labels(2, 3, &mut rng);
    // Every parameter tensor, a few coordinates each.
    let mut coords = Vec::new();
    for info in model.param_infos() {
        let len: usize = info.shape.iter().product();
        for _ in 0..16 {
            coords.push(info.offset + rng.random_range(0..len));
        }
    }
    coords.sort_unstable();
    coords.dedup();
    // Thousands of ReLU units and pooling windows: more coordinates sit near a kink than in the tiny model, but
    // every parameter tensor must still be checked at several coordinates.
    let checked = check_model("zoo lenet 16x16", &model, &x, &y, 0, Some(coords), 0.3);
    for info in model.param_infos() {
        let len: usize = info.shape.iter().product();
        let n = checked.iter().filter(|&&i| (info.offset..info.offset + len).contains(&i)).count();
        assert!(n >= 5, "{}: only {n} coordinates checked", info.name);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// forward references

/// Direct-loop convolution reference.
fn conv_reference(x: &Array4<f32>, w: &Array4<f32>, b: Option<&Array1<f32>>, stride: usize, pad: usize) -> Array4<f32> {
    let (n, c, h, wd) = x.dim();
    let (o, _, kh, kw) = w.dim();
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (wd + 2 * pad - kw) / stride + 1;
    Array4::from_shape_fn((n, o, oh, ow), |(bi, oc, oy, ox)| {
        let mut acc = b.map_or(0.0, |b| f64::from(b[oc]));
        for ci in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    let ix = (ox * stride + kx) as isize - pad as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        acc += f64::from(x[[bi, ci, iy as usize, ix as usize]]) * f64::from(w[[oc, ci, ky, kx]]);
                    }
                }
            }
        }
        acc as f32
    })
}

#[test]
fn conv2d_forward_matches_direct_convolution() {
    let mut rng = seeded_rng(30);
    for (stride, pad, kh, kw, bias) in
        [(1, 0, 3, 3, false), (2, 1, 3, 2, true), (1, 2, 5, 5, true), (3, 0, 2, 4, false)]
    {
        let w: Array4<f32> = uniform(&[4, 3, kh, kw], -1.0, 1.0, &mut rng).into_dimensionality().unwrap();
        let b = bias.then(|| Array1::from_shape_fn(4, |_| rng.random_range(-1.0f32..1.0)));
        let x: Array4<f32> = uniform(&[2, 3, 9, 8], -1.0, 1.0, &mut rng).into_dimensionality().unwrap();
        let mut conv = Conv2d::from_weights("c", w.clone(), b.clone(), stride, pad).unwrap();
        let y = conv.forward(x.clone().into_dyn()).unwrap();
        let r = conv_reference(&x, &w, b.as_ref(), stride, pad);
        assert_eq!(y.shape(), r.shape());
        let err = y.iter().zip(r.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-5, "conv s{stride} p{pad} {kh}x{kw}: max error {err}");
        // Also for a non-standard-layout input (a transposed view of the same values).
        let xt = x.clone().permuted_axes([0, 1, 3, 2]).as_standard_layout().into_owned().permuted_axes([0, 1, 3, 2]);
        assert!(!xt.is_standard_layout());
        assert_eq!(conv.clone().forward(xt.into_dyn()).unwrap(), y);
    }
}

#[test]
fn conv2d_patches_row_order_and_shape() {
    let mut rng = seeded_rng(31);
    let mut conv = Conv2d::new("c", 2, 3, 3, 2, 1, false, &mut rng).unwrap();
    let x: Array4<f32> = uniform(&[2, 2, 5, 6], -1.0, 1.0, &mut rng).into_dimensionality().unwrap();
    assert!(conv.cached_patches().is_none());
    let y = conv.forward(x.clone().into_dyn()).unwrap();
    let (oh, ow) = conv.output_size(5, 6).unwrap();
    assert_eq!((oh, ow), (3, 3));
    assert_eq!(y.shape(), [2, 3, oh, ow]);
    let p = conv.cached_patches().unwrap();
    assert_eq!(p.dim(), (2 * oh * ow, conv.patch_len()));
    let padded = {
        let mut a = Array4::<f32>::zeros((2, 2, 7, 8));
        a.slice_mut(s![.., .., 1..6, 1..7]).assign(&x);
        a
    };
    for b in 0..2 {
        for oy in 0..oh {
            for ox in 0..ow {
                let row = p.row((b * oh + oy) * ow + ox);
                for c in 0..2 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            assert_eq!(row[(c * 3 + ky) * 3 + kx], padded[[b, c, oy * 2 + ky, ox * 2 + kx]]);
                        }
                    }
                }
            }
        }
    }
    // y = patches · W_flatᵀ, row by row.
    let yw = p.dot(&conv.weight_matrix().unwrap().t());
    for b in 0..2 {
        for oc in 0..3 {
            for oy in 0..oh {
                for ox in 0..ow {
                    assert!((yw[[(b * oh + oy) * ow + ox, oc]] - y[[b, oc, oy, ox]]).abs() < 1e-6);
                }
            }
        }
    }
    conv.clear_cache();
    assert!(conv.cached_patches().is_none());
}

#[test]
fn im2col_col2im_are_adjoint() {
    let mut rng = seeded_rng(32);
    let win = Window2d { kh: 3, kw: 2, stride: 2, padding: 1 };
    let x: Array4<f32> = uniform(&[2, 3, 7, 5], -1.0, 1.0, &mut rng).into_dimensionality().unwrap();
    let p = ops::im2col(&x.view(), win).unwrap();
    let c = Array2::from_shape_fn(p.dim(), |_| rng.random_range(-1.0f32..1.0));
    let back = ops::col2im(&c.view(), x.dim(), win).unwrap();
    let lhs: f64 = p.iter().zip(c.iter()).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let rhs: f64 = x.iter().zip(back.iter()).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    assert!(ops::col2im(&c.slice(s![1.., ..]), x.dim(), win).is_err());
    assert_eq!(ops::window_out_len(5, 7, 1, 0), None);
    assert_eq!(ops::window_out_len(5, 7, 1, 1), Some(1));
    assert_eq!(ops::window_out_len(5, 2, 0, 0), None);
}

#[test]
fn conv2d_backward_accumulates() {
    let mut rng = seeded_rng(33);
    let mut conv = Conv2d::new("c", 2, 3, 3, 1, 1, true, &mut rng).unwrap();
    let x = uniform(&[2, 2, 4, 4], -1.0, 1.0, &mut rng);
    let y = conv.forward(x).unwrap();
    let g = uniform(y.shape(), -1.0, 1.0, &mut rng);
    let dx1 = conv.backward(g.clone()).unwrap();
    let once: Vec<ArrayD<f32>> = conv.params().iter().map(|p| p.grad.clone()).collect();
    let dx2 = conv.backward(g).unwrap();
    assert_eq!(dx1, dx2);
    for (p, o) in conv.params().iter().zip(&once) {
        assert!(p.grad.iter().zip(o.iter()).all(|(a, b)| (a - 2.0 * b).abs() < 1e-5));
    }
}

#[test]
fn conv2d_skip_input_grad_keeps_parameter_gradients() {
    let mut rng = seeded_rng(37);
    let mut full = Conv2d::new("c", 2, 3, 3, 2, 1, true, &mut rng).unwrap();
    let mut skip = full.clone();
    skip.skip_input_grad = true;
    let x = uniform(&[2, 2, 5, 5], -1.0, 1.0, &mut rng);
    let y = full.forward(x.clone()).unwrap();
    assert_eq!(skip.forward(x.clone()).unwrap(), y);
    let g = uniform(y.shape(), -1.0, 1.0, &mut rng);
    assert!(full.backward(g.clone()).unwrap().iter().any(|&v| v != 0.0));
    let dx = skip.backward(g).unwrap();
    assert_eq!(dx.shape(), x.shape());
    assert!(dx.iter().all(|&v| v == 0.0));
    for (a, b) in full.params().iter().zip(skip.params()) {
        assert_eq!(a.grad, b.grad);
    }
    let mut rng = seeded_rng(38);
    let m = zoo::lenet([1, 16, 16], 4, &[2], &mut rng).unwrap();
    assert!(matches!(&m.trunk[0], Layer::Conv2d(c) if c.skip_input_grad));
    assert!(matches!(&m.trunk[4], Layer::Conv2d(c) if !c.skip_input_grad));
}

#[test]
fn conv2d_projector_removes_subspace_from_weight_gradient() {
    let mut rng = seeded_rng(34);
    let base = Conv2d::new("c", 2, 3, 2, 1, 0, false, &mut rng).unwrap(); // patch length 8
    // Orthonormal basis: 3 coordinate axes of patch space (rank 3 ≤ 8/2: the basis side is used), and 6 axes
    // (the complement side).
    for rank in [3usize, 6] {
        let mut basis = Array2::<f32>::zeros((8, rank));
        for j in 0..rank {
            basis[[(j * 5) % 8, j]] = 1.0;
        }
        let proj = Arc::new(Projector::new(basis.clone()).unwrap());
        // batch 1 on a 3×3 input → 4 patch rows (< 3 filters? no: 4 ≥ 3), and a 2×2 input → 1 row (< 3 filters).
        for hw in [3usize, 2] {
            let x = uniform(&[1, 2, hw, hw], -1.0, 1.0, &mut rng);
            let mut plain = base.clone();
            let mut projected = base.clone();
            projected.projector = Some(proj.clone());
            let y = plain.forward(x.clone()).unwrap();
            projected.forward(x).unwrap();
            let g = uniform(y.shape(), -1.0, 1.0, &mut rng);
            let dx_plain = plain.backward(g.clone()).unwrap();
            let dx_proj = projected.backward(g).unwrap();
            assert_eq!(dx_plain, dx_proj, "input gradient is not projected");
            let gw = plain.weight.grad.view().into_shape_with_order((3, 8)).unwrap().to_owned();
            let expect = &gw - &gw.dot(&basis).dot(&basis.t());
            let got = projected.weight.grad.view().into_shape_with_order((3, 8)).unwrap().to_owned();
            assert!(got.iter().zip(expect.iter()).all(|(a, b)| (a - b).abs() < 1e-5), "rank {rank}, {hw}x{hw}");
            assert!(got.dot(&basis).iter().all(|v| v.abs() < 1e-5));
        }
    }
}

#[test]
fn maxpool2d_forward_floor_and_values() {
    let mut rng = seeded_rng(35);
    let x = distinct(&[2, 3, 7, 8], &mut rng);
    let mut p = MaxPool2d::new(3, 2).unwrap();
    let y = p.forward(x.clone()).unwrap();
    assert_eq!(y.shape(), [2, 3, 3, 3]); // ⌊(7−3)/2⌋+1, ⌊(8−3)/2⌋+1
    for ((b, c, oy, ox), &v) in y.clone().into_dimensionality::<ndarray::Ix4>().unwrap().indexed_iter() {
        let win = x.slice(s![b, c, oy * 2..oy * 2 + 3, ox * 2..ox * 2 + 3]);
        assert_eq!(v, win.fold(f32::NEG_INFINITY, |m, &e| m.max(e)));
    }
    let mut p2 = MaxPool2d::new(2, 2).unwrap();
    assert_eq!(p2.forward(ArrayD::zeros(IxDyn(&[1, 1, 5, 5]))).unwrap().shape(), [1, 1, 2, 2]);
    // Ties: the first maximum in the window receives the gradient.
    let mut p3 = MaxPool2d::new(2, 2).unwrap();
    p3.forward(ArrayD::ones(IxDyn(&[1, 1, 2, 2]))).unwrap();
    let d = p3.backward(ArrayD::ones(IxDyn(&[1, 1, 1, 1]))).unwrap();
    assert_eq!(flat(&d), [1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn batchnorm_forward_normalises_with_batch_statistics() {
    let mut rng = seeded_rng(36);
    let x = uniform(&[4, 3, 5, 5], -3.0, 7.0, &mut rng);
    let mut bn = BatchNorm::new("bn", 3);
    for mode in [Mode::Train, Mode::Eval] {
        let y = Layer::BatchNorm(bn.clone()).forward(x.clone(), mode).unwrap();
        for c in 0..3 {
            let ch = y.index_axis(Axis(1), c);
            let mean = ch.mean().unwrap();
            let var = ch.mapv(|v| (v - mean).powi(2)).mean().unwrap();
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "channel {c}: mean {mean}, var {var}");
        }
    }
    // Affine part, on 2-D input.
    let bn2 = BatchNorm::from_weights("bn", Array1::from_vec(vec![2.0, 0.5]), Array1::from_vec(vec![1.0, -1.0]));
    let x2 = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0.0, 10.0, 2.0, 20.0]).unwrap();
    let y2 = bn2.unwrap().forward(x2).unwrap();
    let s = 1.0 / (1.0f32 + BATCH_NORM_EPS).sqrt();
    let expect = [1.0 - 2.0 * s, -1.0 - 0.5 * s, 1.0 + 2.0 * s, -1.0 + 0.5 * s];
    assert!(y2.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-4), "{y2:?}");
    bn.clear_cache();
}

#[test]
fn dropout_masks_scale_and_determinism() {
    let x = ArrayD::<f32>::ones(IxDyn(&[50, 40]));
    let mut d = Dropout::new(0.3, 7).unwrap();
    let y = d.forward(x.clone(), Mode::Train).unwrap();
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let frac = 1.0 - kept as f32 / 2000.0;
    assert!((frac - 0.3).abs() < 0.05, "dropped fraction {frac}");
    // Same seed → same masks; the next forward draws a new mask; eval and p = 0 are the identity.
    let mut d2 = Dropout::new(0.3, 7).unwrap();
    assert_eq!(d2.forward(x.clone(), Mode::Train).unwrap(), y);
    assert_ne!(d2.forward(x.clone(), Mode::Train).unwrap(), y);
    assert_ne!(Dropout::new(0.3, 8).unwrap().forward(x.clone(), Mode::Train).unwrap(), y);
    d2.reseed(7);
    assert_eq!(d2.forward(x.clone(), Mode::Train).unwrap(), y);
    assert_eq!(d.forward(x.clone(), Mode::Eval).unwrap(), x);
    assert_eq!(d.backward(x.clone()).unwrap(), x);
    let mut d0 = Dropout::new(0.0, 1).unwrap();
    assert_eq!(d0.forward(x.clone(), Mode::Train).unwrap(), x);
    assert_eq!((d.p(), d.seed()), (0.3, 7));
}

#[test]
fn flatten_forward_is_c_order() {
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2]), |i| (i[0] * 100 + i[1] * 10 + i[2]) as f32);
    let mut f = Flatten::default();
    let y = f.forward(x.clone()).unwrap();
    assert_eq!(y.shape(), [2, 6]);
    assert_eq!(y.row_view_0(), [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    assert_eq!(f.backward(y).unwrap(), x);
    let mut f1 = Flatten::default();
    assert_eq!(f1.forward(ArrayD::zeros(IxDyn(&[4]))).unwrap().shape(), [4, 1]);
}

trait RowView0 {
    fn row_view_0(&self) -> Vec<f32>;
}

impl RowView0 for ArrayD<f32> {
    fn row_view_0(&self) -> Vec<f32> {
        self.index_axis(Axis(0), 0).iter().copied().collect()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// LeNet: shapes, sizes, determinism

#[test]
fn lenet_shapes_and_sizes() {
    let mut rng = seeded_rng(40);
    let mut m = zoo::lenet([1, 28, 28], 500, &[10, 5], &mut rng).unwrap();
    assert_eq!(m.input_shape, [1, 28, 28]);
    let shapes: Vec<(String, Vec<usize>)> = m.param_infos().into_iter().map(|i| (i.name, i.shape)).collect();
    let expect: Vec<(&str, Vec<usize>)> = vec![
        ("trunk.0.weight", vec![20, 1, 5, 5]),
        ("trunk.1.weight", vec![20]),
        ("trunk.1.bias", vec![20]),
        ("trunk.4.weight", vec![50, 20, 5, 5]),
        ("trunk.5.weight", vec![50]),
        ("trunk.5.bias", vec![50]),
        ("trunk.9.weight", vec![500, 800]),
        ("head.0.weight", vec![10, 500]),
        ("head.1.weight", vec![5, 500]),
    ];
    assert_eq!(shapes.len(), expect.len());
    for ((n, s), (en, es)) in shapes.iter().zip(&expect) {
        assert_eq!((n.as_str(), s), (*en, es));
    }
    let kinds: Vec<&str> = m.trunk.iter().map(Layer::kind).collect();
    assert_eq!(
        kinds,
        [
            "Conv2d",
            "BatchNorm",
            "Relu",
            "MaxPool2d",
            "Conv2d",
            "BatchNorm",
            "Relu",
            "MaxPool2d",
            "Flatten",
            "Linear",
            "Relu"
        ]
    );
    let x = flat_batch(3, 784, &mut rng);
    assert_eq!(m.forward(&x.view(), 0, Mode::Train).unwrap().dim(), (3, 10));
    assert_eq!(m.forward(&x.view(), 1, Mode::Eval).unwrap().dim(), (3, 5));
    let Layer::Conv2d(c) = &m.trunk[4] else { panic!("trunk[4] is a conv") };
    assert_eq!(c.cached_patches().unwrap().dim(), (3 * 8 * 8, 500));
    assert_eq!((c.stride(), c.padding(), c.kernel_size()), (1, 0, (5, 5)));
    // Colour 32×32 (CIFAR): 32 → 28 → 14 → 10 → 5.
    let m3 = zoo::lenet([3, 32, 32], 100, &[10], &mut rng).unwrap();
    let Layer::Linear(fc) = &m3.trunk[9] else { panic!("trunk[9] is linear") };
    assert_eq!(fc.in_features(), 50 * 5 * 5);
    // Smallest legal image, and too small ones.
    assert!(zoo::lenet([1, 16, 16], 10, &[2], &mut rng).is_ok());
    for bad in [[1, 15, 28], [1, 28, 15], [0, 28, 28], [1, 0, 0]] {
        assert!(matches!(zoo::lenet(bad, 10, &[2], &mut rng), Err(crate::Error::Config(_))), "{bad:?}");
    }
    assert!(zoo::lenet([1, 28, 28], 0, &[2], &mut rng).is_err());
    assert!(zoo::lenet([1, 28, 28], 10, &[], &mut rng).is_err());
    assert!(zoo::lenet([1, 28, 28], 10, &[0], &mut rng).is_err());
}

#[test]
fn determinism_given_a_seed() {
    let build = |seed| {
        let mut rng = seeded_rng(seed);
        let mut m = tiny_lenet(&mut rng);
        let x = flat_batch(4, 128, &mut rng);
        let y = labels(4, 3, &mut rng);
        let mut opt = Sgd::new(0.1, 0.0).unwrap();
        let mut losses = Vec::new();
        for _ in 0..3 {
            m.zero_grad();
            losses.push(m.loss_and_grad(&x.view(), &y, 0).unwrap());
            opt.step(&mut m).unwrap();
        }
        (m.flat_params(), losses)
    };
    assert_eq!(build(3), build(3));
    assert_ne!(build(3).0, build(4).0);
    let a = zoo::lenet([1, 20, 20], 16, &[4], &mut seeded_rng(9)).unwrap();
    let b = zoo::lenet([1, 20, 20], 16, &[4], &mut seeded_rng(9)).unwrap();
    assert_eq!(a.flat_params(), b.flat_params());
}

// ---------------------------------------------------------------------------------------------------------------
// bad shapes and states return errors

#[test]
fn bad_shapes_are_errors_not_panics() {
    let mut rng = seeded_rng(50);
    let z = |s: &[usize]| ArrayD::<f32>::zeros(IxDyn(s));
    // Conv2d
    let mut conv = Conv2d::new("c", 2, 3, 3, 1, 0, true, &mut rng).unwrap();
    assert!(conv.backward(z(&[1, 3, 2, 2])).is_err(), "backward before forward");
    assert!(conv.forward(z(&[1, 2, 5])).is_err(), "3-D input");
    assert!(conv.forward(z(&[1, 3, 5, 5])).is_err(), "wrong channels");
    assert!(conv.forward(z(&[1, 2, 2, 5])).is_err(), "image smaller than kernel");
    let mut padded = Conv2d::new("c", 2, 3, 1, 1, 1, true, &mut rng).unwrap();
    assert!(padded.forward(z(&[1, 2, 0, 3])).is_err(), "empty image");
    assert!(conv.forward(z(&[0, 2, 5, 5])).is_ok_and(|y| y.shape() == [0, 3, 3, 3]), "empty batch");
    conv.forward(z(&[2, 2, 5, 5])).unwrap();
    assert!(conv.backward(z(&[2, 3, 2, 3])).is_err(), "wrong grad shape");
    assert!(conv.backward(z(&[2, 3, 3])).is_err(), "3-D grad");
    assert!(Conv2d::new("c", 0, 3, 3, 1, 0, true, &mut rng).is_err());
    assert!(Conv2d::new("c", 2, 3, 0, 1, 0, true, &mut rng).is_err());
    assert!(Conv2d::new("c", 2, 3, 3, 0, 0, true, &mut rng).is_err());
    assert!(Conv2d::from_weights("c", Array4::zeros((3, 2, 3, 3)), Some(Array1::zeros(2)), 1, 0).is_err());
    let mut tampered = conv.clone();
    tampered.weight.value = z(&[3, 2, 3]);
    assert!(tampered.forward(z(&[1, 2, 5, 5])).is_err(), "tampered weight");
    // MaxPool2d
    let mut pool = MaxPool2d::new(2, 2).unwrap();
    assert!(pool.backward(z(&[1, 1, 1, 1])).is_err());
    assert!(pool.forward(z(&[1, 4])).is_err());
    assert!(pool.forward(z(&[1, 1, 1, 4])).is_err());
    pool.forward(z(&[1, 1, 4, 4])).unwrap();
    assert!(pool.backward(z(&[1, 1, 2, 3])).is_err());
    assert!(MaxPool2d::new(0, 1).is_err() && MaxPool2d::new(2, 0).is_err());
    // BatchNorm
    let mut bn = BatchNorm::new("bn", 3);
    assert!(bn.backward(z(&[2, 3])).is_err());
    assert!(bn.forward(z(&[2, 3, 4])).is_err(), "3-D input");
    assert!(bn.forward(z(&[2, 4])).is_err(), "wrong features");
    assert!(bn.forward(z(&[2, 2, 3, 3])).is_err(), "wrong channels");
    assert!(bn.forward(z(&[1, 3])).is_err(), "one value per channel");
    assert!(bn.forward(z(&[1, 3, 1, 1])).is_err(), "one value per channel (4-D)");
    assert!(bn.forward(z(&[0, 3])).is_err(), "empty batch");
    assert!(bn.forward(z(&[1, 3, 2, 1])).is_ok(), "two values per channel");
    assert!(bn.backward(z(&[1, 3, 1, 2])).is_err(), "wrong grad shape");
    assert!(BatchNorm::from_weights("bn", Array1::ones(3), Array1::zeros(2)).is_err());
    // Dropout
    for p in [-0.1, 1.0, 1.5, f32::NAN] {
        assert!(Dropout::new(p, 0).is_err(), "p = {p}");
    }
    let mut d = Dropout::new(0.5, 0).unwrap();
    assert!(d.backward(z(&[2, 2])).is_err());
    d.forward(z(&[2, 2]), Mode::Train).unwrap();
    assert!(d.backward(z(&[2, 3])).is_err());
    // Flatten
    let mut f = Flatten::default();
    assert!(f.backward(z(&[2, 2])).is_err());
    assert!(f.forward(ArrayD::zeros(IxDyn(&[]))).is_err());
    f.forward(z(&[2, 3, 4])).unwrap();
    assert!(f.backward(z(&[2, 11])).is_err());
    // Through a model: wrong input width, unknown head, too small a batch for batch statistics.
    let mut m = zoo::lenet([1, 16, 16], 8, &[3], &mut rng).unwrap();
    assert!(m.forward(&Array2::zeros((2, 255)).view(), 0, Mode::Train).is_err());
    assert!(m.forward(&Array2::zeros((2, 256)).view(), 1, Mode::Train).is_err());
    assert!(m.forward(&Array2::zeros((1, 256)).view(), 0, Mode::Eval).is_ok());
    let mut wrong_order = Model::new(
        vec![4],
        vec![Layer::Conv2d(Conv2d::new("c", 1, 1, 1, 1, 0, false, &mut rng).unwrap())],
        vec![Linear::new("h", 4, 2, false, &mut rng)],
    )
    .unwrap();
    assert!(wrong_order.forward(&Array2::zeros((2, 4)).view(), 0, Mode::Train).is_err(), "conv on 2-D input");
}

// ---------------------------------------------------------------------------------------------------------------
// forward mode: nn::jvp against central differences of the logits

/// `(f(θ + hτ) − f(θ − hτ)) / 2h`, each side on a clone of `model` (clones draw the same dropout mask), with the
/// largest `h ∈ {1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6}` whose two sides cross no ReLU or max-pool kink ([`kink_pattern`]): a
/// crossed kink, not the product under test, is what makes a difference quotient wrong.
fn logits_central_difference(model: &Model, x: &Array2<f32>, head: usize, tau: &[f32], mode: Mode) -> Array2<f32> {
    let theta = model.flat_params();
    let moved = |k: f32| {
        let mut m = model.clone();
        let p: Vec<f32> = theta.iter().zip(tau).map(|(a, t)| a + k * t).collect();
        m.set_flat_params(&p).unwrap();
        m
    };
    let base = kink_pattern(model, x);
    for h in [1e-3f32, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6] {
        let (mut plus, mut minus) = (moved(h), moved(-h));
        if kink_pattern(&plus, x) != base || kink_pattern(&minus, x) != base {
            continue;
        }
        let (fp, fm) = (plus.forward(&x.view(), head, mode).unwrap(), minus.forward(&x.view(), head, mode).unwrap());
        return (fp - fm) / (2.0 * h);
    }
    panic!("every step crosses a kink: pick another direction");
}

/// `‖a − b‖ / ‖b‖` in f64.
fn rel_err(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let d: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let n: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (d / n).sqrt()
}

fn direction(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Through conv (stride, padding, bias), 4-D and 2-D batch norm, ReLU, max-pool, flatten, linear, dropout (in
/// training mode with its mask) and both heads, the forward-mode product agrees with central differences of the
/// logits to 1 %, and its logits are the plain forward pass's, bit for bit. Along a direction 2 % longer the
/// differences disagree by more than the tolerance: the check can fail.
#[test]
fn jvp_matches_central_differences_through_every_layer_kind() {
    let mut rng = seeded_rng(41);
    let model = tiny_lenet(&mut rng);
    let x = flat_batch(6, 2 * 8 * 8, &mut rng);
    for (head, mode) in [(0, Mode::Eval), (1, Mode::Eval), (0, Mode::Train)] {
        let tau = direction(model.num_params(), &mut rng);
        let (y, dy) = jvp(&mut model.clone(), &x.view(), head, &tau, mode).unwrap();
        let y_plain = model.clone().forward(&x.view(), head, mode).unwrap();
        assert!(y.iter().zip(&y_plain).all(|(a, b)| a.to_bits() == b.to_bits()), "logits differ ({mode:?})");
        let fd = logits_central_difference(&model, &x, head, &tau, mode);
        assert!(fd.iter().any(|v| v.abs() > 0.05), "a trivial direction proves nothing: {fd:?}");
        let e = rel_err(&dy, &fd);
        assert!(e < 1e-2, "head {head} {mode:?}: JVP vs central differences, relative error {e}");
        let longer: Vec<f32> = tau.iter().map(|t| 1.02 * t).collect();
        let fd_longer = logits_central_difference(&model, &x, head, &longer, mode);
        assert!(rel_err(&dy, &fd_longer) > 1e-2, "the tolerance does not see a 2 % error");
    }
}

/// The zoo's MLP (no bias) and CNN: central differences agree, and the product is linear in τ.
#[test]
fn jvp_zoo_models_and_linearity() {
    let mut rng = seeded_rng(42);
    let mlp = zoo::mlp(20, &[16, 16], &[3, 2], false, &mut rng).unwrap();
    let cnn = zoo::cnn([1, 16, 16], 8, &[4], &mut rng).unwrap();
    for (name, model, head) in [("mlp", mlp, 1), ("cnn", cnn, 0)] {
        let x = flat_batch(5, model.input_len(), &mut rng);
        let tau = direction(model.num_params(), &mut rng);
        let (_, dy) = jvp(&mut model.clone(), &x.view(), head, &tau, Mode::Eval).unwrap();
        let fd = logits_central_difference(&model, &x, head, &tau, Mode::Eval);
        let e = rel_err(&dy, &fd);
        assert!(e < 1e-2, "{name}: relative error {e}");
        let tau3: Vec<f32> = tau.iter().map(|t| 3.0 * t).collect();
        let (_, dy3) = jvp(&mut model.clone(), &x.view(), head, &tau3, Mode::Eval).unwrap();
        assert!(rel_err(&dy3, &(&dy * 3.0)) < 1e-5, "{name}: J(3τ) ≠ 3 Jτ");
    }
}

/// A model that is a single linear head: `J τ = x Ẇᵀ + ḃ` exactly, and other heads' entries of τ do not matter.
#[test]
fn jvp_of_a_linear_model_is_x_dw_plus_db() {
    let mut rng = seeded_rng(43);
    let heads = vec![Linear::new("a", 4, 2, true, &mut rng), Linear::new("b", 4, 3, true, &mut rng)];
    let mut model = Model::new(vec![4], vec![], heads).unwrap();
    let x = flat_batch(3, 4, &mut rng);
    let mut tau = direction(model.num_params(), &mut rng);
    let (dw, db) = (&tau[10..22], &tau[22..25]); // head 1 after head 0's 4·2 + 2 entries
    let expect = Array2::from_shape_fn((3, 3), |(i, o)| (0..4).map(|k| x[[i, k]] * dw[o * 4 + k]).sum::<f32>() + db[o]);
    let (_, dy) = jvp(&mut model, &x.view(), 1, &tau, Mode::Eval).unwrap();
    assert!(dy.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-5), "{dy:?} vs {expect:?}");
    tau[..10].iter_mut().for_each(|t| *t = 100.0);
    let (_, again) = jvp(&mut model, &x.view(), 1, &tau, Mode::Eval).unwrap();
    assert_eq!(dy, again);
}

/// The layers keep the caches of `f(x; θ)`: a backward pass right after `jvp` gives the plain gradient, bit for bit.
#[test]
fn backward_after_jvp_is_the_plain_gradient() {
    let mut rng = seeded_rng(44);
    let model = zoo::cnn([1, 16, 16], 8, &[4], &mut rng).unwrap();
    let x = flat_batch(5, 256, &mut rng);
    let y = labels(5, 4, &mut rng);
    let tau = direction(model.num_params(), &mut rng);
    let grad_after = |use_jvp: bool| {
        let mut m = model.clone();
        m.zero_grad();
        let logits = if use_jvp {
            jvp(&mut m, &x.view(), 0, &tau, Mode::Train).unwrap().0
        } else {
            m.forward(&x.view(), 0, Mode::Train).unwrap()
        };
        let (_, g) = softmax_cross_entropy(&logits.view(), &y).unwrap();
        m.backward(g, 0).unwrap();
        m.flat_grads()
    };
    let (a, b) = (grad_after(true), grad_after(false));
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn jvp_bad_inputs_are_typed_errors() {
    let mut rng = seeded_rng(45);
    let mut model = zoo::mlp(6, &[4], &[2], true, &mut rng).unwrap();
    let x = flat_batch(2, 6, &mut rng);
    let n = model.num_params();
    let tau = vec![0.1f32; n];
    assert!(matches!(jvp(&mut model, &x.view(), 0, &tau[1..], Mode::Eval), Err(crate::Error::Shape { .. })));
    let mut bad = tau.clone();
    bad[3] = f32::NAN;
    assert!(matches!(jvp(&mut model, &x.view(), 0, &bad, Mode::Eval), Err(crate::Error::NonFinite(_))));
    assert!(matches!(jvp(&mut model, &x.view(), 1, &tau, Mode::Eval), Err(crate::Error::UnknownHead { .. })));
    let wide = flat_batch(2, 7, &mut rng);
    assert!(matches!(jvp(&mut model, &wide.view(), 0, &tau, Mode::Eval), Err(crate::Error::Shape { .. })));
}
