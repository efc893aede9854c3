//! The preprocessing spec that travels with a model (`edgelearn-preprocess/1`, `models/README.md`,
//! "Preprocessing specs"): a JSON document in the ONNX file's metadata (`edgelearn.preprocess`) or beside it
//! (`<model>.preprocess.json`). The board's inbox, the host's checks and the exported model's check read it
//! through [`Preprocess::from_spec`], so a photo becomes the same model input everywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Preprocess, side};
use crate::error::{Error, Result};

/// The spec's `format` value this reader understands.
pub const SPEC_FORMAT: &str = "edgelearn-preprocess/1";
/// The ONNX metadata key that holds the spec inside the model file.
pub const SPEC_METADATA_KEY: &str = crate::onnx::INPUT_SPEC_KEY;

#[derive(Deserialize)]
struct RawSpec {
    format: String,
    layout: String,
    height: usize,
    width: usize,
    channels: String,
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
    alpha: String,
    resize: RawResize,
    crop: String,
}

#[derive(Deserialize)]
struct RawResize {
    height: usize,
    width: usize,
    fit: String,
    filter: String,
}

impl Preprocess {
    /// Parse a spec (`origin` names it in errors). Informational fields (`model`, `input`, `output`, `features`,
    /// `notes`) are not read. Every value this reader does not implement — another format version, layout,
    /// channel order, alpha rule, fit, filter or crop — and every out-of-range number is an [`Error::Config`]
    /// naming the field, never a silently different preprocessing.
    pub fn from_spec(text: &str, origin: &str) -> Result<Self> {
        let bad = |field: &str, why: String| Error::Config(format!("preprocessing spec {origin}: {field}: {why}"));
        let raw: RawSpec = serde_json::from_str(text).map_err(|e| bad("JSON", e.to_string()))?;
        if raw.format != SPEC_FORMAT {
            return Err(bad("format", format!("{:?}, this firmware reads {SPEC_FORMAT:?}", raw.format)));
        }
        let channels_last = match raw.layout.as_str() {
            "NCHW" => false,
            "NHWC" => true,
            other => return Err(bad("layout", format!("{other:?} (NCHW or NHWC)"))),
        };
        let (channels, bgr) = match raw.channels.as_str() {
            "grey" => (1, false),
            "RGB" => (3, false),
            "BGR" => (3, true),
            other => return Err(bad("channels", format!("{other:?} (grey, RGB or BGR)"))),
        };
        let (Some(height), Some(width)) = (side(raw.height), side(raw.width)) else {
            return Err(bad("height/width", format!("{} × {} (1 to {})", raw.height, raw.width, super::MAX_SIDE)));
        };
        let r = &raw.resize;
        let (Some(rh), Some(rw)) = (side(r.height), side(r.width)) else {
            return Err(bad("resize", format!("{} × {}", r.height, r.width)));
        };
        if rh < height || rw < width {
            return Err(bad("resize", format!("{rh} × {rw} is smaller than the {height} × {width} crop")));
        }
        if r.fit != "stretch" {
            return Err(bad("resize.fit", format!("{:?} (stretch)", r.fit)));
        }
        if r.filter != "triangle" {
            return Err(bad("resize.filter", format!("{:?} (triangle)", r.filter)));
        }
        if raw.crop != "center" {
            return Err(bad("crop", format!("{:?} (center)", raw.crop)));
        }
        let background = match raw.alpha.as_str() {
            "black" => 0,
            "white" => 255,
            other => return Err(bad("alpha", format!("{other:?} (black or white)"))),
        };
        if !(raw.scale.is_finite() && raw.scale > 0.0) {
            return Err(bad("scale", format!("{} (finite, > 0)", raw.scale)));
        }
        let per_channel = |name: &str, v: &[f32], positive: bool| -> Result<[f32; 3]> {
            let ok = v.len() == channels && v.iter().all(|x| x.is_finite() && (!positive || *x > 0.0));
            if !ok {
                return Err(bad(
                    name,
                    format!("{v:?}: {channels} finite value(s){}", if positive { ", > 0" } else { "" }),
                ));
            }
            Ok(std::array::from_fn(|c| v[c.min(channels - 1)]))
        };
        Ok(Self {
            channels,
            height,
            width,
            scale: raw.scale,
            mean: per_channel("mean", &raw.mean, false)?,
            std: per_channel("std", &raw.std, true)?,
            background,
            resize: (rh, rw),
            bgr,
            channels_last,
        })
    }

    /// The spec of the model at `model`: the one embedded in the file (`embedded`, its
    /// [`SPEC_METADATA_KEY`] metadata), else the file `<model without .onnx>.preprocess.json` beside it; `None`
    /// when there is neither. Returns the spec and where it came from.
    pub fn discover(model: &Path, embedded: Option<&str>) -> Result<Option<(Self, String)>> {
        if let Some(text) = embedded {
            let origin = format!("{} (metadata {SPEC_METADATA_KEY})", model.display());
            return Ok(Some((Self::from_spec(text, &origin)?, origin)));
        }
        let sidecar = sidecar_path(model);
        match std::fs::read_to_string(&sidecar) {
            Ok(text) => {
                let origin = sidecar.display().to_string();
                Ok(Some((Self::from_spec(&text, &origin)?, origin)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { context: format!("reading {}", sidecar.display()), source }),
        }
    }
}

/// `dir/name.onnx` → `dir/name.preprocess.json`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().to_string());
    model.with_file_name(format!("{stem}.preprocess.json"))
}
