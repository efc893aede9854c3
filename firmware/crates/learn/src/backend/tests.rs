//! Parity tests, written once and instantiated per backend by [`backend_tests!`] (candle's pattern): one per
//! operation (max abs difference to an independent host reference ≤ 1e-4) and two whole streams learned by the one
//! learner with the backend installed as the GEMM device ([`super::install`]'s mechanism, every product offloaded):
//! GPM + BECAME on a small real Split-MNIST stream, and the field ([`crate::method::field_method`] in a
//! [`crate::learner::Learner`] under the Jetson Nano profile) learning MNIST digits 0/1 then 2/3 class-incrementally;
//! each within 0.5 points of the same run without a device, and every product seen by the device.
//!
//! The CUDA instantiation exists only with the `cuda` feature and is `#[ignore]`d, so that `cargo test` lists it
//! as not run rather than passing it on a machine without a GPU; `scripts/cuda-check.sh` runs it with
//! `--include-ignored` on a GPU machine.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{Array2, Array4};
use rand::Rng;

use super::*;
use crate::budget::BoardProfile;
use crate::gpm::GpmConfig;
use crate::learner::Learner;
use crate::merge::{became_alpha, interpolate};
use crate::method::{Became, LearnContext, Method};
use crate::selftest::{load_split, pair_samples};
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::nn::offload::{Offload, set_offload};
use edgelearn_core::nn::ops::im2col;
use edgelearn_core::nn::zoo;
use edgelearn_core::train::{Silent, TrainConfig, evaluate};

const TOL: f32 = 1e-4;

/// Held by every test that installs a GEMM device, which is one per process (the self-test's `install` included).
pub(crate) static OFFLOAD_TESTS: Mutex<()> = Mutex::new(());

/// A device that counts the products it is given and hands them to `inner`.
struct Counting<B> {
    inner: B,
    calls: AtomicUsize,
}

impl<B: Offload> Offload for Counting<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn gemm(&self, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.gemm(g, a, b, c)
    }
}

/// `run` twice: on the CPU, then with `device` installed for every product; returns both results and how many
/// products reached the device.
fn with_and_without<B: Offload + 'static, T>(device: B, run: impl Fn() -> T) -> (T, T, usize) {
    let _one = OFFLOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    set_offload(None, 0).unwrap();
    let native = run();
    let counting = Arc::new(Counting { inner: device, calls: AtomicUsize::new(0) });
    set_offload(Some(counting.clone()), 0).unwrap();
    let offloaded = run();
    set_offload(None, 0).unwrap();
    (native, offloaded, counting.calls.load(Ordering::Relaxed))
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = edgelearn_core::seeded_rng(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn assert_close(what: &str, got: &[f32], expected: &[f32]) {
    let d = max_abs_diff(got, expected);
    assert!(d <= TOL, "{what}: max abs diff {d} > {TOL}");
}

/// Naive row-major reference of [`Gemm`].
fn gemm_reference(g: Gemm, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    let [(_, ac), (_, bc), _] = g.shapes();
    let at = |i: usize, p: usize| if g.trans_a { a[p * ac + i] } else { a[i * ac + p] };
    let bt = |p: usize, j: usize| if g.trans_b { b[j * bc + p] } else { b[p * bc + j] };
    let mut out = c.to_vec();
    for i in 0..g.m {
        for j in 0..g.n {
            let s: f64 = (0..g.k).map(|p| f64::from(at(i, p)) * f64::from(bt(p, j))).sum();
            out[i * g.n + j] = g.alpha * s as f32 + g.beta * c[i * g.n + j];
        }
    }
    out
}

pub(super) fn check_gemm<B: Backend>(b: &B) {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (m, n, k) in [(10, 100, 784), (7, 3, 5), (1, 1, 1), (33, 65, 17)] {
            let g = Gemm::new(ta, tb, m, n, k).scaled(0.5, -2.0);
            let [sa, sb, sc] = g.shapes();
            let (a, bb, c) = (random(sa.0 * sa.1, 1), random(sb.0 * sb.1, 2), random(sc.0 * sc.1, 3));
            let expected = gemm_reference(g, &a, &bb, &c);
            let (da, db) = (b.upload(&a).unwrap(), b.upload(&bb).unwrap());
            let mut dc = b.upload(&c).unwrap();
            b.gemm(g, &da, &db, &mut dc).unwrap();
            assert_close(&format!("gemm ta={ta} tb={tb} {m}x{n}x{k}"), &b.download(&dc).unwrap(), &expected);
        }
    }
    // Wrong lengths are a typed error, not a fault.
    let g = Gemm::new(false, false, 2, 2, 2);
    let (x, mut y) = (b.upload(&[1.0; 4]).unwrap(), b.upload(&[0.0; 3]).unwrap());
    assert!(matches!(b.gemm(g, &x, &x, &mut y), Err(Error::Shape { .. })));
}

pub(super) fn check_relu<B: Backend>(b: &B) {
    let x = random(1000, 4);
    let g = random(1000, 5);
    let mut dx = b.upload(&x).unwrap();
    b.relu(&mut dx).unwrap();
    let y: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
    assert_close("relu", &b.download(&dx).unwrap(), &y);
    let mut dg = b.upload(&g).unwrap();
    b.relu_backward(&dx, &mut dg).unwrap();
    let expected: Vec<f32> = g.iter().zip(&x).map(|(&g, &x)| if x > 0.0 { g } else { 0.0 }).collect();
    assert_close("relu backward", &b.download(&dg).unwrap(), &expected);
    let mut nan = b.upload(&[f32::NAN, -1.0]).unwrap();
    b.relu(&mut nan).unwrap();
    let back = b.download(&nan).unwrap();
    assert!(back[0].is_nan() && back[1] == 0.0, "NaN must stay NaN: {back:?}");
}

pub(super) fn check_im2col<B: Backend>(b: &B) {
    for (shape, win) in [
        ([2, 3, 9, 8], Window2d { kh: 3, kw: 2, stride: 2, padding: 1 }),
        ([4, 1, 28, 28], Window2d { kh: 5, kw: 5, stride: 1, padding: 0 }),
    ] {
        let [n, c, h, w] = shape;
        let x = random(n * c * h * w, 6);
        let arr = Array4::from_shape_vec((n, c, h, w), x.clone()).unwrap();
        let expected = im2col(&arr.view(), win).unwrap();
        let dx = b.upload(&x).unwrap();
        let mut out = b.zeros(expected.len()).unwrap();
        b.im2col(&dx, shape, win, &mut out).unwrap();
        assert_close(&format!("im2col {shape:?} {win:?}"), &b.download(&out).unwrap(), expected.as_slice().unwrap());
    }
}

pub(super) fn check_projection<B: Backend>(b: &B) {
    // A basis under half of d (direct form) and one over half (the CPU switches to the complement).
    for (d, keep) in [(40, 0.8), (12, 0.999)] {
        let r = Array2::from_shape_vec((d, 60), random(d * 60, 7)).unwrap();
        let (m, _) = crate::gpm::first_basis(&r.view(), keep).unwrap();
        let g = Array2::from_shape_vec((17, d), random(17 * d, 8)).unwrap();
        let expected = &g - &g.dot(&m).dot(&m.t());
        let basis = b.basis(&m).unwrap();
        let mut dg = b.upload(g.as_slice().unwrap()).unwrap();
        b.project_rows(&basis, &mut dg).unwrap();
        let got = b.download(&dg).unwrap();
        assert_close(&format!("G − G M Mᵀ, d {d}, k {}", m.ncols()), &got, expected.as_slice().unwrap());
    }
}

pub(super) fn check_fisher_and_sgd<B: Backend>(b: &B) {
    let (g, f0, w) = (random(500, 9), random(500, 10).iter().map(|v| v.abs()).collect::<Vec<_>>(), random(500, 11));
    let mut df = b.upload(&f0).unwrap();
    b.fisher_accumulate(&b.upload(&g).unwrap(), 64.0, &mut df).unwrap();
    b.scale(1.0 / 300.0, &mut df).unwrap();
    let expected: Vec<f32> = f0.iter().zip(&g).map(|(f, g)| (f + 64.0 * g * g) / 300.0).collect();
    assert_close("Fisher F += w g², F /= N", &b.download(&df).unwrap(), &expected);
    let mut dw = b.upload(&w).unwrap();
    b.axpy(-0.05, &b.upload(&g).unwrap(), &mut dw).unwrap();
    let expected: Vec<f32> = w.iter().zip(&g).map(|(w, g)| w - 0.05 * g).collect();
    assert_close("SGD step", &b.download(&dw).unwrap(), &expected);
    let mut dst = b.zeros(500).unwrap();
    b.copy(&dw, &mut dst).unwrap();
    assert_eq!(b.download(&dst).unwrap(), b.download(&dw).unwrap());
}

pub(super) fn check_merge<B: Backend>(b: &B) {
    let n = 3000;
    let f_cur: Vec<f32> = random(n, 12).iter().map(|v| v.abs()).collect();
    let f_old: Vec<f32> = random(n, 13).iter().map(|v| v * v).collect();
    let (gp, hat) = (random(n, 14), random(n, 15));
    let expected = became_alpha(&f_cur, &f_old, &gp, &hat).unwrap();
    let up = |v: &[f32]| b.upload(v).unwrap();
    let (num, den) = b.became_terms(&up(&f_cur), &up(&f_old), &up(&gp), &up(&hat)).unwrap();
    let alpha = crate::merge::alpha_from_terms(num, den).unwrap();
    assert!((alpha - expected).abs() < 1e-9, "α {alpha} vs {expected}");
    let mut out = b.zeros(n).unwrap();
    b.interpolate(&up(&gp), &up(&hat), alpha, &mut out).unwrap();
    assert_close("θ* = (1 − α) θ_GP + α θ̂", &b.download(&out).unwrap(), &interpolate(&gp, &hat, alpha).unwrap());
    let bad = b.became_terms(&up(&[-1.0]), &up(&[0.0]), &up(&[0.0]), &up(&[1.0]));
    assert!(matches!(bad, Err(Error::NonFinite(_))), "{bad:?}");
}

/// Two 2-class Split-MNIST tasks (0/1, 2/3): `train` samples each, a validation tenth, 500 test images each.
fn split_mnist(train: usize) -> Vec<(Samples, Samples, Samples)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/mnist");
    let (tri, trl) = load_split(&dir, true).expect("MNIST under data/mnist (bash scripts/fetch-data.sh)");
    let (tei, tel) = load_split(&dir, false).unwrap();
    [[0u8, 1], [2, 3]]
        .into_iter()
        .map(|pair| {
            let tr = pair_samples(&tri, &trl, pair, 0, Some(train)).unwrap();
            let va = pair_samples(&tri, &trl, pair, train, Some(train / 10)).unwrap();
            let te = pair_samples(&tei, &tel, pair, 0, Some(500)).unwrap();
            (tr, va, te)
        })
        .collect()
}

/// Learn the stream with `method` from the same initialisation and seed; returns the final accuracy per task, ACC
/// and the α of task 2.
fn run_stream(method: &mut dyn Method, tasks: &[(Samples, Samples, Samples)]) -> (Vec<f64>, f64, f64) {
    let mut rng = edgelearn_core::seeded_rng(0);
    let mut model = zoo::mlp(784, &[100, 100], &[2, 2], false, &mut rng).unwrap();
    let mut alpha = f64::NAN;
    for (t, (tr, va, _)) in tasks.iter().enumerate() {
        let task = TaskData { task_id: t, head: t, train: tr, val: va };
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let report = method.learn_task(&mut model, &task, &mut ctx).unwrap();
        alpha = report.alpha.unwrap_or(alpha);
    }
    let accs: Vec<f64> = tasks
        .iter()
        .enumerate()
        .map(|(j, (_, _, te))| f64::from(evaluate(&mut model, te, j, 256).unwrap().1))
        .collect();
    let acc = accs.iter().sum::<f64>() / accs.len() as f64;
    (accs, acc, alpha)
}

pub(super) fn check_task_update<B: Backend + Offload + 'static>(b: B) {
    let name = Offload::name(&b);
    let tasks = split_mnist(300);
    let cfg = TrainConfig { epochs: 3, batch_size: 10, lr: 0.05, ..TrainConfig::default() };
    let gcfg = GpmConfig { thresholds: vec![0.95, 0.99], threshold_increment: 0.0, samples: 300, project_heads: false };
    let run = || run_stream(&mut Became::new(cfg.clone(), gcfg.clone()), &tasks);
    let ((native_accs, native, native_alpha), (accs, acc, alpha), calls) = with_and_without(b, run);
    assert!(native > 0.9, "the native learner itself must learn the stream: {native_accs:?}");
    assert!(
        (acc - native).abs() <= 0.005,
        "ACC on {name}: {acc:.4} ({accs:?}) vs native {native:.4} ({native_accs:?})"
    );
    assert!((alpha - native_alpha).abs() < 0.05, "α {alpha} vs native {native_alpha}");
    if name == "cpu" {
        assert_eq!(alpha.to_bits(), native_alpha.to_bits(), "the CPU as a device must give the CPU's α");
    }
    assert!(calls > 100, "only {calls} products reached the {name} device");
}

/// The field as the Jetson Nano profile runs it, in the one learner: MNIST digits 0/1, then 2/3 (300 photos a
/// digit), no task id; accuracy over all four digits' test images.
fn field_run(tasks: &[(Samples, Samples, Samples)]) -> f64 {
    let profile_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../boards/jetson-nano-4gb.toml");
    let profile = BoardProfile::load(&profile_path).unwrap();
    let train = TrainConfig { epochs: 2, batch_size: 10, lr: 0.05, ..TrainConfig::default() };
    let method = crate::method::field_method(train, profile.fisher_format, profile.budget.fisher).unwrap();
    let model = zoo::mlp(784, &[100], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
    let mut l: Learner<Became, 1024> = Learner::new(profile, "mlp", model, method, &["0", "1"], 0).unwrap();
    let pairs = [[0u8, 1], [2, 3]];
    for ((tr, _, _), pair) in tasks.iter().zip(pairs) {
        for (row, &y) in tr.x.rows().into_iter().zip(&tr.y) {
            l.add_sample(&pair[y].to_string(), row.as_slice().unwrap()).unwrap();
        }
        l.learn().unwrap();
    }
    let (mut right, mut total) = (0usize, 0usize);
    for ((_, _, te), pair) in tasks.iter().zip(pairs) {
        for (row, &y) in te.x.rows().into_iter().zip(&te.y) {
            let want = l.class_id(&pair[y].to_string()).unwrap();
            right += usize::from(l.predict(row.as_slice().unwrap()).unwrap() == want);
            total += 1;
        }
    }
    right as f64 / total as f64
}

pub(super) fn check_field<B: Backend + Offload + 'static>(b: B) {
    let name = Offload::name(&b);
    let tasks = split_mnist(300);
    let (native, acc, calls) = with_and_without(b, || field_run(&tasks));
    assert!(native > 0.85, "the field must learn the stream on the CPU: {native:.4}");
    if name == "cpu" {
        // The plumbing alone (operands passed as row-major buffers and written back) changes nothing.
        assert_eq!(acc.to_bits(), native.to_bits(), "the CPU as a device must give the CPU's result");
    }
    assert!((acc - native).abs() <= 0.005, "field accuracy with the {name} device {acc:.4} vs CPU {native:.4}");
    assert!(calls > 100, "only {calls} products reached the {name} device");
}

/// One test per operation plus the whole task update, for the backend `$make` builds.
macro_rules! backend_tests {
    ($name:ident, $make:expr $(, #[$attr:meta])*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::super::*;

            #[test]
            $(#[$attr])*
            fn gemm_with_every_transpose() {
                super::check_gemm(&$make);
            }

            #[test]
            $(#[$attr])*
            fn relu_forward_and_backward() {
                super::check_relu(&$make);
            }

            #[test]
            $(#[$attr])*
            fn im2col_matches_the_layer_kernel() {
                super::check_im2col(&$make);
            }

            #[test]
            $(#[$attr])*
            fn projection_g_minus_g_m_mt() {
                super::check_projection(&$make);
            }

            #[test]
            $(#[$attr])*
            fn fisher_accumulation_and_sgd_step() {
                super::check_fisher_and_sgd(&$make);
            }

            #[test]
            $(#[$attr])*
            fn became_alpha_and_merge() {
                super::check_merge(&$make);
            }

            #[test]
            $(#[$attr])*
            fn whole_task_update_matches_the_native_learner() {
                super::check_task_update($make);
            }

            #[test]
            $(#[$attr])*
            fn the_field_in_the_learner_matches_the_cpu() {
                super::check_field($make);
            }
        }
    };
}

backend_tests!(cpu, CpuBackend::new());

#[cfg(any(feature = "cuda-12020", feature = "cuda-11040"))]
backend_tests!(
    cuda,
    CudaBackend::new(0).expect("a CUDA GPU (run scripts/cuda-check.sh on a GPU machine)"),
    #[ignore = "needs a CUDA GPU: run scripts/cuda-check.sh"]
);

#[test]
fn backend_kind_parses_and_prints() {
    for k in BackendKind::ALL {
        assert_eq!(k.to_string().parse::<BackendKind>().unwrap(), k);
    }
    assert_eq!(" CUDA ".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
    assert!(matches!("gpu".parse::<BackendKind>(), Err(Error::Config(_))));
    assert_eq!(BackendKind::default(), BackendKind::Auto);
}

/// Without CUDA (not compiled in, or no libcuda/GPU here) asking for it is a typed error, never a panic, and
/// `auto` falls back to the CPU.
#[test]
fn cuda_without_cuda_is_a_typed_error_and_auto_falls_back() {
    if !CUDA_COMPILED {
        let e = CudaBackend::new(0).unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable { backend: "cuda", .. }), "{e:?}");
        assert!(e.to_string().contains("not compiled with CUDA support"), "{e}");
        assert!(matches!(select(BackendKind::Cuda), Err(Error::BackendUnavailable { .. })));
        assert!(matches!(select(BackendKind::Auto), Ok(Selected::Cpu(_))));
    } else if cuda_status().is_err() {
        // Compiled in, but this machine has no CUDA libraries: probed, not panicked.
        let e = select(BackendKind::Cuda).unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable { backend: "cuda", .. }), "{e:?}");
        assert!(matches!(select(BackendKind::Auto), Ok(Selected::Cpu(_))));
    } else {
        // A CUDA machine: auto picks CUDA unless the GPU itself is unusable (then it still must not panic).
        let _ = select(BackendKind::Auto).unwrap();
    }
    assert!(matches!(select(BackendKind::Cpu), Ok(Selected::Cpu(_))));
}
