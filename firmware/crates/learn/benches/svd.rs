//! Thin SVD for GPM bases: faer (as `gpm::left_singular` calls it) vs linfa-linalg vs the eigen route
//! (`R Rᵀ` eigendecomposition with faer), on the representation-matrix shapes GPM actually sees.
//!
//! Run: `cargo bench -p edgelearn-learn --bench svd`. Results and conclusion: `docs/benchmarks.md`, "SVD for GPM bases".
//!
//! Every method is run once per shape before timing and checked against faer's singular values, so the timings
//! compare equal work. A method whose single run takes longer than [`SLOW_S`] is not run through criterion
//! (10 samples would take minutes); it is timed [`SLOW_RUNS`] times by hand and the median printed.
//!
//! Times are process CPU time (`CLOCK_PROCESS_CPUTIME_ID`), not wall time: the bench machine is shared with other
//! jobs, and every method here runs on one thread (faer is built without `rayon`, so `Par::Seq`), where CPU time
//! equals wall time on an idle machine. Off Linux the clock falls back to wall time.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use linfa_linalg::svd::{SVDInto, SvdSort};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Above this many seconds per run a method is timed by hand instead of through criterion.
const SLOW_S: f64 = 2.0;
/// Hand-timed runs (the untimed check run is not among them).
const SLOW_RUNS: usize = 3;

/// CPU time of this process, all threads together.
#[cfg(target_os = "linux")]
fn cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: glibc/musl `clock_gettime` with a valid clock id and a pointer to a live `timespec` (64-bit Linux
    // layout: two i64); it only writes that struct.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time since the first call (no CPU clock off Linux).
#[cfg(not(target_os = "linux"))]
fn cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Criterion measurement: process CPU time, formatted like wall time.
struct CpuTime;

static WALL: WallTime = WallTime;

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        cpu_time() - start
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

/// CPU seconds and wall seconds of one call.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (c, w) = (cpu_time(), Instant::now());
    let out = f();
    (out, (cpu_time() - c).as_secs_f64(), w.elapsed().as_secs_f64())
}

/// `(label, d, n)`: PMNIST MLP layers, Split-MNIST layer 2, LeNet im2col with 125 samples, DESIGN's 784×2000.
const SHAPES: &[(&str, usize, usize)] = &[
    ("784x300", 784, 300),
    ("100x300", 100, 300),
    ("256x300", 256, 300),
    ("25x72000", 25, 72_000),
    ("500x8000", 500, 8_000),
    ("784x2000", 784, 2_000),
];

/// A `d × n` activation-like matrix: `ReLU(A Z + noise)` with `A` of rank 32 and geometrically decaying column
/// scales, so the spectrum has a dominant leading value, a decaying head and a noise floor (fixed seed).
fn representation(d: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = 32;
    let a = Array2::from_shape_fn((d, r), |(_, j)| rng.random_range(-1.0f32..1.0) * 0.8f32.powi(j as i32));
    let z = Array2::from_shape_fn((r, n), |_| rng.random_range(-1.0f32..1.0));
    let mut m = a.dot(&z);
    m.mapv_inplace(|v| (v + 0.05 * rng.random_range(-1.0f32..1.0)).max(0.0));
    m
}

/// (a) faer thin SVD, exactly as GPM computes bases.
fn faer_svd(r: &ArrayView2<'_, f32>) -> (Array2<f64>, Vec<f64>) {
    edgelearn_learn::gpm::left_singular(r).expect("faer SVD")
}

/// (a') faer thin SVD through `faer::linalg::svd::svd` asking for U only (no V), same parallelism and parameters as
/// `thin_svd`. A candidate for `gpm::left_singular`, which never uses V.
fn faer_svd_u_only(r: &ArrayView2<'_, f32>) -> (Array2<f64>, Vec<f64>) {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::svd::{ComputeSvdVectors, svd, svd_scratch};
    let (d, n) = r.dim();
    let k = d.min(n);
    let mat = faer::Mat::<f64>::from_fn(d, n, |i, j| f64::from(r[[i, j]]));
    let mut u = faer::Mat::<f64>::zeros(d, k);
    let mut s = faer::diag::Diag::<f64>::zeros(k);
    let par = faer::get_global_parallelism();
    let mut mem = MemBuffer::new(svd_scratch::<f64>(
        d,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::No,
        par,
        Default::default(),
    ));
    svd(mat.as_ref(), s.as_mut(), Some(u.as_mut()), None, par, MemStack::new(&mut mem), Default::default())
        .expect("faer SVD (U only)");
    let sv = s.column_vector();
    (Array2::from_shape_fn((d, k), |(i, j)| u[(i, j)]), (0..k).map(|i| sv[i] * sv[i]).collect())
}

/// (b) linfa-linalg SVD (ndarray 0.16): U and σ only (no Vᵀ), sorted descending, σ squared like `left_singular`.
/// linfa's bidiagonalisation handles wide matrices (lower bidiagonal) directly, so no transpose.
fn linfa_svd(r: &ArrayView2<'_, f32>) -> (ndarray016::Array2<f64>, Vec<f64>) {
    let (d, n) = r.dim();
    let m = ndarray016::Array2::from_shape_fn((d, n), |(i, j)| f64::from(r[[i, j]]));
    let (u, s, _) = m.svd_into(true, false).expect("linfa SVD").sort_svd_desc();
    (u.expect("U requested"), s.iter().map(|v| v * v).collect())
}

/// (c) Eigen route: `G = R Rᵀ` (`d × d`) with faer, `self_adjoint_eigen`, eigenpairs reversed to descending and
/// the first `min(d, n)` kept. Eigenvalues are σ² directly.
fn faer_eigen(r: &ArrayView2<'_, f32>) -> (Array2<f64>, Vec<f64>) {
    let (d, n) = r.dim();
    let mat = faer::Mat::<f64>::from_fn(d, n, |i, j| f64::from(r[[i, j]]));
    let g = &mat * mat.transpose();
    let evd = g.self_adjoint_eigen(faer::Side::Lower).expect("faer eigen");
    let (u, s) = (evd.U(), evd.S().column_vector());
    let k = d.min(n);
    (Array2::from_shape_fn((d, k), |(i, j)| u[(i, d - 1 - j)]), (0..k).map(|j| s[d - 1 - j].max(0.0)).collect())
}

/// Compare σ² lists: worst `|σᵢ − σ'ᵢ| / σᵢ` over σ above `1e-6 σ₁` (relative), and worst `|σᵢ − σ'ᵢ| / σ₁`.
fn sigma_errors(reference: &[f64], other: &[f64]) -> (f64, f64) {
    assert_eq!(reference.len(), other.len(), "number of singular values");
    let s1 = reference[0].sqrt();
    let (mut rel, mut abs) = (0.0f64, 0.0f64);
    for (&a, &b) in reference.iter().zip(other) {
        let (sa, sb) = (a.sqrt(), b.sqrt());
        abs = abs.max((sa - sb).abs() / s1);
        if sa > 1e-6 * s1 {
            rel = rel.max((sa - sb).abs() / sa);
        }
    }
    (rel, abs)
}

/// Smallest `|⟨uᵢ, u'ᵢ⟩|` over the leading `k` singular vectors (sign-free; 1 = same direction).
fn min_alignment(k: usize, u: impl Fn(usize, usize) -> f64, v: impl Fn(usize, usize) -> f64, d: usize) -> f64 {
    (0..k).map(|j| (0..d).map(|i| u(i, j) * v(i, j)).sum::<f64>().abs()).fold(1.0, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn svd_benches(c: &mut Criterion<CpuTime>) {
    let mut group = c.benchmark_group("svd");
    for (idx, &(label, d, n)) in SHAPES.iter().enumerate() {
        let r = representation(d, n, 0x5eed + idx as u64);
        let rv = r.view();

        // Untimed check run of each method; its duration also decides criterion vs hand timing.
        let ((uf, sf), t_faer, w_faer) = timed(|| faer_svd(&rv));
        let ((ul, sl), t_linfa, w_linfa) = timed(|| linfa_svd(&rv));
        let ((ue, se), t_eigen, w_eigen) = timed(|| faer_eigen(&rv));
        let ((uo, so), t_uonly, w_uonly) = timed(|| faer_svd_u_only(&rv));

        let (rel_l, abs_l) = sigma_errors(&sf, &sl);
        let (rel_e, abs_e) = sigma_errors(&sf, &se);
        let (rel_o, _) = sigma_errors(&sf, &so);
        let total: f64 = sf.iter().sum();
        let k97 = edgelearn_learn::gpm::energy_rank(&sf, 0.97);
        let top = k97.clamp(1, 10);
        let al = min_alignment(top, |i, j| uf[[i, j]], |i, j| ul[[i, j]], d);
        let ae = min_alignment(top, |i, j| uf[[i, j]], |i, j| ue[[i, j]], d);
        let ao = min_alignment(top, |i, j| uf[[i, j]], |i, j| uo[[i, j]], d);
        println!(
            "check {label}: σ₁²/Σσ² = {:.3}, rank@0.97 = {k97}; linfa vs faer σ: rel {rel_l:.1e}, abs/σ₁ {abs_l:.1e}, \
             top-{top} |⟨u,u'⟩| ≥ {al:.9}; eigen vs faer σ: rel {rel_e:.1e}, abs/σ₁ {abs_e:.1e}, \
             top-{top} |⟨u,u'⟩| ≥ {ae:.9}; U-only vs faer σ: rel {rel_o:.1e}, top-{top} |⟨u,u'⟩| ≥ {ao:.9}; first runs CPU (wall): faer {t_faer:.3} ({w_faer:.3}) s, linfa {t_linfa:.3} ({w_linfa:.3}) s, \
             eigen {t_eigen:.3} ({w_eigen:.3}) s, U-only {t_uonly:.3} ({w_uonly:.3}) s",
            sf[0] / total,
        );
        assert!(rel_l < 1e-8, "{label}: linfa σ differ from faer's by {rel_l:e} (relative)");
        assert!(rel_o < 1e-8, "{label}: U-only σ differ from faer's by {rel_o:e} (relative)");
        assert!(abs_e < 1e-8, "{label}: eigen-route σ differ from faer's by {abs_e:e} (of σ₁)");

        type Method = fn(&ArrayView2<'_, f32>);
        let methods: [(&str, f64, Method); 4] = [
            ("faer", t_faer, |r| {
                black_box(faer_svd(r));
            }),
            ("linfa", t_linfa, |r| {
                black_box(linfa_svd(r));
            }),
            ("faer-eigen", t_eigen, |r| {
                black_box(faer_eigen(r));
            }),
            ("faer-u-only", t_uonly, |r| {
                black_box(faer_svd_u_only(r));
            }),
        ];
        for (name, first, f) in methods {
            if first > SLOW_S {
                let (cpu, wall): (Vec<f64>, Vec<f64>) = (0..SLOW_RUNS)
                    .map(|_| {
                        let ((), c, w) = timed(|| f(black_box(&rv)));
                        (c, w)
                    })
                    .unzip();
                println!(
                    "svd/{name}/{label}: hand-timed, median of {SLOW_RUNS}: CPU {:.3} s (runs {cpu:.3?}), wall {:.3} s \
                     (runs {wall:.3?})",
                    median(cpu.clone()),
                    median(wall.clone())
                );
            } else {
                group.bench_with_input(BenchmarkId::new(name, label), &rv, |b, r| b.iter(|| f(black_box(r))));
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(CpuTime)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = svd_benches
}
criterion_main!(benches);
