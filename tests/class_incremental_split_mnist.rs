//! Class-incremental Split-MNIST in the field: one head that starts with 2 outputs and grows by 2 per task, learned
//! by GPM+BECAME (compact 8-bit Fisher) under the host-simulation board profile's budgets.

use firmware::budget::BoardProfile;
use firmware::fisher::FisherFormat;
use firmware::method::Method;
use firmware::train::Silent;
use host::runs::presets::Preset;
use host::runs::{registry, simulate};

#[test]
fn gpm_became_learns_classes_into_a_growing_head() {
    let mut preset = Preset::named("split-mnist-ci", None).unwrap();
    preset.train.epochs = 1;
    let mut stream = integration::real_stream(&preset, 0);
    assert_eq!(stream.name, "split-mnist-ci");
    stream.tasks.truncate(3);
    let model = preset.build_model(&stream, 0).unwrap();
    assert_eq!(model.head_outputs(0).unwrap(), 2, "the head starts with the first task's classes");
    let profile = BoardProfile::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../boards/host-sim.toml")).unwrap();
    let mut method = registry::became(&preset, FisherFormat::Log8);
    assert_eq!(method.name(), "gpm+became:log8");
    let cfg = simulate::RunConfig { profile, replay: Some(0), as_board: false };
    let (result, model) = simulate::run_with(&stream, model, &mut method, 0, &cfg, &mut Silent).unwrap();
    assert_eq!(model.head_outputs(0).unwrap(), 6, "two new outputs per task");
    assert_eq!(method.f_old.len(), model.num_params(), "F_old follows the growing head");
    let m = &result.matrix;
    for (i, row) in m.rows.iter().enumerate() {
        assert!(row[i] > 0.85, "task {i} right after learning it: {}", row[i]);
        assert!(row[i + 1..].iter().all(|&a| a == 0.0), "classes not seen yet cannot be predicted: {row:?}");
    }
    // Every merge happened with a resized F_old.
    assert!(result.reports[1].alpha.is_some() && result.reports[2].alpha.is_some());
    // Class-incremental without replay is hard (fine-tuning keeps only the last task: ACC ≈ 1/3 here); the merged
    // model keeps something of the old tasks.
    assert!(result.summary.acc > 0.3, "ACC {}", result.summary.acc);
}

/// `host simulate --board B --method field` computes what board B's daemon computes on the same samples, bit for
/// bit: the daemon ([`firmware::daemon::Device`], the shipped CNN cut where the daemon cuts it, the Jetson Nano
/// profile) learns digits 4/5 then 6/7 from raw MNIST images sent one by one; the simulation feeds the same images
/// (through the same preprocessing and frozen prefix) as a two-task stream to [`simulate::run_with`] under
/// [`simulate::RunConfig::board`]. Parameters, α and basis sizes must be identical.
#[test]
fn simulate_with_a_board_is_what_the_daemon_computes() {
    use firmware::daemon::{Config, Device};
    use firmware::data::Samples;
    use firmware::protocol::Image;
    use firmware::train::TrainConfig;
    use host::data::stream::{Stream, StreamTask};

    const PER_CLASS: usize = 40;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let board = root.join("boards/jetson-nano-4gb.toml");
    let state = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("parity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut cfg = Config::new(&board, root.join("models/mnist-cnn-0123.onnx"), &state);
    (cfg.epochs, cfg.batch, cfg.lr, cfg.seed) = (2, 10, 0.01, 7);
    let (norm, train) = (cfg.norm, TrainConfig { epochs: 2, batch_size: 10, lr: 0.01, ..TrainConfig::default() });
    let mut device = Device::open(cfg).unwrap();

    // Real MNIST images of the new digits, interleaved by class, as the bytes a camera would send.
    let dir = host::data::data_dir().join("mnist");
    let ds = host::data::load_mnist(&dir)
        .unwrap_or_else(|e| panic!("real MNIST is needed for this test ({e}); run `bash scripts/fetch-data.sh`"));
    let image = |i: usize| {
        let pixels =
            ds.train_x.row(i).into_iter().map(|&v| ((v * norm.1 + norm.0) * 255.0).round().clamp(0.0, 255.0) as u8);
        Image { width: 28, height: 28, channels: 1, pixels: pixels.collect() }
    };
    let rows_of =
        |c: usize| ds.train_y.iter().enumerate().filter(move |&(_, &y)| y == c).map(|(i, _)| i).take(PER_CLASS);
    let tasks: Vec<Vec<(usize, Image)>> = [[4, 5], [6, 7]]
        .iter()
        .map(|pair| {
            let (a, b): (Vec<usize>, Vec<usize>) = (rows_of(pair[0]).collect(), rows_of(pair[1]).collect());
            a.iter().zip(&b).flat_map(|(&i, &j)| [(pair[0], image(i)), (pair[1], image(j))]).collect()
        })
        .collect();

    // The daemon.
    let mut device_alphas = Vec::new();
    for task in &tasks {
        for (c, img) in task {
            device.add_sample(&c.to_string(), img).unwrap();
        }
        device_alphas.push(device.learn().unwrap().alpha);
    }

    // The simulation: the same images through the same preprocessing and prefix, one at a time like the daemon.
    let (base, pre) = (device.base(), device.preprocess());
    let features = |task: &[(usize, Image)]| {
        let rows: Vec<Vec<f32>> = task
            .iter()
            .map(|(_, img)| {
                let x = pre.from_raw(img).unwrap();
                let x = ndarray::Array2::from_shape_vec((1, x.len()), x).unwrap();
                base.features(&x.view()).unwrap().into_raw_vec_and_offset().0
            })
            .collect();
        let x = ndarray::Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).unwrap();
        Samples::new(x, task.iter().map(|(c, _)| *c).collect()).unwrap()
    };
    let empty = |f: &Samples| f.select(&[]);
    let stream_tasks: Vec<StreamTask> = tasks
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let train = features(t);
            let (val, test) = (empty(&train), train.clone());
            StreamTask { id, name: format!("task {id}"), classes: vec![t[0].0, t[1].0], head: 0, train, val, test }
        })
        .collect();
    let stream = Stream {
        name: "parity".into(),
        channels: 1,
        rows: 1,
        cols: 1,
        multi_head: false,
        head_sizes: vec![4],
        tasks: stream_tasks,
    };
    let mut preset = Preset::named("split-mnist-ci", None).unwrap();
    preset.train = train;
    let profile = BoardProfile::load(&board).unwrap();
    let mut method = registry::build("field", &preset, &profile).unwrap();
    assert_eq!(method.name(), device.learner().method().name());
    let seed = 7u64.wrapping_sub(simulate::LEARNER_SEED);
    let cfg = simulate::RunConfig::board(profile);
    let (result, model) =
        simulate::run_with(&stream, base.trainable.clone(), method.as_mut(), seed, &cfg, &mut Silent).unwrap();

    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let learned = device.learner().model();
    assert_eq!(model.head_outputs(0).unwrap(), 8);
    assert_eq!(bits(model.flat_params()), bits(learned.flat_params()), "simulation and daemon parameters differ");
    let sim_alphas: Vec<Option<f64>> = result.reports.iter().map(|r| r.alpha).collect();
    assert_eq!(sim_alphas, device_alphas);
    let basis: Vec<Vec<u32>> =
        result.reports.iter().map(|r| r.basis_sizes.iter().map(|&k| k as u32).collect()).collect();
    assert_eq!(basis, device.learner().metrics().basis_sizes);
    let _ = std::fs::remove_dir_all(&state);
}
