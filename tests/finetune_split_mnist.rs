//! Fine-tuning over the real Split-MNIST stream through the host simulator: the accuracy matrix is complete,
//! the task just learned is learned well, and earlier tasks are forgotten to some degree (no protection).

use firmware::method::FineTune;
use firmware::train::Silent;
use host::runs::presets::Preset;
use host::runs::simulate;

#[test]
fn finetune_on_split_mnist_learns_each_task_and_forgets_some() {
    let mut preset = Preset::named("split-mnist", None).unwrap();
    preset.train.epochs = 1;
    let stream = integration::real_stream(&preset, 0);
    assert_eq!(stream.tasks.len(), 5);
    let model = preset.model.build(&stream, 0).unwrap();
    let mut method = FineTune::new(preset.train.clone());
    let (result, _) = simulate::run(&stream, model, &mut method, 0, &mut Silent).unwrap();
    let m = &result.matrix;
    assert_eq!(m.rows.len(), 5);
    for (i, row) in m.rows.iter().enumerate() {
        assert_eq!(row.len(), 5);
        assert!(row[i] > 0.9, "task {i} accuracy right after learning it is {}", row[i]);
    }
    // Untrained 2-way heads are near chance.
    assert!(m.random_init.iter().all(|&a| a < 0.8), "random init accuracies {:?}", m.random_init);
    let s = result.summary;
    assert!(s.acc > 0.5 && s.acc <= 1.0);
    assert!(s.bwt <= 0.0 + 1e-9, "fine-tuning should not improve old tasks on average, bwt {}", s.bwt);
    // max over earlier rows ≥ the diagonal, so forgetting ≥ −BWT.
    assert!(s.forgetting >= -s.bwt - 1e-9);
    // Same seed, same result: the whole run is deterministic.
    let model = preset.model.build(&stream, 0).unwrap();
    let mut method = FineTune::new(preset.train.clone());
    let (again, _) = simulate::run(&stream, model, &mut method, 0, &mut Silent).unwrap();
    assert_eq!(again.matrix, result.matrix);
}
