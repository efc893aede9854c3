//! Small hand-made fleet updates for tests (the firmware's own, the host's MQTT test, fuzz seeds): the same
//! arguments always give the same update.

use crate::{FleetUpdate, SldaSums};
use edgelearn_core::error::Result;
use edgelearn_learn::fisher::{FisherFormat, compact};
use edgelearn_store::ParamEntry;

/// An update of `device` in fleet `fleet` from base model `base_model`: a 2×3 trunk layer (`trunk.0.weight`) and
/// a biased head of width 2 with one row per name of `classes`. Parameter `i` is `seed + i/4`, its Fisher
/// `0.5 + (i mod 3)·|seed|`, stored in `format`. Its SLDA sums (width 2): class `k` has `2 + k` samples summing
/// to `(seed + k, generation)`, and `S = [[1 + |seed|, 0.25], [0.25, 2]]·t`.
pub fn update(
    fleet: &str,
    base_model: &str,
    device: &str,
    generation: u64,
    classes: &[&str],
    seed: f32,
    format: FisherFormat,
) -> Result<FleetUpdate> {
    let c = classes.len() as u32;
    let layout = vec![
        ParamEntry { name: "trunk.0.weight".into(), shape: vec![2, 3], offset: 0 },
        ParamEntry { name: "head.0.weight".into(), shape: vec![c, 2], offset: 6 },
        ParamEntry { name: "head.0.bias".into(), shape: vec![c], offset: 6 + 2 * u64::from(c) },
    ];
    let n = 6 + 3 * classes.len();
    let params: Vec<f32> = (0..n).map(|i| seed + i as f32 * 0.25).collect();
    let f: Vec<f32> = (0..n).map(|i| 0.5 + (i % 3) as f32 * seed.abs()).collect();
    let fisher = compact::encode(&f, format)?.to_blob()?;
    let counts: Vec<u64> = (0..classes.len() as u64).map(|k| 2 + k).collect();
    let t: u64 = counts.iter().sum();
    let slda = SldaSums {
        dim: 2,
        classes: classes.iter().map(|s| s.to_string()).collect(),
        counts,
        sums: (0..classes.len()).flat_map(|k| [f64::from(seed) + k as f64, generation as f64]).collect(),
        scatter: [1.0 + seed.abs(), 0.25, 2.0].iter().map(|v| v * t as f32).collect(),
        samples: t,
    };
    Ok(FleetUpdate {
        fleet: fleet.into(),
        device: device.into(),
        generation,
        base_model: base_model.into(),
        layout,
        params,
        fisher,
        classes: classes.iter().map(|s| s.to_string()).collect(),
        slda: Some(slda),
    })
}
