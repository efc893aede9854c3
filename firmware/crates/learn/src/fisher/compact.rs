//! Compact storage of the accumulated Fisher `F_old` between tasks.
//!
//! BECAME needs the Fisher only through its merge coefficient
//!
//! `α = Σₚ F_cur,p Δₚ² / Σₚ (F_cur,p + F_old,p) Δₚ²`,  `Δ = θ̂ − θ_GP`,
//!
//! so a stored `F_old` enters α only through the one weighted sum `D = Σₚ F_old,p Δₚ²`. To first order
//! `Δα = −α(1 − α) · δD / D`: what a format must keep is the **mass** of `F_old` (sums of entries over any set of
//! parameters), not each entry's value. Per-entry errors that are unbiased average out over the ~10⁵ parameters;
//! a bias of the same sign everywhere does not, and it compounds because `F_old` is re-quantized after every
//! task (`F_old ← Q(Q⁻¹(F_old) + F(θ*))`). Every format below is therefore built to be unbiased, not merely
//! close. `F_cur` is transient and stays f32; only `F_old` is stored in one of these formats.
//!
//! Common rules (all formats): entries must be finite and ≥ 0 ([`encode`] refuses anything else); `0` decodes to
//! exactly `0` and every positive entry decodes to a positive value (nothing is flushed to zero, so "this
//! parameter mattered to an old task" is never lost).
//!
//! | format | bits/param | layout |
//! |---|---|---|
//! | [`FisherFormat::F32`] | 32 | raw little-endian f32 |
//! | [`FisherFormat::Bf16`] | 16 | bf16, round to nearest even (8 exponent bits: the f32 range, 8-bit significand) |
//! | [`FisherFormat::F16`] | 16 | f16 of `F · 2^e`, one power-of-two exponent `e` per tensor |
//! | [`FisherFormat::Log8`] | 8 (+1 KiB) | code 0 = zero; codes 1‥255 on a log₂ grid between a per-tensor min and max; each code decodes to the mean of the entries it holds (255 f32 levels per vector) |
//! | [`FisherFormat::Block4`] | 4 (+0.5) | blocks of 64: a 4-bit log code per entry, one f32 scale per block |
//!
//! **f16.** f16's smallest subnormal is 2⁻²⁴ ≈ 6·10⁻⁸ and its smallest normal 2⁻¹⁴ ≈ 6·10⁻⁵, while Fisher entries
//! of an MNIST MLP are typically 10⁻¹⁰‥10⁻²: plain f16 would flush most of them to zero and keep the rest with few
//! significant bits. The whole vector is therefore scaled by a stored power of two `2^e` chosen so that its
//! maximum lands in `[2¹⁴, 2¹⁵)`; the scaling is exact, every entry within 2²⁹ of the maximum keeps f16's full
//! 11-bit significand, and the (rare) entries more than 2⁴⁰ below the maximum, which would still round to zero,
//! are stored as the smallest subnormal instead.
//!
//! **8-bit log.** Codes are assigned on a log₂ grid `g(q) = lo + (q−1)h`, `q = 1‥255`, `h = (hi − lo)/254`, with
//! `hi = log₂ max F` and `lo` as many whole octaves below `hi` as the mass needs: the fewest (at least 8, at most
//! 40, never below `log₂ min F>0`) such that the entries below `2^lo` hold at most 10⁻⁶ of the total mass. Those
//! light-tail entries do not stretch the grid and share code 1: `q = 1 + round((log₂ F − lo)/h)`, clamped to
//! `1‥255`. On the MNIST MLPs this spans about 20 octaves instead of 40, halving the step. Each code then decodes
//! not to its grid point but to the **mean of the entries that received it** (Lloyd's centroid condition on a
//! fixed log grid), stored as a table of 255 f32 levels (1020 bytes per vector, 0.004 bytes per parameter on the
//! MNIST MLPs). So the mass of every code bin is kept exactly (up to one f32 rounding per level): the total
//! mass, and the mass of any set of whole bins, cannot drift under re-quantization task after task, and what is
//! left of the error in `D = Σ F_old Δ²` is the within-bin covariance of `F` with `Δ²` (bins are `h` ≈ 0.16
//! octave wide, ±5.6 %), which has no preferred sign.
//!
//! *Why not a fixed correction.* The first version decoded every code to its grid point shifted by the
//! linear-mean factor of a log-uniform bin (`sinh(a)/a`, `a = h ln2/2`). That is unbiased only if the entries are
//! log-uniform inside each bin; at the top of a Fisher vector, where the density falls steeply and the few
//! largest entries dominate α, it over-states every bin. Measured on the recorded Split-MNIST trajectory of seed 0
//! it gave max |Δα| = 2.2·10⁻³ with mean Δα = −1.1·10⁻³ (a bias, compounding over tasks), missing the 10⁻³ target.
//! The conditional-mean table removes the bias at 1 KiB per vector (max |Δα| 9.0·10⁻⁴ over seeds 0–2, mean Δα
//! +4·10⁻⁵, still on the 40-octave grid); the mass-driven range then halves the step (max 3.7·10⁻⁴). Numbers and
//! commands: `docs/results.md`.
//!
//! **4-bit ([`FisherFormat::Block4`]).** A plain per-tensor 4-bit log code has 15 levels for the whole dynamic
//! range: ≈ 2.7 octaves per step over 40 octaves, i.e. entries off by up to ×2.6, and any bias is multiplied by the
//! number of tasks. The design here:
//!
//! 1. **Blocks of 64 consecutive parameters** (64 inputs of one output unit of a weight matrix, whose Fisher
//!    entries share the unit's `E[δ²]` factor, so a block spans far fewer octaves than the tensor).
//! 2. **Log code relative to the block maximum**: code 0 = zero, code `k = 1‥15` = level `2^(−(15−k)·s)` with a
//!    fixed step of `s = 1` octave, so the levels cover 14 octaves below the block's maximum; smaller entries take
//!    code 1 (they hold < 2⁻¹⁴ of the block's mass each).
//! 3. **A mass-preserving block scale**: the block's f32 scale is `Σ F / Σ level(code)` over the block, so every
//!    block's **sum is stored exactly** (up to one f32 rounding). Since α sees `F_old` only through
//!    `Σ F_old Δ²`, the only error left is the within-block covariance of the rounding errors with `Δ²`, which
//!    has no preferred sign and averages out over the blocks; the block sums, and so the total mass, also cannot
//!    drift when the vector is re-quantized task after task.
//!
//! 4.5 bits per parameter; see `docs/results.md` ("Compact Fisher: α deviation") for the measured |Δα| of every
//! format on Permuted-MNIST and Split-MNIST, and for the variants that were tried and dropped.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use edgelearn_core::error::{Error, Result};
use edgelearn_store::{FISHER_F32LE, FisherBlob, inconsistent};

/// How the accumulated Fisher `F_old` is stored between tasks (chosen by the board profile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FisherFormat {
    /// 32-bit float, lossless (the reference).
    #[default]
    F32,
    /// bfloat16 (f32's exponent range, 8-bit significand).
    Bf16,
    /// IEEE half precision of the vector scaled by one stored power of two.
    F16,
    /// 8-bit log-scale code, per-tensor range, each code decoding to the mean of its entries.
    Log8,
    /// 4-bit log code relative to each 64-entry block's maximum, with a mass-preserving f32 scale per block.
    #[serde(rename = "q4", alias = "block4")]
    Block4,
}

impl FisherFormat {
    /// Every format, widest first.
    pub const ALL: [FisherFormat; 5] =
        [FisherFormat::F32, FisherFormat::Bf16, FisherFormat::F16, FisherFormat::Log8, FisherFormat::Block4];

    /// The name used on the command line, in board profiles and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FisherFormat::F32 => "f32",
            FisherFormat::Bf16 => "bf16",
            FisherFormat::F16 => "f16",
            FisherFormat::Log8 => "log8",
            FisherFormat::Block4 => "q4",
        }
    }

    /// Bytes an encoded vector of `n` entries occupies: codes plus per-tensor and per-block parameters
    /// (exactly [`CompactFisher::bytes`] of any encoding of `n` entries).
    pub fn storage_bytes(self, n: usize) -> usize {
        match self {
            FisherFormat::F32 => 4 * n,
            FisherFormat::Bf16 => 2 * n,
            FisherFormat::F16 => 2 * n + 4,
            FisherFormat::Log8 => n + 8 + 4 * LOG8_LEVELS,
            FisherFormat::Block4 => n.div_ceil(2) + 4 * n.div_ceil(Q4_BLOCK),
        }
    }
}

impl fmt::Display for FisherFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FisherFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(FisherFormat::F32),
            "bf16" => Ok(FisherFormat::Bf16),
            "f16" | "fp16" => Ok(FisherFormat::F16),
            "log8" | "8bit" | "u8" => Ok(FisherFormat::Log8),
            "q4" | "block4" | "4bit" => Ok(FisherFormat::Block4),
            other => Err(Error::Config(format!("unknown Fisher format '{other}' (f32, bf16, f16, log8, q4)"))),
        }
    }
}

/// Entries per block of [`FisherFormat::Block4`].
pub const Q4_BLOCK: usize = 64;
/// Octaves between neighbouring levels of [`FisherFormat::Block4`] (15 levels span 14 steps below the block max).
const Q4_STEP: f64 = 1.0;
/// [`FisherFormat::Log8`]: number of non-zero codes (and of stored levels).
const LOG8_LEVELS: usize = 255;
/// [`FisherFormat::Log8`]: the grid spans at most this many octaves below the maximum.
const LOG8_MAX_OCTAVES: f64 = 40.0;
/// [`FisherFormat::Log8`]: the grid spans at least this many octaves below the maximum (when the data does).
const LOG8_MIN_OCTAVES: f64 = 8.0;
/// [`FisherFormat::Log8`]: the entries below the grid hold at most this share of the total mass.
const LOG8_TAIL_MASS: f64 = 1e-6;
/// [`FisherFormat::F16`]: the scaled maximum lands in `[2^F16_TOP, 2^(F16_TOP+1))`.
const F16_TOP: i32 = 14;

/// A Fisher vector in one of the [`FisherFormat`]s, exactly as it would be kept in the device's state.
///
/// Deserializing checks the layout (lengths, scales, that every entry decodes to a finite non-negative value), so
/// [`CompactFisher::decode`] cannot fail on a value that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCompactFisher")]
pub struct CompactFisher {
    format: FisherFormat,
    len: usize,
    /// Per-tensor parameters: F16 `[e]` (the scale exponent); Log8 `[lo, hi]` (log₂ of the grid ends); else none.
    header: Vec<f32>,
    /// Per-block scales (Block4: one per [`Q4_BLOCK`] entries); Log8: the decoded level of codes 1‥255; else none.
    scales: Vec<f32>,
    /// The codes: little-endian f32/bf16/f16 words, one byte per entry (Log8) or two 4-bit codes per byte, low
    /// nibble first (Block4).
    codes: Vec<u8>,
}

/// The serialized form of [`CompactFisher`], checked before it becomes one.
#[derive(Deserialize)]
struct RawCompactFisher {
    format: FisherFormat,
    len: usize,
    header: Vec<f32>,
    scales: Vec<f32>,
    codes: Vec<u8>,
}

impl TryFrom<RawCompactFisher> for CompactFisher {
    type Error = Error;

    fn try_from(r: RawCompactFisher) -> Result<Self> {
        let c = CompactFisher { format: r.format, len: r.len, header: r.header, scales: r.scales, codes: r.codes };
        c.validate()?;
        Ok(c)
    }
}

fn check_entries(values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        Some(i) => Err(Error::NonFinite(format!("Fisher entry {i} = {}: must be finite and non-negative", values[i]))),
        None => Ok(()),
    }
}

/// Largest entry (0 for an empty or all-zero vector); entries are known to be finite and ≥ 0.
fn max_entry(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, &v| m.max(v))
}

/// Encode a Fisher vector (every entry finite and ≥ 0) in `format`.
///
/// The encodings, with `F` the input and `F̂ = decode(encode(F))`:
/// * F32: `F̂ = F`.
/// * Bf16: `F̂ = bf16(F)` (round to nearest even), relative error ≤ 2⁻⁸ for normal values.
/// * F16: `e = 14 − ⌊log₂ max F⌋`, `F̂ = f16(F · 2^e) · 2^(−e)`; relative error ≤ 2⁻¹¹ for `F ≥ 2⁻²⁹ max F`.
/// * Log8: `q = 1 + round((log₂ F − lo)/h)` (clamped to 1‥255; `lo` from the mass, see the module docs),
///   `h = (hi − lo)/254`, `F̂ = L(q)` with `L(q)` the mean of the entries
///   given code `q` (the grid point `2^(lo + (q−1)h)` for an unused code), so every code's sum is kept; relative
///   error ≤ `2^h − 1` for entries within the grid.
/// * Block4: per block `b` of 64, `q = 15 − clamp(round(log₂(max_b F / F)), 0, 14)`, level `L(q) = 2^(q−15)`,
///   scale `S_b = Σ_b F / Σ_b L(q)`, `F̂ = S_b L(q)`, so `Σ_b F̂ = Σ_b F`.
///
/// In every format `F = 0 ⇔ F̂ = 0`. Errors on NaN, ±∞ or negative entries, and on vectors longer than `u32::MAX`.
pub fn encode(values: &[f32], format: FisherFormat) -> Result<CompactFisher> {
    check_entries(values)?;
    if u32::try_from(values.len()).is_err() {
        return Err(Error::Config(format!("Fisher vector of {} entries is too long to store", values.len())));
    }
    let mut c = CompactFisher { format, len: values.len(), header: Vec::new(), scales: Vec::new(), codes: Vec::new() };
    match format {
        FisherFormat::F32 => {
            c.codes = values.iter().flat_map(|&v| (v + 0.0).to_le_bytes()).collect();
        }
        FisherFormat::Bf16 => {
            c.codes = values
                .iter()
                .flat_map(|&v| {
                    let v = v + 0.0; // -0 → +0
                    let b = bf16::from_f32(v);
                    let b = if v > 0.0 && b.to_f32() == 0.0 { bf16::from_bits(1) } else { b };
                    b.to_bits().to_le_bytes()
                })
                .collect();
        }
        FisherFormat::F16 => {
            let e = f16_exponent(max_entry(values));
            let s = 2f64.powi(e);
            c.header = vec![e as f32];
            c.codes = values
                .iter()
                .flat_map(|&v| {
                    let v = v + 0.0; // -0 → +0
                    let h = f16::from_f64(f64::from(v) * s);
                    let h = if v > 0.0 && h.to_f64() == 0.0 { f16::from_bits(1) } else { h };
                    h.to_bits().to_le_bytes()
                })
                .collect();
        }
        FisherFormat::Log8 => {
            let (lo, hi) = log8_range(values);
            c.header = vec![lo as f32, hi as f32];
            let (lo, hi) = (f64::from(c.header[0]), f64::from(c.header[1]));
            let h = (hi - lo) / 254.0;
            c.codes = values
                .iter()
                .map(|&v| {
                    if v == 0.0 {
                        0
                    } else if h == 0.0 {
                        1
                    } else {
                        (1.0 + ((f64::from(v).log2() - lo) / h).round()).clamp(1.0, 255.0) as u8
                    }
                })
                .collect();
            let mut sum = [0.0f64; LOG8_LEVELS];
            let mut count = [0u32; LOG8_LEVELS];
            for (&v, &q) in values.iter().zip(&c.codes) {
                if q > 0 {
                    sum[usize::from(q - 1)] += f64::from(v);
                    count[usize::from(q - 1)] += 1;
                }
            }
            c.scales = (0..LOG8_LEVELS)
                .map(|k| {
                    let level = if count[k] > 0 { sum[k] / f64::from(count[k]) } else { (lo + k as f64 * h).exp2() };
                    // A positive mean stays positive (the mean of tiny subnormals could round to 0).
                    let level = level as f32;
                    if level > 0.0 && level.is_finite() {
                        level
                    } else if level > 0.0 {
                        f32::MAX
                    } else {
                        f32::from_bits(1)
                    }
                })
                .collect();
        }
        FisherFormat::Block4 => {
            let (scales, codes) = q4_encode(values, Q4_BLOCK, Q4_STEP);
            c.scales = scales;
            c.codes = codes;
        }
    }
    Ok(c)
}

/// `e` such that `max · 2^e ∈ [2^F16_TOP, 2^(F16_TOP+1))` (0 for an all-zero vector).
fn f16_exponent(max: f32) -> i32 {
    if max <= 0.0 {
        return 0;
    }
    let m = f64::from(max);
    let mut e = F16_TOP - m.log2().floor() as i32;
    // log2 may be off by one ulp next to a power of two: settle the exponent exactly.
    while m * 2f64.powi(e) >= 2f64.powi(F16_TOP + 1) {
        e -= 1;
    }
    while m * 2f64.powi(e) < 2f64.powi(F16_TOP) {
        e += 1;
    }
    e
}

/// `(lo, hi)` of the Log8 grid in log₂ units: `hi = log₂ max F`; `lo` the largest whole number of octaves below `hi`
/// (at least [`LOG8_MIN_OCTAVES`], at most [`LOG8_MAX_OCTAVES`]) such that the entries below `2^lo` hold at most
/// [`LOG8_TAIL_MASS`] of the total mass, and never below `log₂ min F>0`. The grid's 255 codes thus cover the range
/// that carries the mass; the light tail below shares code 1, whose level is its mean.
fn log8_range(values: &[f32]) -> (f64, f64) {
    let (mut mn, mut mx) = (f32::INFINITY, 0.0f32);
    for &v in values.iter().filter(|v| **v > 0.0) {
        mn = mn.min(v);
        mx = mx.max(v);
    }
    if mx == 0.0 {
        return (0.0, 0.0);
    }
    let hi = f64::from(mx).log2();
    // Mass per whole octave below the maximum (the last bucket holds everything further down).
    const BUCKETS: usize = LOG8_MAX_OCTAVES as usize;
    let mut mass = [0.0f64; BUCKETS];
    let mut total = 0.0f64;
    for &v in values.iter().filter(|v| **v > 0.0) {
        let k = ((hi - f64::from(v).log2()).floor().max(0.0) as usize).min(BUCKETS - 1);
        mass[k] += f64::from(v);
        total += f64::from(v);
    }
    // Smallest octave count whose tail (everything ≥ that many octaves down) is light enough.
    let mut tail = 0.0;
    let mut octaves = LOG8_MAX_OCTAVES;
    for k in (LOG8_MIN_OCTAVES as usize..BUCKETS).rev() {
        tail += mass[k];
        if tail > LOG8_TAIL_MASS * total {
            break;
        }
        octaves = k as f64;
    }
    (f64::from(mn).log2().max(hi - octaves), hi)
}

/// Block4 encoder with a given block size and level step (octaves); returns (scales, packed codes).
fn q4_encode(values: &[f32], block: usize, step: f64) -> (Vec<f32>, Vec<u8>) {
    let mut codes = vec![0u8; values.len().div_ceil(2)];
    let mut scales = Vec::with_capacity(values.len().div_ceil(block));
    for (b, chunk) in values.chunks(block).enumerate() {
        let m = max_entry(chunk);
        if m == 0.0 {
            scales.push(0.0);
            continue;
        }
        let lm = f64::from(m).log2();
        let (mut sum, mut sum_levels) = (0.0f64, 0.0f64);
        for (j, &v) in chunk.iter().enumerate() {
            if v == 0.0 {
                continue;
            }
            let down = ((lm - f64::from(v).log2()) / step).round().clamp(0.0, 14.0);
            let q = 15 - down as u8;
            sum += f64::from(v);
            sum_levels += q4_level(q, step);
            let i = b * block + j;
            codes[i / 2] |= q << (4 * (i % 2));
        }
        // Σ levels ≥ 1 (the maximum takes level 1), so the scale is finite and > 0.
        let s = (sum / sum_levels) as f32;
        scales.push(if s > 0.0 { s } else { f32::from_bits(1) });
    }
    (scales, codes)
}

/// Level of 4-bit code `q` (1‥15) relative to the block scale: `2^(−(15−q)·step)`.
fn q4_level(q: u8, step: f64) -> f64 {
    (-(f64::from(15 - q)) * step).exp2()
}

impl CompactFisher {
    /// The stored form (the state file's [`FisherBlob`]): [`FISHER_F32LE`] for f32 (plain values), otherwise
    /// tagged with the format's name (`bf16`, `f16`, `log8`, `q4`) and holding the postcard encoding of `self`.
    pub fn to_blob(&self) -> Result<FisherBlob> {
        if self.format() == FisherFormat::F32 {
            return Ok(FisherBlob::from_f32(&self.decode()));
        }
        let bytes = postcard::to_allocvec(self).map_err(|e| Error::Config(format!("encoding the Fisher: {e}")))?;
        Ok(FisherBlob { format: self.format().name().to_string(), entries: self.len() as u64, bytes })
    }

    /// The inverse of [`CompactFisher::to_blob`]; every format checks its layout while decoding (a corrupt blob is
    /// [`Error::CorruptState`]).
    pub fn from_blob(blob: &FisherBlob) -> Result<Self> {
        if blob.format == FISHER_F32LE {
            return encode(&blob.to_f32()?, FisherFormat::F32);
        }
        let format: FisherFormat =
            blob.format.parse().map_err(|_| inconsistent(format!("unknown Fisher blob format {:?}", blob.format)))?;
        let c: Self = postcard::from_bytes(&blob.bytes).map_err(|e| inconsistent(format!("{format} Fisher: {e}")))?;
        if c.format() != format || c.len() as u64 != blob.entries {
            return Err(inconsistent(format!("{format} Fisher blob holds {} entries in {}", c.len(), c.format())));
        }
        Ok(c)
    }
}

impl CompactFisher {
    /// The format this vector is stored in.
    pub fn format(&self) -> FisherFormat {
        self.format
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of storage: the codes plus every per-tensor and per-block parameter (4 bytes each). The entry count
    /// and the format tag are not counted: the model and the state header already carry them.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * (self.header.len() + self.scales.len())
    }

    /// [`Self::bytes`] per entry (0 for an empty vector).
    pub fn bytes_per_param(&self) -> f64 {
        if self.len == 0 { 0.0 } else { self.bytes() as f64 / self.len as f64 }
    }

    /// The stored vector as f32: the inverse maps listed at [`encode`] (`F̂`). Zeros decode to exactly 0, every
    /// other code to a finite positive value.
    pub fn decode(&self) -> Vec<f32> {
        let n = self.len;
        match self.format {
            FisherFormat::F32 => {
                self.codes.chunks_exact(4).map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
            }
            FisherFormat::Bf16 => {
                self.codes.chunks_exact(2).map(|w| bf16::from_bits(u16::from_le_bytes([w[0], w[1]])).to_f32()).collect()
            }
            FisherFormat::F16 => {
                let s = 2f64.powi(-(self.header[0] as i32));
                self.codes
                    .chunks_exact(2)
                    .map(|w| (f16::from_bits(u16::from_le_bytes([w[0], w[1]])).to_f64() * s) as f32)
                    .collect()
            }
            FisherFormat::Log8 => {
                self.codes.iter().map(|&q| if q == 0 { 0.0 } else { self.scales[usize::from(q - 1)] }).collect()
            }
            FisherFormat::Block4 => {
                let mut out = vec![0.0f32; n];
                for (b, chunk) in out.chunks_mut(Q4_BLOCK).enumerate() {
                    let s = f64::from(self.scales[b]);
                    for (j, o) in chunk.iter_mut().enumerate() {
                        let i = b * Q4_BLOCK + j;
                        let q = (self.codes[i / 2] >> (4 * (i % 2))) & 0xF;
                        if q != 0 {
                            *o = (s * q4_level(q, Q4_STEP)) as f32;
                        }
                    }
                }
                out
            }
        }
    }

    /// Check the layout of a value that came from outside (deserialization).
    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("compact Fisher ({}): {what}", self.format)));
        let n = self.len;
        let (codes, header, scales) = match self.format {
            FisherFormat::F32 => (4 * n, 0, 0),
            FisherFormat::Bf16 => (2 * n, 0, 0),
            FisherFormat::F16 => (2 * n, 1, 0),
            FisherFormat::Log8 => (n, 2, LOG8_LEVELS),
            FisherFormat::Block4 => (n.div_ceil(2), 0, n.div_ceil(Q4_BLOCK)),
        };
        if self.codes.len() != codes || self.header.len() != header || self.scales.len() != scales {
            return bad("wrong number of codes, header values or block scales");
        }
        if !self.header.iter().chain(&self.scales).all(|v| v.is_finite()) {
            return bad("non-finite header value or block scale");
        }
        if self.scales.iter().any(|s| *s < 0.0) {
            return bad("negative block scale");
        }
        match self.format {
            FisherFormat::F16 if self.header[0].fract() != 0.0 || self.header[0].abs() > 300.0 => {
                return bad("scale exponent is not a small integer");
            }
            FisherFormat::Log8 if self.header[0] > self.header[1] => return bad("log range lo > hi"),
            FisherFormat::Log8 if self.scales.iter().any(|&l| l <= 0.0) => return bad("a level is not positive"),
            _ => {}
        }
        check_entries(&self.decode()).or_else(|_| bad("an entry decodes to a negative or non-finite value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_err(a: f32, b: f32) -> f64 {
        (f64::from(a) - f64::from(b)).abs() / f64::from(a).abs().max(f64::from(b).abs())
    }

    /// A Fisher-like vector: log-uniform over `octaves` octaves below `top`, with some exact zeros.
    fn fisher_like(n: usize, top: f32, octaves: f64, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let mut rng = edgelearn_core::seeded_rng(seed);
        (0..n)
            .map(|i| if i % 7 == 3 { 0.0 } else { (f64::from(top) * (-rng.random_range(0.0..octaves)).exp2()) as f32 })
            .collect()
    }

    fn hand_vectors() -> Vec<Vec<f32>> {
        vec![
            vec![],
            vec![0.0; 5],
            vec![0.0, 1e-12, 0.0, 3.5e-7, 2.0e-3, 0.25, 0.0],
            vec![1e-12; 3],
            vec![3.0e30, 1.0e25, 0.0, 7.0e20, 1.0],
            vec![1e-38, 1e-30, 0.0, 5e-20],
            fisher_like(Q4_BLOCK * 3 + 17, 0.3, 30.0, 1),
            fisher_like(1001, 2e-4, 12.0, 2),
        ]
    }

    #[test]
    fn names_round_trip() {
        for f in FisherFormat::ALL {
            assert_eq!(f.name().parse::<FisherFormat>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<FisherFormat>(&json).unwrap(), f);
        }
        assert_eq!("block4".parse::<FisherFormat>().unwrap(), FisherFormat::Block4);
        assert!("int3".parse::<FisherFormat>().is_err());
        assert_eq!(FisherFormat::default(), FisherFormat::F32);
    }

    #[test]
    fn zeros_stay_zero_and_positives_stay_positive() {
        for f in FisherFormat::ALL {
            for v in hand_vectors() {
                let d = encode(&v, f).unwrap().decode();
                assert_eq!(d.len(), v.len(), "{f}");
                for (i, (&x, &y)) in v.iter().zip(&d).enumerate() {
                    assert!(y.is_finite() && y >= 0.0, "{f}: entry {i} decoded to {y}");
                    assert_eq!(x == 0.0, y == 0.0, "{f}: entry {i} = {x} decoded to {y}");
                    if x == 0.0 {
                        assert_eq!(y.to_bits(), 0, "{f}: zero must decode to +0 exactly");
                    }
                }
            }
        }
    }

    #[test]
    fn f32_is_lossless() {
        for v in hand_vectors() {
            assert_eq!(encode(&v, FisherFormat::F32).unwrap().decode(), v);
        }
    }

    #[test]
    fn half_formats_keep_their_significand() {
        for v in hand_vectors() {
            let max = max_entry(&v);
            let b = encode(&v, FisherFormat::Bf16).unwrap().decode();
            let h = encode(&v, FisherFormat::F16).unwrap().decode();
            for (i, &x) in v.iter().enumerate() {
                if x >= 1e-37 {
                    assert!(rel_err(x, b[i]) <= 2f64.powi(-8), "bf16 {x} → {}", b[i]);
                }
                if x > 0.0 && f64::from(x) >= f64::from(max) * 2f64.powi(-29) {
                    assert!(rel_err(x, h[i]) <= 2f64.powi(-11), "f16 {x} → {} (max {max})", h[i]);
                }
            }
        }
        // Plain f16 would flush 1e-12 to zero and overflow 3e30; the scaled one keeps both.
        let h = encode(&[1e-12, 3e-12], FisherFormat::F16).unwrap().decode();
        assert!(rel_err(1e-12, h[0]) < 1e-3 && rel_err(3e-12, h[1]) < 1e-3, "{h:?}");
        let h = encode(&[3e30, 1e30], FisherFormat::F16).unwrap().decode();
        assert!(rel_err(3e30, h[0]) < 1e-3 && rel_err(1e30, h[1]) < 1e-3, "{h:?}");
        // More than 2^40 below the maximum: kept as the smallest subnormal, not zero.
        let h = encode(&[1.0, 1e-20], FisherFormat::F16).unwrap().decode();
        assert!(h[1] > 0.0 && h[1] < 1e-11, "{h:?}");
    }

    #[test]
    fn log8_error_is_within_one_step() {
        for v in hand_vectors() {
            let c = encode(&v, FisherFormat::Log8).unwrap();
            let d = c.decode();
            let (lo, hi) = (f64::from(c.header[0]), f64::from(c.header[1]));
            let h = (hi - lo) / 254.0;
            // An entry and its code's mean lie in the same bin, h octaves wide (code 1 also holds the entries
            // below the grid, so it is left out), plus f32 storage of lo/hi.
            let bound = h.exp2() - 1.0 + 1e-5;
            for (&x, &y) in v.iter().zip(&d) {
                if x > 0.0 && f64::from(x).log2() > lo + h {
                    assert!(rel_err(x, y) <= bound, "log8 {x} → {y}, bound {bound}");
                }
            }
        }
        // Over 12 octaves a bin is 12/254 octave: entries within 3.3 %.
        let v = fisher_like(1001, 2e-4, 12.0, 2);
        let d = encode(&v, FisherFormat::Log8).unwrap().decode();
        assert!(v.iter().zip(&d).all(|(&x, &y)| x == 0.0 || rel_err(x, y) < 0.033));
    }

    #[test]
    fn log8_keeps_the_mass_of_every_code() {
        // Heavy-tailed data (not log-uniform inside a bin): every code's sum is kept, so any bias is gone.
        let v: Vec<f32> = fisher_like(20_000, 1.0, 30.0, 7).iter().map(|x| x * x * x).collect();
        let c = encode(&v, FisherFormat::Log8).unwrap();
        let d = c.decode();
        let mut sums = vec![(0.0f64, 0.0f64); 256];
        for ((&x, &y), &q) in v.iter().zip(&d).zip(&c.codes) {
            sums[usize::from(q)].0 += f64::from(x);
            sums[usize::from(q)].1 += f64::from(y);
        }
        for (q, (a, b)) in sums.iter().enumerate() {
            assert!((a - b).abs() <= 1e-6 * a.abs() + 1e-30, "code {q}: mass {a} → {b}");
        }
        // Re-encoding the decoded vector keeps the levels of the entries it holds.
        let again = encode(&d, FisherFormat::Log8).unwrap().decode();
        let (s1, s2): (f64, f64) =
            d.iter().zip(&again).fold((0.0, 0.0), |(a, b), (&x, &y)| (a + f64::from(x), b + f64::from(y)));
        assert!((s2 / s1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn log8_is_unbiased_on_log_uniform_data() {
        let v = fisher_like(50_000, 1.0, 30.0, 3);
        let d = encode(&v, FisherFormat::Log8).unwrap().decode();
        let (s, sd): (f64, f64) =
            v.iter().zip(&d).fold((0.0, 0.0), |(a, b), (&x, &y)| (a + f64::from(x), b + f64::from(y)));
        assert!((sd / s - 1.0).abs() < 2e-4, "log8 total mass off by {}", sd / s - 1.0);
    }

    #[test]
    fn block4_keeps_every_block_sum_and_a_factor_of_sqrt2_per_entry() {
        for v in hand_vectors() {
            let d = encode(&v, FisherFormat::Block4).unwrap().decode();
            for (cv, cd) in v.chunks(Q4_BLOCK).zip(d.chunks(Q4_BLOCK)) {
                let s: f64 = cv.iter().map(|&x| f64::from(x)).sum();
                let sd: f64 = cd.iter().map(|&x| f64::from(x)).sum();
                assert!((sd - s).abs() <= 1e-6 * s, "block sum {s} → {sd}");
                let m = f64::from(max_entry(cv));
                // Entries within the 14 octaves of levels are off by at most half a step (√2) times the block's
                // scale correction; the scale correction itself is within a factor √2.
                for (&x, &y) in cv.iter().zip(cd) {
                    if x > 0.0 && f64::from(x) >= m * 2f64.powi(-14) {
                        let r = f64::from(y) / f64::from(x);
                        assert!((0.49..=2.01).contains(&r), "q4 {x} → {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn tail_block_and_all_zero_blocks() {
        let mut v = vec![0.0f32; Q4_BLOCK * 2 + 5];
        v[Q4_BLOCK * 2 + 4] = 0.5;
        for f in FisherFormat::ALL {
            let c = encode(&v, f).unwrap();
            let d = c.decode();
            assert_eq!(d.len(), v.len());
            assert!(d[..Q4_BLOCK * 2 + 4].iter().all(|&y| y == 0.0));
            assert!(rel_err(0.5, d[Q4_BLOCK * 2 + 4]) < 0.01, "{f}: {}", d[Q4_BLOCK * 2 + 4]);
        }
    }

    #[test]
    fn rejects_nan_inf_and_negatives() {
        for f in FisherFormat::ALL {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1e-30, -2.0] {
                let e = encode(&[0.5, bad, 0.1], f).unwrap_err();
                assert!(matches!(e, Error::NonFinite(_)), "{f}: {e}");
                assert!(e.to_string().contains("entry 1"), "{e}");
            }
            // -0.0 is zero.
            assert_eq!(encode(&[-0.0, 1.0], f).unwrap().decode()[0].to_bits(), 0);
        }
    }

    #[test]
    fn bytes_accounting() {
        for n in [0usize, 1, 2, 63, 64, 65, 129, 89_400, 268_800] {
            let v = fisher_like(n, 1.0, 20.0, n as u64);
            for f in FisherFormat::ALL {
                let c = encode(&v, f).unwrap();
                assert_eq!(c.bytes(), f.storage_bytes(n), "{f}, n = {n}");
                assert_eq!(c.len(), n);
            }
        }
        assert_eq!(FisherFormat::F32.storage_bytes(1000), 4000);
        assert_eq!(FisherFormat::Bf16.storage_bytes(1000), 2000);
        assert_eq!(FisherFormat::F16.storage_bytes(1000), 2004);
        // 1000 codes + lo/hi + 255 levels.
        assert_eq!(FisherFormat::Log8.storage_bytes(1000), 2028);
        // 500 code bytes + 16 blocks × 4-byte scale.
        assert_eq!(FisherFormat::Block4.storage_bytes(1000), 564);
        let c = encode(&fisher_like(64_000, 1.0, 20.0, 9), FisherFormat::Block4).unwrap();
        assert!((c.bytes_per_param() - 0.5625).abs() < 1e-12);
        assert_eq!(encode(&[], FisherFormat::Log8).unwrap().bytes_per_param(), 0.0);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        for f in FisherFormat::ALL {
            let c = encode(&fisher_like(200, 0.1, 20.0, 4), f).unwrap();
            let json = serde_json::to_string(&c).unwrap();
            let back: CompactFisher = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            assert_eq!(back.decode(), c.decode());
        }
        let c = encode(&[1.0, 2.0, 3.0], FisherFormat::Log8).unwrap();
        let mut j: serde_json::Value = serde_json::to_value(&c).unwrap();
        j["codes"] = serde_json::json!([1, 2]);
        assert!(serde_json::from_value::<CompactFisher>(j).is_err(), "truncated codes accepted");
        let c = encode(&[1.0, 2.0], FisherFormat::F32).unwrap();
        let mut j: serde_json::Value = serde_json::to_value(&c).unwrap();
        j["codes"] = serde_json::json!((-1.0f32).to_le_bytes().iter().chain(&1.0f32.to_le_bytes()).collect::<Vec<_>>());
        assert!(serde_json::from_value::<CompactFisher>(j).is_err(), "negative entry accepted");
    }

    #[test]
    fn requantizing_a_decoded_vector_is_stable() {
        // Re-encoding what was decoded (the device's load → store cycle with nothing added) must not drift.
        for f in FisherFormat::ALL {
            let v = fisher_like(5_000, 1e-3, 25.0, 5);
            let once = encode(&v, f).unwrap().decode();
            let mut again = once.clone();
            for _ in 0..5 {
                again = encode(&again, f).unwrap().decode();
            }
            let (s1, s5): (f64, f64) =
                once.iter().zip(&again).fold((0.0, 0.0), |(a, b), (&x, &y)| (a + f64::from(x), b + f64::from(y)));
            assert!((s5 / s1 - 1.0).abs() < 1e-4, "{f}: mass drifts by {} over 5 re-encodings", s5 / s1 - 1.0);
        }
    }
}
