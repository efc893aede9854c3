//! Deterministic synthetic learner states: the same `(generation, scale)` always gives the same state, so a test
//! can tell from the generation alone what a slot must contain (the kill test, fuzz seeds, unit tests).

use super::state::{
    BasisState, ClassEntry, FisherBlob, FleetState, InboxLedger, LayerSlot, LearnerState, LedgerFile, MetricsHistory,
    ModelDesc, ParamEntry, ReplaySeen, ReplayState, SldaState, TaskEntry,
};

/// splitmix64: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A finite value in [-1, 1) derived from `(generation, stream, i)`.
fn value(generation: u64, stream: u64, i: u64) -> f32 {
    let h = mix(generation ^ mix(stream.wrapping_mul(0x1_0000_0001) ^ mix(i)));
    ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A consistent state for `generation` whose size grows with `scale` (≈ `scale · 8 · 9 · 4` bytes of parameters
/// and as many of Fisher; `scale = 0` gives a tiny state) and varies a little with the generation, so that
/// consecutive generations have different lengths.
pub fn synthetic(generation: u64, scale: usize) -> LearnerState {
    let n_in = 2 + 8 * scale as u32;
    let hidden = 3 + (generation % 5) as u32;
    let heads = 2u32;
    let outputs = 2u32;
    let mut layout = Vec::new();
    let mut offset = 0u64;
    let mut push = |name: String, shape: Vec<u32>| {
        let len: u64 = shape.iter().map(|&d| u64::from(d)).product();
        layout.push(ParamEntry { name, shape, offset });
        offset += len;
    };
    push("trunk.0.weight".into(), vec![hidden, n_in]);
    push("trunk.0.bias".into(), vec![hidden]);
    for h in 0..heads {
        push(format!("head.{h}.weight"), vec![outputs, hidden]);
        push(format!("head.{h}.bias"), vec![outputs]);
    }
    let params: Vec<f32> = (0..offset).map(|i| value(generation, 1, i)).collect();
    let k = (generation % 3) as u32;
    let bases = vec![BasisState {
        layer: LayerSlot::Trunk(0),
        rows: n_in,
        cols: k,
        data: (0..u64::from(n_in * k)).map(|i| value(generation, 2, i)).collect(),
    }];
    let fisher: Vec<f32> = (0..offset).map(|i| value(generation, 3, i).abs()).collect();
    let tasks_done = (generation % 4) as u32 + 1;
    let classes: Vec<ClassEntry> =
        (0..tasks_done * outputs).map(|c| ClassEntry { id: c, name: format!("class-{c}") }).collect();
    let tasks = (0..tasks_done)
        .map(|t| TaskEntry {
            id: t,
            name: format!("task {t} @ gen {generation}"),
            head: t % heads,
            classes: (0..outputs).map(|j| t * outputs + j).collect(),
        })
        .collect();
    let accuracy = (0..tasks_done)
        .map(|i| (0..tasks_done).map(|j| f64::from(value(generation, 4, u64::from(i * 16 + j)).abs())).collect())
        .collect();
    let metrics = MetricsHistory {
        accuracy,
        random_init: vec![0.5; tasks_done as usize],
        alphas: (0..tasks_done).map(|t| (t > 0).then(|| f64::from(value(generation, 5, u64::from(t)).abs()))).collect(),
        basis_sizes: (0..tasks_done).map(|t| vec![t.min(k)]).collect(),
    };
    LearnerState {
        generation,
        model: ModelDesc {
            arch: "synthetic".into(),
            input_shape: vec![n_in],
            trunk: vec!["linear".into(), "relu".into()],
            head_outputs: vec![outputs; heads as usize],
        },
        params,
        layout,
        bases,
        fisher: Some(FisherBlob::from_f32(&fisher)),
        tasks,
        classes,
        metrics,
        inbox: InboxLedger {
            samples_learned: generation.saturating_mul(3),
            files: (0..tasks_done.min(3))
                .map(|i| LedgerFile {
                    class: format!("c{i}"),
                    name: format!("img-{generation}-{i}.png"),
                    len: u64::from(i) * 100 + generation % 1000,
                    crc: value(generation, 6, u64::from(i)).to_bits(),
                })
                .collect(),
        },
        replay: {
            // Two stored samples per class seen so far, of the model's input width.
            let classes = tasks_done * outputs;
            let labels: Vec<u32> = (0..2 * classes).map(|i| i / 2).collect();
            ReplayState {
                features: n_in,
                values: (0..labels.len() as u64 * u64::from(n_in)).map(|i| value(generation, 7, i)).collect(),
                labels,
                seen: (0..classes).map(|class| ReplaySeen { class, seen: 2 + generation % 7 }).collect(),
            }
        },
        slda: {
            // Two-wide statistics for every class seen so far, and a trained head of as many rows.
            let classes = u64::from(tasks_done * outputs);
            (classes > 0).then(|| SldaState {
                dim: 2,
                means: (0..2 * classes).map(|i| f64::from(value(generation, 8, i))).collect(),
                counts: (0..classes).map(|c| 1 + c + generation).collect(),
                sigma: (0..4).map(|i| f64::from(value(generation, 9, i))).collect(),
                updates: classes + generation,
                train_weight: (0..2 * classes).map(|i| value(generation, 10, i)).collect(),
                train_bias: (0..classes).map(|i| value(generation, 11, i)).collect(),
            })
        },
        fleet: generation
            .is_multiple_of(2)
            .then_some(FleetState { model_version: generation / 2, learned_generation: generation }),
    }
}
