//! Class-incremental Split-MNIST in the field: one head that starts with 2 outputs and grows by 2 per task, learned
//! by GPM+BECAME (compact 8-bit Fisher) under the host-simulation board profile's budgets.

use firmware::budget::{BoardProfile, Budgeted};
use firmware::fisher::FisherFormat;
use firmware::method::Method;
use firmware::train::Silent;
use host::presets::Preset;
use host::{registry, simulate};

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
    let mut method = Budgeted::new(registry::became(&preset, FisherFormat::Log8), profile.budget);
    assert_eq!(method.name(), "gpm+became:log8");
    let (result, model) = simulate::run(&stream, model, &mut method, 0, &mut Silent).unwrap();
    assert_eq!(model.head_outputs(0).unwrap(), 6, "two new outputs per task");
    assert_eq!(method.inner.f_old.len(), model.num_params(), "F_old follows the growing head");
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
