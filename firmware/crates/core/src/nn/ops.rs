//! Small dense kernels shared by the layers (one place to swap in a faster GEMM or another backend).

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

use crate::error::{Result, shape_err};

/// `a · bᵀ` for `a (m, k)`, `b (n, k)`.
pub fn matmul_nt(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    crate::nn::gemm::matmul(a, &b.t())
}

/// `aᵀ · b` for `a (k, m)`, `b (k, n)`.
pub fn matmul_tn(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    crate::nn::gemm::matmul(&a.t(), b)
}

/// Output length of a sliding window: `⌊(input + 2·padding − kernel) / stride⌋ + 1` (PyTorch's convention),
/// or `None` when the window does not fit (`kernel > input + 2·padding`) or `kernel`/`stride` is zero.
pub fn window_out_len(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 {
        return None;
    }
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    padded.checked_sub(kernel).map(|span| span / stride + 1)
}

/// Geometry of a 2-D sliding window (convolution or pooling) over an NCHW tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (same along both spatial axes).
    pub stride: usize,
    /// Zero padding added on every side.
    pub padding: usize,
}

impl Window2d {
    /// Output `(out_h, out_w)` for an input of `h × w`; an error when the window does not fit or the input is
    /// empty (`h` or `w` zero).
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if h == 0 || w == 0 {
            return Err(shape_err("sliding window input", "non-empty image", (h, w)));
        }
        match (
            window_out_len(h, self.kh, self.stride, self.padding),
            window_out_len(w, self.kw, self.stride, self.padding),
        ) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(shape_err(
                "sliding window (kernel larger than padded input, or zero kernel/stride)",
                format!("input >= {}x{} - 2*{}, stride >= 1", self.kh, self.kw, self.padding),
                (h, w, self.stride),
            )),
        }
    }
}

/// Unfold the sliding windows of `x (n, c, h, w)` into a patch matrix of shape
/// `(n·out_h·out_w, c·kh·kw)` (im2col; zero padding is materialised as zeros).
///
/// **Row order**: row `(b·out_h + oy)·out_w + ox` holds the window of sample `b` at output position `(oy, ox)`
/// (sample-major, then output row, then output column — i.e. the row index enumerates the output tensor
/// `(n, out_h, out_w)` in C order).
/// **Column order**: column `(ci·kh + ky)·kw + kx` holds input channel `ci`, kernel offset `(ky, kx)` — the
/// C-order flattening of a PyTorch conv weight `(out, in, kh, kw)` to `(out, in·kh·kw)`, so a convolution is
/// `patches · W_flatᵀ`. Each row is one "representation vector" in the sense of GPM's conv layers (GPM's
/// `unfold`-based matrices are the transpose of this one).
pub fn im2col(x: &ArrayView4<'_, f32>, win: Window2d) -> Result<Array2<f32>> {
    im2col_into(x, win, Vec::new())
}

/// [`im2col`] writing into the allocation of `buf` (its contents are discarded), so a layer can recycle the patch
/// matrix of its previous forward pass instead of allocating (and page-faulting in) megabytes per batch.
pub fn im2col_into(x: &ArrayView4<'_, f32>, win: Window2d, mut buf: Vec<f32>) -> Result<Array2<f32>> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = win.out_size(h, w)?;
    let Window2d { kh, kw, stride, padding } = win;
    let k = c * kh * kw;
    let rows = n * oh * ow;
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout is contiguous");
    buf.clear();
    buf.resize(rows * k, 0.0); // padding entries stay zero
    // One sample's patch rows per call (on the board's threads): sample b reads only its own image.
    crate::threads::for_each_chunk(&mut buf, oh * ow * k, |b, out| {
        let img = &xs[b * c * h * w..(b + 1) * c * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = (oy * ow + ox) * k;
                let x0 = (ox * stride) as isize - padding as isize;
                for ci in 0..c {
                    for ky in 0..kh {
                        let iy = (oy * stride + ky) as isize - padding as isize;
                        if iy < 0 || iy as usize >= h {
                            continue; // padding row: stays zero
                        }
                        let src = (ci * h + iy as usize) * w;
                        let dst = row + (ci * kh + ky) * kw;
                        if x0 >= 0 && x0 as usize + kw <= w {
                            let s = src + x0 as usize;
                            copy_run(&mut out[dst..dst + kw], &img[s..s + kw]);
                        } else {
                            for kx in 0..kw {
                                let ix = x0 + kx as isize;
                                if ix >= 0 && (ix as usize) < w {
                                    out[dst + kx] = img[src + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    Array2::from_shape_vec((rows, k), buf).map_err(|e| shape_err("im2col output", (rows, k), e))
}

/// The adjoint of [`im2col`] (col2im): scatter-add a patch-matrix-shaped gradient `cols (n·out_h·out_w, c·kh·kw)`
/// back onto an `(n, c, h, w)` tensor; entries that fall on the zero padding are dropped. Row and column order
/// are those of [`im2col`].
pub fn col2im(cols: &ArrayView2<'_, f32>, input: (usize, usize, usize, usize), win: Window2d) -> Result<Array4<f32>> {
    let (n, c, h, w) = input;
    let (oh, ow) = win.out_size(h, w)?;
    let Window2d { kh, kw, .. } = win;
    let k = c * kh * kw;
    if cols.dim() != (n * oh * ow, k) {
        return Err(shape_err("col2im input", (n * oh * ow, k), cols.dim()));
    }
    let cols = cols.as_standard_layout();
    let cs = cols.as_slice().expect("standard layout is contiguous");
    let mut out = vec![0.0f32; n * c * h * w];
    if n > 0 {
        crate::threads::for_each_chunk(&mut out, c * h * w, |b, dst| {
            col2im_add_sample(&cs[b * oh * ow * k..(b + 1) * oh * ow * k], (c, h, w), (oh, ow), win, dst);
            Ok(())
        })?;
    }
    Array4::from_shape_vec((n, c, h, w), out).map_err(|e| shape_err("col2im output", (n, c, h, w), e))
}

/// col2im of one sample: scatter-add `cols` (`out_h·out_w × c·kh·kw`, row-major, rows in [`im2col`] order) onto
/// `out` (`c × h × w`, row-major). The caller guarantees the lengths.
pub fn col2im_add_sample(
    cols: &[f32],
    (c, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    win: Window2d,
    out: &mut [f32],
) {
    let Window2d { kh, kw, stride, padding } = win;
    let k = c * kh * kw;
    for oy in 0..oh {
        for ox in 0..ow {
            let row = (oy * ow + ox) * k;
            let x0 = (ox * stride) as isize - padding as isize;
            for ci in 0..c {
                for ky in 0..kh {
                    let iy = (oy * stride + ky) as isize - padding as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    let dst = (ci * h + iy as usize) * w;
                    let src = row + (ci * kh + ky) * kw;
                    if x0 >= 0 && x0 as usize + kw <= w {
                        let d = dst + x0 as usize;
                        add_run(&mut out[d..d + kw], &cols[src..src + kw]);
                    } else {
                        for kx in 0..kw {
                            let ix = x0 + kx as isize;
                            if ix >= 0 && (ix as usize) < w {
                                out[dst + ix as usize] += cols[src + kx];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`; kernel rows are short (1–7), where fixed-size moves beat a `memcpy` call.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const K: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; K]>::try_from(dst), <&[f32; K]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match dst.len() {
        2 => fixed::<2>(dst, src),
        3 => fixed::<3>(dst, src),
        4 => fixed::<4>(dst, src),
        5 => fixed::<5>(dst, src),
        7 => fixed::<7>(dst, src),
        _ => false,
    };
    if !done {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

/// `dst += src` element-wise, with fixed-size fast paths for short kernel rows.
#[inline(always)]
fn add_run(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const K: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; K]>::try_from(dst), <&[f32; K]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                for i in 0..K {
                    d[i] += s[i];
                }
                true
            }
            _ => false,
        }
    }
    let done = match dst.len() {
        2 => fixed::<2>(dst, src),
        3 => fixed::<3>(dst, src),
        5 => fixed::<5>(dst, src),
        _ => false,
    };
    if !done {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// Move a contiguous array into standard (C) layout without copying when it already is.
pub fn standard<D: ndarray::Dimension>(x: ndarray::Array<f32, D>) -> ndarray::Array<f32, D> {
    if x.is_standard_layout() { x } else { x.as_standard_layout().into_owned() }
}
