//! Minimal reproducers for the two tract 0.23.9 behaviours behind the frozen-prefix gap to onnxruntime
//! (docs/upstream/tract-frozen-prefix.md; the ONNX files come from docs/upstream/tract_repro.py). Uses tract-onnx alone,
//! as released, so the program can be filed upstream as it is:
//!
//! ```sh
//! cargo run --release -p edgelearn-onnx --example tract_repro -- plan downsample_nhwc.onnx   # symbolic batch
//! cargo run --release -p edgelearn-onnx --example tract_repro -- time maxpool_2x2_s2.onnx 200
//! ```
//!
//! `plan FILE`: load with the file's symbolic batch, `into_optimized`, print the error or the plan's op counts.
//! `time FILE REPS`: optimise with the file's (concrete) input shape, run REPS times on uniform [-1, 1] input,
//! print the median milliseconds per run.

use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tract_repro plan FILE | time FILE REPS";
    let (Some(cmd), Some(file)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let model = tract_onnx::onnx().model_for_path(file)?;
    match cmd.as_str() {
        "plan" => match model.into_optimized() {
            Ok(m) => {
                let mut ops: Vec<String> = m.nodes().iter().map(|n| n.op().name().to_string()).collect();
                ops.sort();
                ops.dedup();
                println!("optimised: {} nodes ({})", m.nodes().len(), ops.join(", "));
            }
            Err(e) => println!("into_optimized failed: {e:#}"),
        },
        "time" => {
            let reps: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(100);
            let plan = model.into_optimized()?.into_runnable()?;
            let fact = plan.model().input_fact(0)?.clone();
            let shape: Vec<usize> = fact.shape.as_concrete().map(<[usize]>::to_vec).unwrap_or_default();
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
            let x: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into();
            let mut ms = Vec::with_capacity(reps);
            plan.run(tvec!(x.clone().into()))?;
            for _ in 0..reps {
                let t = Instant::now();
                plan.run(tvec!(x.clone().into()))?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            println!("{file}: median {:.3} ms over {reps} runs", ms[reps / 2]);
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    Ok(())
}
