//! Benchmark of the fleet's traffic and merge (issue 18): the bytes one board's update takes on the wire, per
//! compact Fisher format, and the time of the Fisher-weighted merge ([`firmware::fleet::merge_updates`]) against
//! the number of boards, in one run.
//!
//! The updates are shaped like the real ones: the trainable suffix of a real base model (by default the shipped
//! CNN cut where the demo and the boards cut it, `last:2`: Linear 800→100, ReLU, a head), the base classes `0`–`3`
//! plus two new MNIST classes per board (board `i` learns digits `4 + (2i mod 6)` and `5 + (2i mod 6)`, so the
//! union of classes is at most ten, as on MNIST). The head's input is RanPAC's expansion of the field method
//! (`--random-features`, 2048 on the Jetson profiles; 0: the trunk's own width), and every update carries the SLDA
//! statistics its task added ([`firmware::fleet::SldaSums`], the `d(d+1)/2` scatter triangle in f32 dominating
//! the frame at that width). Board `i`'s parameters are the base's plus a seeded
//! perturbation and its Fisher a seeded positive vector spanning six orders of magnitude: the sizes depend only on
//! the layout and the format, and the merge's cost only on the sizes, not on the values. Every frame is decoded and
//! validated back ([`firmware::fleet::decode_update`]) before it is timed, so what is measured is what a merger
//! accepts.

use std::path::Path;
use std::time::Instant;

use firmware::fisher::{FisherFormat, compact};
use firmware::fleet::{FleetUpdate, SldaSums, decode_update, encode_update, merge_updates};
use firmware::nn::Model;
use firmware::onnx::{Cut, OnnxModel};
use firmware::store::ParamEntry;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest update frame the benchmark accepts (the merger's limit is set by its configuration; 64 MiB covers
/// every board profile's trainable suffix).
pub const MAX_UPDATE_BYTES: usize = 64 << 20;
/// The base model id the simulated boards carry.
const BASE_ID: &str = "bench-base";

/// One compact Fisher format: what an update costs on the wire and to frame and check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatCost {
    /// Fisher format name (`f32`, `bf16`, `f16`, `log8`, `q4`).
    pub format: String,
    /// Bytes of the whole frame (header, postcard payload, CRC).
    pub frame_bytes: usize,
    /// Of which the parameters (4 bytes each).
    pub param_bytes: usize,
    /// Of which the encoded Fisher.
    pub fisher_bytes: usize,
    /// Of which the SLDA statistics (counts, class sums in f64, the scatter triangle in f32).
    pub slda_bytes: usize,
    /// Median seconds to encode (validate, serialise, frame, checksum) one update.
    pub encode_s: f64,
    /// Median seconds to decode and validate one frame.
    pub decode_s: f64,
}

/// The merge of the first `devices` updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeCost {
    /// Boards merged.
    pub devices: usize,
    /// Classes in the merged registry.
    pub classes: usize,
    /// Parameters of the merged model.
    pub params: usize,
    /// Median seconds of [`merge_updates`] (Fisher decoding included).
    pub seconds: f64,
}

/// Everything one `host bench fleet` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetBench {
    /// The base model file and cut the updates are shaped from.
    pub model: String,
    /// The cut.
    pub cut: String,
    /// Parameters in one board's update (trunk + a head of six classes).
    pub params_per_update: usize,
    /// The head's input width (the random-feature width, or the trunk's output).
    pub head_width: usize,
    /// Timed repetitions per figure (the median is reported).
    pub repeat: usize,
    /// Wire cost per Fisher format.
    pub formats: Vec<FormatCost>,
    /// Fisher format of the updates in the merge timings.
    pub merge_format: String,
    /// Merge time per number of boards.
    pub merges: Vec<MergeCost>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn time<T>(repeat: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut v = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        std::hint::black_box(f()?);
        v.push(t.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

/// Board `board`'s update: the trainable suffix `base` with a head of the base classes plus two new ones, its
/// parameters perturbed and its Fisher drawn from a generator seeded by `board` (see the module documentation).
pub fn simulated_update(base: &Model, board: usize, format: FisherFormat, width: usize) -> Result<FleetUpdate> {
    let mut rng = firmware::seeded_rng(0xF1EE7 ^ board as u64);
    let first = 4 + (2 * board) % 6;
    let classes: Vec<String> = (0..4).chain([first, first + 1]).map(|c| c.to_string()).collect();
    let mut layout = Vec::new();
    let mut params = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: &mut dyn Iterator<Item = f32>| -> Result<()> {
        let shape = shape.iter().map(|&d| u32::try_from(d)).collect::<std::result::Result<Vec<_>, _>>();
        let shape = shape.map_err(|_| Error::Invalid(format!("{name}: dimension over u32")))?;
        layout.push(ParamEntry { name, shape, offset: params.len() as u64 });
        params.extend(values);
        Ok(())
    };
    for p in base.params().into_iter().filter(|p| p.name.starts_with("trunk.")) {
        let v: Vec<f32> = p.value.iter().map(|&x| x + 0.01 * rng.random_range(-1.0f32..1.0)).collect();
        push(p.name.clone(), p.value.shape().to_vec(), &mut v.into_iter())?;
    }
    let rows = classes.len();
    let w: Vec<f32> = (0..rows * width).map(|_| rng.random_range(-0.1f32..0.1)).collect();
    push("head.0.weight".into(), vec![rows, width], &mut w.into_iter())?;
    let b: Vec<f32> = (0..rows).map(|_| rng.random_range(-0.1f32..0.1)).collect();
    push("head.0.bias".into(), vec![rows], &mut b.into_iter())?;
    let fisher: Vec<f32> = (0..params.len()).map(|_| 10f32.powf(rng.random_range(-8.0f32..-2.0))).collect();
    let fisher = compact::encode(&fisher, format)?.to_blob()?;
    let counts: Vec<u64> = classes.iter().map(|_| rng.random_range(100u64..200)).collect();
    let t: u64 = counts.iter().sum();
    let slda = SldaSums {
        dim: width as u32,
        classes: classes.clone(),
        sums: (0..rows * width).map(|_| rng.random_range(0.0f64..50.0)).collect(),
        // tΣ positive definite (diagonally dominant): the merge's Cholesky of SLDA's Σ succeeds as on a board.
        scatter: (0..width)
            .flat_map(|i| (i..width).map(move |j| (i, j)))
            .map(|(i, j)| {
                t as f32 * if i == j { rng.random_range(1.0f32..2.0) } else { rng.random_range(-1e-4f32..1e-4) }
            })
            .collect(),
        samples: t,
        counts,
    };
    Ok(FleetUpdate {
        fleet: "bench".into(),
        device: format!("board-{board:02}"),
        generation: 1,
        base_model: BASE_ID.into(),
        layout,
        params,
        fisher,
        classes,
        slda: Some(slda),
    })
}

/// Run the benchmark: every Fisher format's frame size and encode/decode time, then the merge of the first
/// `n` of `devices.max()` updates (in `merge_format`) for every `n` in `devices`, each the median of `repeat`.
pub fn run(
    model: &Path,
    cut: &str,
    devices: &[usize],
    merge_format: FisherFormat,
    repeat: usize,
    random_features: usize,
) -> Result<FleetBench> {
    if devices.is_empty() || devices.contains(&0) {
        return Err(Error::Invalid("--devices needs counts of at least 1".into()));
    }
    let base = OnnxModel::open(model)?.split(&Cut::parse(cut)?)?.trainable;
    let width = match random_features {
        0 => base.heads.first().map(|h| h.in_features()).ok_or_else(|| Error::Invalid("no head".into()))?,
        m => m,
    };
    let mut formats = Vec::new();
    let mut params_per_update = 0;
    for format in FisherFormat::ALL {
        let u = simulated_update(&base, 0, format, width)?;
        params_per_update = u.params.len();
        let frame = encode_update(&u, MAX_UPDATE_BYTES)?;
        let back = decode_update(&frame, MAX_UPDATE_BYTES, &u.device, BASE_ID)
            .map_err(|r| Error::Invalid(format!("the benchmark's own update was refused: {r}")))?;
        if back != u {
            return Err(Error::Invalid("an update does not survive its frame".into()));
        }
        formats.push(FormatCost {
            format: format.to_string(),
            frame_bytes: frame.len(),
            param_bytes: 4 * u.params.len(),
            fisher_bytes: u.fisher.bytes.len(),
            slda_bytes: frame.len() - encode_update(&FleetUpdate { slda: None, ..u.clone() }, MAX_UPDATE_BYTES)?.len(),
            encode_s: time(repeat, || Ok(encode_update(&u, MAX_UPDATE_BYTES)?))?,
            decode_s: time(repeat, || {
                decode_update(&frame, MAX_UPDATE_BYTES, &u.device, BASE_ID).map_err(|r| Error::Invalid(r.to_string()))
            })?,
        });
    }
    let most = devices.iter().copied().max().unwrap_or(1);
    let updates = (0..most).map(|i| simulated_update(&base, i, merge_format, width)).collect::<Result<Vec<_>>>()?;
    let mut merges = Vec::new();
    for &n in devices {
        let merged = merge_updates(&updates[..n])?;
        merges.push(MergeCost {
            devices: n,
            classes: merged.classes.len(),
            params: merged.params.len(),
            seconds: time(repeat, || Ok(merge_updates(&updates[..n])?))?,
        });
    }
    Ok(FleetBench {
        model: model.display().to_string(),
        cut: cut.to_string(),
        params_per_update,
        head_width: width,
        repeat,
        formats,
        merge_format: merge_format.to_string(),
        merges,
    })
}

/// The two Markdown tables of a run.
pub fn markdown(b: &FleetBench) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "Updates shaped from `{}` cut at `{}`, head input {} wide: {} parameters per update (trunk + a 6-class \
         head); medians of {} runs.\n\n| Fisher format | frame (bytes) | parameters | Fisher | SLDA statistics | \
         encode (ms) | decode + validate (ms) |\n|---|---|---|---|---|---|---|\n",
        b.model, b.cut, b.head_width, b.params_per_update, b.repeat
    );
    for f in &b.formats {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            f.format,
            f.frame_bytes,
            f.param_bytes,
            f.fisher_bytes,
            f.slda_bytes,
            1e3 * f.encode_s,
            1e3 * f.decode_s
        );
    }
    let _ = write!(
        s,
        "\nMerge (`merge_updates`, Fisher in `{}`):\n\n| boards | classes | parameters | merge (ms) | per board (ms) |\n\
         |---|---|---|---|---|\n",
        b.merge_format
    );
    for m in &b.merges {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.3} |",
            m.devices,
            m.classes,
            m.params,
            1e3 * m.seconds,
            1e3 * m.seconds / m.devices as f64
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::presets::shipped_base;

    /// On the shipped model: every format's frame decodes back, the compact formats are smaller than f32, and the
    /// merged registry is the union (ten classes from three boards on).
    #[test]
    fn sizes_shrink_with_the_format_and_the_registry_is_the_union() {
        let b = run(&shipped_base(), "last:2", &[1, 3], FisherFormat::F16, 1, 64).unwrap();
        assert_eq!(b.formats.len(), FisherFormat::ALL.len());
        let f32_bytes = b.formats[0].frame_bytes;
        assert!(b.formats[0].fisher_bytes >= 4 * b.params_per_update);
        for f in &b.formats[1..] {
            assert!(f.frame_bytes < f32_bytes, "{} not smaller than f32", f.format);
        }
        assert_eq!(b.merges.iter().map(|m| m.classes).collect::<Vec<_>>(), [6, 10]);
        assert!(markdown(&b).contains("| 3 | 10 |"));
        assert!(run(&shipped_base(), "last:2", &[0], FisherFormat::F16, 1, 64).is_err());
    }
}
