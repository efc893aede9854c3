//! The CUDA backend (feature `cuda`): cuBLAS for GEMM, a handful of kernels compiled with NVRTC when the backend is
//! created, buffers in device memory. cudarc loads libcuda, cuBLAS and NVRTC at run time (`dynamic-loading`), so a
//! build with the feature starts on a machine without CUDA; [`CudaBackend::new`] probes the libraries first and
//! returns [`Error::BackendUnavailable`] instead of letting cudarc panic.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use ndarray::Array2;

use super::{Backend, Gemm, check_same};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::offload::Offload;
use edgelearn_core::nn::ops::Window2d;

/// The kernels, compiled with `--fmad=false` so that every element is rounded exactly as the CPU rounds it (no
/// fused multiply-add contraction). Grid-stride loops; `int` indices (lengths are checked to fit).
const KERNELS: &str = r#"
#define GRID_STRIDE(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
                               i += (long long)blockDim.x * gridDim.x)

extern "C" __global__ void relu_fwd(float* x, int n) {
    GRID_STRIDE(i, n) { float v = x[i]; x[i] = v < 0.0f ? 0.0f : v; }
}

extern "C" __global__ void relu_bwd(const float* y, float* g, int n) {
    GRID_STRIDE(i, n) { g[i] = g[i] * (y[i] > 0.0f ? 1.0f : 0.0f); }
}

extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
    GRID_STRIDE(i, n) { y[i] = y[i] + a * x[i]; }
}

extern "C" __global__ void scale(float s, float* x, int n) {
    GRID_STRIDE(i, n) { x[i] = x[i] * s; }
}

extern "C" __global__ void fisher_acc(const float* g, float w, float* f, int n) {
    GRID_STRIDE(i, n) { f[i] = f[i] + w * g[i] * g[i]; }
}

extern "C" __global__ void interp(const float* a, const float* b, double alpha, float* out, int n) {
    GRID_STRIDE(i, n) { out[i] = (float)((1.0 - alpha) * (double)a[i] + alpha * (double)b[i]); }
}

extern "C" __global__ void im2col(const float* x, int n, int c, int h, int w, int kh, int kw, int stride, int pad,
                                  int oh, int ow, float* out) {
    long long k = (long long)c * kh * kw;
    long long total = (long long)n * oh * ow * k;
    GRID_STRIDE(idx, total) {
        long long row = idx / k;
        int col = (int)(idx % k);
        int ox = (int)(row % ow);
        long long t = row / ow;
        int oy = (int)(t % oh);
        int b = (int)(t / oh);
        int kx = col % kw;
        int ky = (col / kw) % kh;
        int ci = col / (kw * kh);
        int iy = oy * stride + ky - pad;
        int ix = ox * stride + kx - pad;
        out[idx] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(((long long)b * c + ci) * h + iy) * w + ix] : 0.0f;
    }
}

// Per-block partial sums of BECAME's alpha (num, den) in double; blockDim.x must be TERMS_THREADS (256).
// A negative or non-finite Fisher entry makes the sums NaN (the host reports it).
extern "C" __global__ void became_terms(const float* fc, const float* fo, const float* gp, const float* hat, int n,
                                        double* partial) {
    __shared__ double sn[256];
    __shared__ double sd[256];
    double num = 0.0, den = 0.0;
    GRID_STRIDE(i, n) {
        double c = fc[i], o = fo[i];
        if (!(c >= 0.0) || !(o >= 0.0) || (c - c) != 0.0 || (o - o) != 0.0) {
            num = __longlong_as_double(0x7ff8000000000000LL);
        }
        double d = (double)hat[i] - (double)gp[i];
        double d2 = d * d;
        num += c * d2;
        den += (c + o) * d2;
    }
    int t = threadIdx.x;
    sn[t] = num;
    sd[t] = den;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) { sn[t] += sn[t + s]; sd[t] += sd[t + s]; }
        __syncthreads();
    }
    if (t == 0) { partial[2 * blockIdx.x] = sn[0]; partial[2 * blockIdx.x + 1] = sd[0]; }
}
"#;

/// Threads per block of the `became_terms` reduction (its shared arrays have this size).
const TERMS_THREADS: u32 = 256;
/// Most blocks of the `became_terms` reduction (grid-stride beyond that).
const TERMS_BLOCKS: u32 = 1024;

/// The compiled kernels.
struct Kernels {
    relu_fwd: CudaFunction,
    relu_bwd: CudaFunction,
    axpy: CudaFunction,
    scale: CudaFunction,
    fisher_acc: CudaFunction,
    interp: CudaFunction,
    im2col: CudaFunction,
    became_terms: CudaFunction,
    _module: Arc<CudaModule>,
}

/// The CUDA backend on one GPU: a context, one stream, a cuBLAS handle on it and the NVRTC-compiled kernels.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    /// Serialises [`Offload::gemm`] callers (the Fisher estimator's threads share one stream and cuBLAS handle).
    offload: Mutex<()>,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend").field("ordinal", &self.ctx.ordinal()).finish_non_exhaustive()
    }
}

/// A GPM basis `M (d×k)` in device memory.
pub struct CudaBasis {
    m: CudaSlice<f32>,
    d: usize,
    k: usize,
}

/// A CUDA, cuBLAS or NVRTC failure as [`Error::Backend`].
fn dev<T, E: fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Backend { backend: "cuda", message: e.to_string() })
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda", reason: reason.into() }
}

/// `len` as the kernels' `int`.
fn int(len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| shape_err("CUDA buffer length", "at most 2^31 - 1", len))
}

fn op(transpose: bool) -> cublasOperation_t {
    if transpose { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N }
}

impl CudaBackend {
    /// Whether the CUDA driver, cuBLAS and NVRTC libraries can be loaded (no call into them is made otherwise).
    pub fn available() -> std::result::Result<(), String> {
        // SAFETY: these only try to dlopen the libraries by name; nothing in them is called.
        let present = unsafe {
            [
                ("CUDA driver (libcuda)", cudarc::driver::sys::is_culib_present()),
                ("cuBLAS (libcublas)", cudarc::cublas::sys::is_culib_present()),
                ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
            ]
        };
        let missing: Vec<&str> = present.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("library not found: {} (is the CUDA toolkit on LD_LIBRARY_PATH?)", missing.join(", ")))
        }
    }

    /// The backend on GPU `ordinal`: [`Error::BackendUnavailable`] when the libraries are missing, no such GPU
    /// answers or the kernels do not compile (never a panic: cudarc's are caught).
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::available().map_err(unavailable)?;
        match catch_unwind(AssertUnwindSafe(|| Self::create(ordinal))) {
            Ok(r) => r,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "initialisation panicked".into());
                Err(unavailable(why))
            }
        }
    }

    fn create(ordinal: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(format!("no usable GPU {ordinal}: {e}")))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| unavailable(format!("cuBLAS: {e}")))?;
        let opts = CompileOptions { fmad: Some(false), ..Default::default() };
        let ptx = compile_ptx_with_opts(KERNELS, opts).map_err(|e| unavailable(format!("NVRTC: {e}")))?;
        let module = ctx.load_module(ptx).map_err(|e| unavailable(format!("loading the kernels: {e}")))?;
        let f = |name: &str| module.load_function(name).map_err(|e| unavailable(format!("kernel {name}: {e}")));
        let k = Kernels {
            relu_fwd: f("relu_fwd")?,
            relu_bwd: f("relu_bwd")?,
            axpy: f("axpy")?,
            scale: f("scale")?,
            fisher_acc: f("fisher_acc")?,
            interp: f("interp")?,
            im2col: f("im2col")?,
            became_terms: f("became_terms")?,
            _module: module.clone(),
        };
        let name = ctx.name().unwrap_or_else(|_| "?".into());
        tracing::info!(ordinal, device = %name, "CUDA backend ready");
        Ok(Self { ctx, stream, blas, k, offload: Mutex::new(()) })
    }

    fn cfg(n: usize) -> LaunchConfig {
        // n ≥ 1 and fits i32 (checked by the callers); the grid-stride loops cover any remainder.
        LaunchConfig::for_num_elems(u32::try_from(n).unwrap_or(u32::MAX).min(1024 * 65_535))
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Basis = CudaBasis;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        if data.is_empty() {
            return dev(self.stream.null());
        }
        dev(self.stream.clone_htod(data))
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        dev(self.stream.clone_dtoh(buf))
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        if len == 0 {
            return dev(self.stream.null());
        }
        dev(self.stream.alloc_zeros::<f32>(len))
    }

    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
        check_same("backend copy", dst.len(), src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        dev(self.stream.memcpy_dtod(src, dst))
    }

    /// cuBLAS `sgemm`. cuBLAS is column-major and a row-major `X` is a column-major `Xᵀ`, so the row-major
    /// `C = op(A)·op(B)` is computed as the column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the operands swap places and keep
    /// their transpose flags, with leading dimensions the stored row lengths.
    fn gemm(&self, g: Gemm, a: &CudaSlice<f32>, b: &CudaSlice<f32>, c: &mut CudaSlice<f32>) -> Result<()> {
        g.check(a.len(), b.len(), c.len())?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        if g.k == 0 {
            return self.scale(g.beta, c);
        }
        let [(_, a_cols), (_, b_cols), _] = g.shapes();
        let cfg = GemmConfig {
            transa: op(g.trans_b),
            transb: op(g.trans_a),
            m: int(g.n)?,
            n: int(g.m)?,
            k: int(g.k)?,
            alpha: g.alpha,
            lda: int(b_cols)?,
            ldb: int(a_cols)?,
            beta: g.beta,
            ldc: int(g.n)?,
        };
        // SAFETY: the lengths of a, b and c were checked against the shapes above; cuBLAS reads and writes
        // exactly those elements.
        dev(unsafe { self.blas.gemm(cfg, b, a, c) })
    }

    fn relu(&self, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = int(x.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.relu_fwd);
        l.arg(x).arg(&n);
        // SAFETY: relu_fwd(float*, int) touches x[0..n).
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }

    fn relu_backward(&self, y: &CudaSlice<f32>, g: &mut CudaSlice<f32>) -> Result<()> {
        check_same("ReLU backward", y.len(), g.len())?;
        let n = int(g.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.relu_bwd);
        l.arg(y).arg(g).arg(&n);
        // SAFETY: relu_bwd(const float*, float*, int) touches [0..n) of both, which have length n.
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }

    fn im2col(&self, x: &CudaSlice<f32>, shape: [usize; 4], win: Window2d, out: &mut CudaSlice<f32>) -> Result<()> {
        let [n, c, h, w] = shape;
        check_same("im2col input", n * c * h * w, x.len())?;
        let (oh, ow) = win.out_size(h, w)?;
        let total = n * oh * ow * c * win.kh * win.kw;
        check_same("im2col output", total, out.len())?;
        int(total)?;
        if total == 0 {
            return Ok(());
        }
        let dims = [n, c, h, w, win.kh, win.kw, win.stride, win.padding, oh, ow].map(i32::try_from);
        if dims.iter().any(std::result::Result::is_err) {
            return Err(shape_err("im2col geometry", "sizes below 2^31", shape));
        }
        let dims = dims.map(|d| d.unwrap_or(0));
        let mut l = self.stream.launch_builder(&self.k.im2col);
        l.arg(x);
        for d in &dims {
            l.arg(d);
        }
        l.arg(out);
        // SAFETY: x has n·c·h·w elements and out n·oh·ow·c·kh·kw (checked); the kernel reads inside the image only.
        dev(unsafe { l.launch(Self::cfg(total)) }).map(drop)
    }

    fn basis(&self, m: &Array2<f32>) -> Result<CudaBasis> {
        let (d, k) = m.dim();
        if k > d {
            return Err(shape_err("projector basis", format!("at most {d} columns"), k));
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("projector basis".into()));
        }
        let host = m.as_standard_layout();
        let data = host.as_slice().ok_or_else(|| Error::Config("basis not contiguous".into()))?;
        Ok(CudaBasis { m: self.upload(data)?, d, k })
    }

    /// Two GEMMs: `C = X M` (rows×k), then `X ← X − C Mᵀ`.
    fn project_rows(&self, basis: &CudaBasis, x: &mut CudaSlice<f32>) -> Result<()> {
        let d = basis.d;
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(shape_err("projection rows", format!("a multiple of {d}"), x.len()));
        }
        if basis.k == 0 {
            return Ok(());
        }
        let rows = x.len() / d;
        let mut c = self.zeros(rows * basis.k)?;
        Backend::gemm(self, Gemm::new(false, false, rows, basis.k, d), x, &basis.m, &mut c)?;
        Backend::gemm(self, Gemm::new(false, true, rows, d, basis.k).scaled(-1.0, 1.0), &c, &basis.m, x)
    }

    fn axpy(&self, a: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        check_same("axpy", y.len(), x.len())?;
        let n = int(y.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.axpy);
        l.arg(&a).arg(x).arg(y).arg(&n);
        // SAFETY: axpy(float, const float*, float*, int) touches [0..n) of x and y (both length n).
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }

    fn scale(&self, s: f32, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = int(x.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.scale);
        l.arg(&s).arg(x).arg(&n);
        // SAFETY: scale(float, float*, int) touches x[0..n).
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }

    fn fisher_accumulate(&self, grad: &CudaSlice<f32>, weight: f32, fisher: &mut CudaSlice<f32>) -> Result<()> {
        check_same("Fisher accumulation", fisher.len(), grad.len())?;
        let n = int(grad.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.fisher_acc);
        l.arg(grad).arg(&weight).arg(fisher).arg(&n);
        // SAFETY: fisher_acc(const float*, float, float*, int) touches [0..n) of both (length n).
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }

    /// Per-block f64 partial sums on the device; the host adds the (at most 1024) pairs that come back.
    fn became_terms(
        &self,
        f_cur: &CudaSlice<f32>,
        f_old: &CudaSlice<f32>,
        theta_gp: &CudaSlice<f32>,
        theta_hat: &CudaSlice<f32>,
    ) -> Result<(f64, f64)> {
        let len = theta_gp.len();
        for (name, v) in [("F_cur", f_cur.len()), ("F_old", f_old.len()), ("θ̂", theta_hat.len())] {
            check_same(&format!("BECAME α: {name}"), len, v)?;
        }
        let n = int(len)?;
        if n == 0 {
            return Ok((0.0, 0.0));
        }
        let blocks = (n as u32).div_ceil(TERMS_THREADS).min(TERMS_BLOCKS);
        let mut partial = dev(self.stream.alloc_zeros::<f64>(2 * blocks as usize))?;
        let mut l = self.stream.launch_builder(&self.k.became_terms);
        l.arg(f_cur).arg(f_old).arg(theta_gp).arg(theta_hat).arg(&n).arg(&mut partial);
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (TERMS_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the four inputs have n elements; partial has 2·blocks, one pair per block.
        dev(unsafe { l.launch(cfg) })?;
        let sums = dev(self.stream.clone_dtoh(&partial))?;
        let (num, den) = sums.chunks_exact(2).fold((0.0f64, 0.0f64), |(a, b), p| (a + p[0], b + p[1]));
        if num.is_nan() || den.is_nan() {
            return Err(Error::NonFinite("a Fisher entry is negative or not finite, or θ is not finite".into()));
        }
        Ok((num, den))
    }

    fn interpolate(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, alpha: f64, out: &mut CudaSlice<f32>) -> Result<()> {
        check_same("interpolate", a.len(), b.len())?;
        check_same("interpolation output", a.len(), out.len())?;
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::Config(format!("interpolation weight {alpha} outside [0, 1]")));
        }
        let n = int(a.len())?;
        if n == 0 {
            return Ok(());
        }
        let mut l = self.stream.launch_builder(&self.k.interp);
        l.arg(a).arg(b).arg(&alpha).arg(out).arg(&n);
        // SAFETY: interp(const float*, const float*, double, float*, int) touches [0..n) of all three (length n).
        dev(unsafe { l.launch(Self::cfg(n as usize)) }).map(drop)
    }
}

/// The GPU as the process's GEMM device ([`super::install`]): operands copied in, [`Backend::gemm`] (cuBLAS), the
/// result copied back; one caller at a time.
impl Offload for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn gemm(&self, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        g.check(a.len(), b.len(), c.len())?;
        let _one =
            self.offload.lock().map_err(|_| Error::Backend { backend: "cuda", message: "lock poisoned".into() })?;
        let da = self.upload(a)?;
        let db = self.upload(b)?;
        let mut dc = if g.beta == 0.0 { self.zeros(c.len())? } else { self.upload(c)? };
        Backend::gemm(self, g, &da, &db, &mut dc)?;
        if c.is_empty() {
            return Ok(());
        }
        dev(self.stream.memcpy_dtoh(&dc, c))?;
        dev(self.stream.synchronize())
    }
}
