//! Photo augmentation for few-shot classes: each photo of a class the board has few photos of is followed by
//! jittered copies of itself (a small random rotation, scale and shift), so that the learner's statistics of that
//! class — its mean above all, which a handful of photos fixes poorly — cover the small pose changes a camera sees.
//!
//! The jitter runs on the model's input (normalised channel-major planes, before the frozen prefix), so the
//! variants go through the backbone like photos. [`AugmentPolicy`] says how many copies a photo gets from how many
//! photos of its class one batch brings; [`expand`] applies it to a batch under the room the sample buffer has.
//! Everything is drawn from the caller's seeded stream: the same photos and seed give the same variants on every
//! board and thread count.
//!
//! Why a hand-written warp and not `imageproc`: the images here are `f32` planes already normalised for the model
//! (not `image` buffers), one bilinear affine warp with clamped borders is all that is needed, and the board's
//! binary should not carry an image-processing crate for it.

use crate::error::{Result, shape_err};
use ndarray::{Array2, ArrayView2};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How many jittered copies each photo gets, from the number `n` of photos of its class in one batch: enough
/// copies to bring the class to `samples_per_class` samples, at least one and at most `max_variants` per photo
/// (see [`AugmentPolicy::variants`]). `samples_per_class = 0` turns augmentation off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AugmentPolicy {
    /// Samples a class is brought up to (photos and their copies together); 0: no augmentation.
    pub samples_per_class: usize,
    /// Most copies of one photo.
    pub max_variants: usize,
}

impl AugmentPolicy {
    /// No augmentation.
    pub const OFF: Self = Self { samples_per_class: 0, max_variants: 0 };

    /// True when it never adds a copy.
    pub fn is_off(&self) -> bool {
        self.samples_per_class == 0 || self.max_variants == 0
    }

    /// Copies per photo for a class with `photos` photos in the batch:
    /// `v(n) = clamp(⌈T / n⌉ − 1, 1, V_max)` with `T = samples_per_class`, `V_max = max_variants`; 0 when off or
    /// `n = 0`. Every photo gets at least one copy, so that every class's mean is taken over jittered photos
    /// alike (a class with many photos would otherwise keep sharper statistics than a few-shot one).
    pub fn variants(&self, photos: usize) -> usize {
        if self.is_off() || photos == 0 {
            return 0;
        }
        (self.samples_per_class.div_ceil(photos).saturating_sub(1)).clamp(1, self.max_variants)
    }
}

/// The random affine jitter of one copy: rotation uniform in ±`rotation_deg`, scale uniform in
/// `1 ± scale`, shift uniform in ±`shift` of the image's side along each axis, about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Largest rotation, degrees.
    pub rotation_deg: f32,
    /// Largest relative change of size.
    pub scale: f32,
    /// Largest shift, as a fraction of the side.
    pub shift: f32,
}

impl Default for Jitter {
    /// ±12°, ±10 % size, ±7 % of the side (2 pixels of a 28-pixel digit).
    fn default() -> Self {
        Self { rotation_deg: 12.0, scale: 0.1, shift: 0.07 }
    }
}

/// The image layout the jitter works on: `channels` planes of `height × width` values, channel-major (NCHW), or
/// with `channels_last` the channels of each pixel together (NHWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `H × W × C` instead of `C × H × W`.
    pub channels_last: bool,
}

impl ImageShape {
    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True for an image of no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of channel `c` of pixel `(y, x)`.
    pub fn index(&self, c: usize, y: usize, x: usize) -> usize {
        if self.channels_last {
            (y * self.width + x) * self.channels + c
        } else {
            (c * self.height + y) * self.width + x
        }
    }
}

/// One jittered copy of `image` (layout `shape`): the output pixel `p` takes the input at
/// `A⁻¹ (p − c − t) + c` (c the centre, `A = s·R(φ)`, t the shift), read bilinearly with the borders clamped
/// (the edge pixels extend outwards, so a digit's black or a photo's background fills what the warp uncovers).
pub fn jitter(image: &[f32], shape: ImageShape, j: &Jitter, rng: &mut impl Rng) -> Result<Vec<f32>> {
    if image.len() != shape.len() || shape.is_empty() {
        return Err(shape_err("augment: image", shape, image.len()));
    }
    let mut out = vec![0.0f32; image.len()];
    Warp::draw(shape, j, rng).apply(image, shape, &mut out);
    Ok(out)
}

/// One copy's random warp (rotation φ, scale s, shift t), drawn from the rng in a fixed order, so that the warps
/// of a batch can be drawn one after another and applied on any number of threads with the same result.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Warp {
    phi: f32,
    s: f32,
    tx: f32,
    ty: f32,
}

impl Warp {
    fn draw(shape: ImageShape, j: &Jitter, rng: &mut impl Rng) -> Self {
        let phi = rng.random_range(-1.0..=1.0f32) * j.rotation_deg.to_radians();
        let s = 1.0 + rng.random_range(-1.0..=1.0f32) * j.scale;
        let (h, w) = (shape.height as f32, shape.width as f32);
        let tx = rng.random_range(-1.0..=1.0f32) * j.shift * w;
        let ty = rng.random_range(-1.0..=1.0f32) * j.shift * h;
        Self { phi, s, tx, ty }
    }

    /// `out[p] = image[A⁻¹ (p − c − t) + c]`, bilinear, borders clamped (`image` and `out` of `shape.len()`).
    fn apply(self, image: &[f32], shape: ImageShape, out: &mut [f32]) {
        let Self { phi, s, tx, ty } = self;
        let (h, w) = (shape.height as f32, shape.width as f32);
        let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
        // A⁻¹ = R(−φ) / s.
        let (sin, cos) = phi.sin_cos();
        let (a, b, c, d) = (cos / s, sin / s, -sin / s, cos / s);
        for y in 0..shape.height {
            for x in 0..shape.width {
                let (dx, dy) = (x as f32 - cx - tx, y as f32 - cy - ty);
                let sx = (a * dx + b * dy + cx).clamp(0.0, w - 1.0);
                let sy = (c * dx + d * dy + cy).clamp(0.0, h - 1.0);
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(shape.width - 1), (y0 + 1).min(shape.height - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                for ch in 0..shape.channels {
                    let at = |yy: usize, xx: usize| image[shape.index(ch, yy, xx)];
                    let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                    let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                    out[shape.index(ch, y, x)] = top * (1.0 - fy) + bottom * fy;
                }
            }
        }
    }
}

/// A batch with its copies: the rows (each photo followed by its copies), their labels, and for each row the
/// index of the photo it comes from.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// `(rows, shape.len())` images.
    pub x: Array2<f32>,
    /// Label of each row (its photo's).
    pub labels: Vec<u32>,
    /// Index into the batch of the photo each row comes from; a photo's own row comes first.
    pub source: Vec<usize>,
}

/// Each photo of the batch `x` (labels `labels`, layout `shape`) followed by [`AugmentPolicy::variants`] jittered
/// copies, the count taken per class from the photos of that class in the batch, all within `room` rows: when
/// the copies would not fit, the most copies any photo gets is lowered until they do (the photos themselves
/// always come through; the caller limits them to its room). All rows at once: [`expand_chunked`] with one chunk.
pub fn expand(
    x: ArrayView2<'_, f32>,
    labels: &[u32],
    shape: ImageShape,
    policy: &AugmentPolicy,
    jit: &Jitter,
    room: usize,
    rng: &mut impl Rng,
) -> Result<Expanded> {
    let mut all = None;
    expand_chunked(x, labels, shape, policy, jit, room, rng, usize::MAX, |e| {
        all = Some(e);
        Ok(())
    })?;
    Ok(all.unwrap_or(Expanded { x: Array2::zeros((0, shape.len())), labels: Vec::new(), source: Vec::new() }))
}

/// [`expand`]'s rows handed to `each` at most `chunk` at a time, in order: the same rows, jittered with the same
/// draws of `rng`, as [`expand`] returns at once, but only one chunk of full-size images is held at a time (250
/// copies of a 224 × 224 RGB input are 150 MB; a chunk of 64, 38 MB). `source` indexes the batch `x`.
#[allow(clippy::too_many_arguments)]
pub fn expand_chunked(
    x: ArrayView2<'_, f32>,
    labels: &[u32],
    shape: ImageShape,
    policy: &AugmentPolicy,
    jit: &Jitter,
    room: usize,
    rng: &mut impl Rng,
    chunk: usize,
    mut each: impl FnMut(Expanded) -> Result<()>,
) -> Result<()> {
    if x.ncols() != shape.len() || x.nrows() != labels.len() {
        return Err(shape_err("augment: images × values, labels", (shape.len(), x.nrows()), (x.ncols(), labels.len())));
    }
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for &l in labels {
        *counts.entry(l).or_default() += 1;
    }
    let wanted = |cap: usize| -> usize { labels.iter().map(|l| 1 + policy.variants(counts[l]).min(cap)).sum() };
    let mut cap = policy.max_variants;
    while cap > 0 && wanted(cap) > room {
        cap -= 1;
    }
    if x.nrows() > 0 && shape.is_empty() {
        return Err(shape_err("augment: image", shape, x.ncols()));
    }
    let chunk = chunk.clamp(1, wanted(cap).max(1));
    // Each row of a chunk: its photo and, for a copy, its warp (drawn in order); the chunk's images are then made
    // on the compute threads, each row by one thread, so the rows do not depend on the thread count.
    let mut rows: Vec<(usize, Option<Warp>)> = Vec::with_capacity(chunk);
    let mut flush = |rows: &mut Vec<(usize, Option<Warp>)>| -> Result<()> {
        let n = rows.len();
        let mut buf = vec![0.0f32; n * shape.len()];
        crate::threads::for_each_chunk(&mut buf, shape.len(), |r, out| {
            let (i, warp) = rows[r];
            let row = x.row(i);
            let owned;
            let photo = match row.as_slice() {
                Some(p) => p,
                None => {
                    owned = row.to_vec();
                    &owned
                }
            };
            match warp {
                None => out.copy_from_slice(photo),
                Some(w) => w.apply(photo, shape, out),
            }
            Ok(())
        })?;
        let x = Array2::from_shape_vec((n, shape.len()), buf).map_err(|e| shape_err("augment: chunk", n, e))?;
        let labels = rows.iter().map(|&(i, _)| labels[i]).collect();
        let source = rows.iter().map(|&(i, _)| i).collect();
        rows.clear();
        each(Expanded { x, labels, source })
    };
    for (i, &label) in labels.iter().enumerate() {
        rows.push((i, None));
        if rows.len() == chunk {
            flush(&mut rows)?;
        }
        for _ in 0..policy.variants(counts[&label]).min(cap) {
            rows.push((i, Some(Warp::draw(shape, jit, rng))));
            if rows.len() == chunk {
                flush(&mut rows)?;
            }
        }
    }
    if !rows.is_empty() {
        flush(&mut rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded_rng;

    #[test]
    fn copies_per_photo_follow_the_rule() {
        let p = AugmentPolicy { samples_per_class: 250, max_variants: 24 };
        // ⌈250/n⌉ − 1, at least 1, at most 24.
        assert_eq!([1, 5, 10, 20, 125, 256, 1000].map(|n| p.variants(n)), [24, 24, 24, 12, 1, 1, 1]);
        assert_eq!(p.variants(0), 0);
        assert_eq!(AugmentPolicy::OFF.variants(3), 0);
        assert!(AugmentPolicy { samples_per_class: 250, max_variants: 0 }.is_off());
    }

    #[test]
    fn no_jitter_is_the_identity_and_a_shift_moves_pixels() {
        let shape = ImageShape { channels: 2, height: 5, width: 7, channels_last: false };
        let img: Vec<f32> = (0..shape.len()).map(|i| i as f32).collect();
        let none = Jitter { rotation_deg: 0.0, scale: 0.0, shift: 0.0 };
        let out = jitter(&img, shape, &none, &mut seeded_rng(1)).expect("shape ok");
        for (a, b) in out.iter().zip(&img) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // A one-hot pixel moves and keeps (about) its mass under a pure shift.
        let one = ImageShape { channels: 1, height: 9, width: 9, channels_last: false };
        let mut dot = vec![0.0f32; one.len()];
        dot[4 * 9 + 4] = 1.0;
        let shift = Jitter { rotation_deg: 0.0, scale: 0.0, shift: 0.3 };
        let out = jitter(&dot, one, &shift, &mut seeded_rng(2)).expect("shape ok");
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(out[4 * 9 + 4] < 0.99, "the dot did not move");
    }

    #[test]
    fn channels_last_is_the_same_warp_as_channel_major() {
        let planar = ImageShape { channels: 3, height: 6, width: 5, channels_last: false };
        let last = ImageShape { channels_last: true, ..planar };
        let img: Vec<f32> = (0..planar.len()).map(|i| ((i * 7919) % 101) as f32).collect();
        let mut nhwc = vec![0.0; img.len()];
        for c in 0..3 {
            for y in 0..6 {
                for x in 0..5 {
                    nhwc[last.index(c, y, x)] = img[planar.index(c, y, x)];
                }
            }
        }
        let a = jitter(&img, planar, &Jitter::default(), &mut seeded_rng(5)).expect("shape ok");
        let b = jitter(&nhwc, last, &Jitter::default(), &mut seeded_rng(5)).expect("shape ok");
        for c in 0..3 {
            for y in 0..6 {
                for x in 0..5 {
                    assert_eq!(a[planar.index(c, y, x)], b[last.index(c, y, x)]);
                }
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant_and_output_is_finite() {
        let shape = ImageShape { channels: 3, height: 8, width: 6, channels_last: true };
        let img = vec![-0.42f32; shape.len()];
        let out = jitter(&img, shape, &Jitter::default(), &mut seeded_rng(3)).expect("shape ok");
        assert!(out.iter().all(|v| (v + 0.42).abs() < 1e-6));
    }

    #[test]
    fn expand_orders_copies_after_their_photo_and_keeps_within_room() {
        let shape = ImageShape { channels: 1, height: 4, width: 4, channels_last: false };
        let x = Array2::from_shape_fn((5, 16), |(i, j)| (i * 16 + j) as f32);
        let labels = [0, 0, 0, 1, 1];
        let p = AugmentPolicy { samples_per_class: 12, max_variants: 10 };
        // Class 0: ⌈12/3⌉−1 = 3 copies, class 1: ⌈12/2⌉−1 = 5.
        let e = expand(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(4)).expect("ok");
        assert_eq!(e.x.nrows(), 3 * 4 + 2 * 6);
        assert_eq!(e.source[..5], [0, 0, 0, 0, 1]);
        assert_eq!(e.labels.iter().filter(|&&l| l == 1).count(), 12);
        assert_eq!(e.x.row(4), x.row(1), "a photo's own row comes first, unchanged");
        // Room for 15 rows: copies capped at 2 per photo (5 · 3 = 15).
        let e = expand(x.view(), &labels, shape, &p, &Jitter::default(), 15, &mut seeded_rng(4)).expect("ok");
        assert_eq!(e.x.nrows(), 15);
        // No room for copies at all: the photos alone.
        let e = expand(x.view(), &labels, shape, &p, &Jitter::default(), 3, &mut seeded_rng(4)).expect("ok");
        assert_eq!((e.x.nrows(), e.source.clone()), (5, vec![0, 1, 2, 3, 4]));
        // The same seed gives the same copies.
        let a = expand(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(9)).expect("ok");
        let b = expand(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(9)).expect("ok");
        assert_eq!(a.x, b.x);
        assert!(expand(x.view(), &labels[..4], shape, &p, &Jitter::default(), 100, &mut seeded_rng(9)).is_err());
    }

    /// The chunked expansion hands over exactly the rows of the one-shot expansion, in order, in chunks of at
    /// most the asked size.
    #[test]
    fn chunked_expansion_is_the_same_rows() {
        let shape = ImageShape { channels: 1, height: 6, width: 6, channels_last: false };
        let x = Array2::from_shape_fn((5, 36), |(i, j)| (i * 36 + j) as f32 / 100.0);
        let labels = [0, 0, 1, 2, 2];
        let p = AugmentPolicy { samples_per_class: 8, max_variants: 5 };
        let whole = expand(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(3)).unwrap();
        let mut rows = Vec::new();
        let (mut got_labels, mut got_source) = (Vec::new(), Vec::new());
        expand_chunked(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(3), 4, |e| {
            assert!(e.x.nrows() <= 4 && e.x.nrows() == e.labels.len());
            rows.extend(e.x.iter().copied());
            got_labels.extend(e.labels);
            got_source.extend(e.source);
            Ok(())
        })
        .unwrap();
        assert_eq!(whole.x.nrows(), 2 * 4 + 6 + 2 * 4, "3 copies for a class of 2 photos, 5 (capped) for one");
        assert!(whole.x.iter().zip(&rows).all(|(a, b)| a.to_bits() == b.to_bits()) && rows.len() == whole.x.len());
        assert_eq!((got_labels, got_source), (whole.labels, whole.source));
        // The copies are made on the compute threads: the same bits on any thread count.
        let before = crate::threads::threads();
        crate::threads::set_threads(2);
        let two = expand(x.view(), &labels, shape, &p, &Jitter::default(), 100, &mut seeded_rng(3)).unwrap();
        crate::threads::set_threads(before);
        assert!(two.x.iter().zip(whole.x.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
