use super::*;
use crate::gpm::GpmConfig;
use crate::method::{Became, FineTune, GpmMethod, LearnContext, Method};
use edgelearn_core::data::TaskData;
use edgelearn_core::nn::zoo;
use edgelearn_core::test_util::tiny_task;
use edgelearn_core::train::{Silent, TrainConfig};

const TINY: &str = r#"
name = "tiny"
description = "2 MiB learner budget"
target = "aarch64-unknown-linux-gnu"
glibc_max = "2.31"
jetpack = ""
cuda_arch = ""
cuda_feature = ""
max_classes = 10
fisher_format = "log8"

[budget]
params = 524288
bases = 786432
fisher = 131072
workspace = 655360
state_file = 1572864
replay = 262144
"#;

fn boards_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../boards")
}

#[test]
fn every_shipped_profile_loads() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(boards_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = BoardProfile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(p.budget.ram() > 0 && p.max_classes >= 1);
            names.push(p.name);
        }
    }
    names.sort();
    for want in ["host-sim", "jetson-nano-4gb", "jetson-orin-nano-8gb", "tiny"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let tiny = BoardProfile::load(boards_dir().join("tiny.toml")).unwrap();
    assert_eq!(
        tiny,
        BoardProfile::parse(TINY, "x").map(|p| BoardProfile { description: tiny.description.clone(), ..p }).unwrap()
    );
    assert_eq!(tiny.fisher_format, FisherFormat::Log8);
    assert_eq!(tiny.budget.workspace, 655_360);
    let nano = BoardProfile::load(boards_dir().join("jetson-nano-4gb.toml")).unwrap();
    assert_eq!(
        (nano.glibc_max.as_str(), nano.cuda_arch.as_str(), nano.fisher_format),
        ("2.27", "sm_53", FisherFormat::F16)
    );
    // The Jetson profiles augment few-shot photos; a profile without the table does not.
    assert_eq!(nano.augment, AugmentPolicy { samples_per_class: 250, max_variants: 24 });
    assert!(tiny.augment.is_off());
}

#[test]
fn the_augment_table_is_checked() {
    let with = |t: &str| format!("{TINY}\n[augment]\n{t}\n");
    let p = BoardProfile::parse(&with("samples_per_class = 100\nmax_variants = 9"), "x").unwrap();
    assert_eq!((p.augment.samples_per_class, p.augment.max_variants), (100, 9));
    for (bad, key) in [
        ("samples_per_class = -1\nmax_variants = 9", "augment.samples_per_class"),
        ("samples_per_class = 100\nmax_variants = 5000", "augment.max_variants"),
    ] {
        let e = parse_err(&with(bad));
        assert!(matches!(&e, ProfileError::Invalid { key: k, .. } if *k == key), "{bad}: {e}");
    }
    let e = parse_err(&with("samples_per_class = 100"));
    assert!(matches!(&e, ProfileError::Parse { message, .. } if message.contains("max_variants")), "{e}");
}

fn parse_err(text: &str) -> ProfileError {
    match BoardProfile::parse(text, "t.toml") {
        Err(Error::Profile(e)) => e,
        other => panic!("expected a profile error, got {other:?}"),
    }
}

#[test]
fn bad_profiles_are_typed_errors() {
    // Not TOML at all.
    assert!(matches!(parse_err("name = "), ProfileError::Parse { .. }));
    // A missing key, an unknown key (top level and in [budget]), a wrong type: named in the message.
    let e = parse_err(&TINY.replace("max_classes = 10\n", ""));
    assert!(matches!(&e, ProfileError::Parse { message, .. } if message.contains("max_classes")), "{e}");
    let e = parse_err(&TINY.replace("jetpack = \"\"", "jetpack = \"\"\nmax_clases = 3"));
    assert!(matches!(&e, ProfileError::Parse { message, .. } if message.contains("max_clases")), "{e}");
    let e = parse_err(&TINY.replace("replay = 262144", "replay = 262144\nswap = 1"));
    assert!(matches!(&e, ProfileError::Parse { message, .. } if message.contains("swap")), "{e}");
    let e = parse_err(&TINY.replace("max_classes = 10", "max_classes = \"ten\""));
    assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
    // Values out of range name their key.
    for (from, to, key) in [
        ("fisher_format = \"log8\"", "fisher_format = \"int3\"", "fisher_format"),
        ("max_classes = 10", "max_classes = 0", "max_classes"),
        ("workspace = 655360", "workspace = 0", "budget.workspace"),
        ("params = 524288", "params = -5", "budget.params"),
        ("glibc_max = \"2.31\"", "glibc_max = \"2.x\"", "glibc_max"),
        ("name = \"tiny\"", "name = \"ti ny\"", "name"),
        ("target = \"aarch64-unknown-linux-gnu\"", "target = \"arm\"", "target"),
        ("cuda_arch = \"\"", "cuda_arch = \"volta\"", "cuda_arch"),
    ] {
        let e = parse_err(&TINY.replace(from, to));
        assert!(matches!(&e, ProfileError::Invalid { key: k, .. } if *k == key), "{to}: {e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // The file name must match the name; a missing file is an I/O error.
    let dir = std::env::temp_dir().join(format!("profile-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("other.toml"), TINY).unwrap();
    let e = BoardProfile::load(dir.join("other.toml")).unwrap_err();
    assert!(matches!(e, Error::Profile(ProfileError::Invalid { key: "name", .. })), "{e}");
    let e = BoardProfile::load(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(e, Error::Profile(ProfileError::Io { .. })), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_names_the_budget_and_the_overrun() {
    let b = Budgets { params: 100, bases: 100, fisher: 100, workspace: 1000, state_file: 5000, replay: 100 };
    let fp = Footprint { params: 100, bases: 0, fisher: 40, workspace: 1234, state_file: 6000, replay: 0 };
    let e = fp.check(&b).unwrap_err();
    assert!(matches!(e, Error::OverBudget { budget: "workspace", needed: 1234, limit: 1000 }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("workspace") && msg.contains("1234") && msg.contains("1000") && msg.contains("234 bytes over"),
        "{msg}"
    );
    assert_eq!(fp.overruns(&b), vec![("workspace", 1234, 1000), ("state_file", 6000, 5000)]);
    assert!(Footprint { workspace: 1000, state_file: 5000, ..fp }.check(&b).is_ok());
    assert!(fp.check(&Budgets::UNLIMITED).is_ok());
}

#[test]
fn footprint_counts_what_each_method_keeps_and_uses() {
    let model = zoo::mlp(784, &[100, 100], &[10], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
    let n = model.num_params() as u64;
    let cfg = TrainConfig::default();
    let gcfg =
        GpmConfig { thresholds: vec![0.95, 0.99, 0.99], threshold_increment: 0.0, samples: 300, project_heads: true };
    let ft = FineTune::new(cfg.clone()).footprint(&model).unwrap();
    let gpm = GpmMethod::new(cfg.clone(), gcfg.clone()).footprint(&model).unwrap();
    let became =
        Became::new(cfg.clone(), gcfg.clone()).with_fisher_format(FisherFormat::Log8).footprint(&model).unwrap();
    assert_eq!(ft.params, 4 * n);
    assert_eq!((ft.bases, ft.fisher), (0, 0));
    assert_eq!(became.fisher, FisherFormat::Log8.storage_bytes(n as usize) as u64);
    // Gradients, best copy and at least one batch of activations.
    assert!(ft.workspace >= 4 * (2 * n + 10 * (784 + 100 + 100 + 10)), "{ft}");
    // GPM adds representations (784×300 f32 at least) and SVD work; BECAME adds its transient vectors on top.
    assert!(gpm.workspace >= ft.workspace + 4 * 784 * 300, "{gpm} vs {ft}");
    assert!(became.workspace >= gpm.workspace + 4 * 8 * n, "{became} vs {gpm}");
    // The state file holds at least the parameters and the Fisher, and the worst-case bases (784² + 2·100²).
    assert!(became.state_file >= 4 * n + became.fisher + 4 * (784 * 784 + 2 * 100 * 100), "{became}");
    // A bases budget caps the bases the state file must hold.
    let mut capped = Became::new(cfg.clone(), gcfg.clone());
    capped.set_bases_budget(Some(1000));
    assert!(capped.footprint(&model).unwrap().state_file < became.state_file - 4 * 784 * 700);
    // The tiny profile's 640 KiB workspace does not fit GPM+BECAME on this MLP, and says by how much.
    let tiny = BoardProfile::parse(TINY, "tiny").unwrap();
    let e = became.check(&tiny.budget).unwrap_err();
    assert!(
        matches!(e, Error::OverBudget { budget: "workspace", needed, limit: 655_360 } if needed == became.workspace)
    );
    // Conv nets: im2col patches are counted.
    let lenet = zoo::lenet([1, 28, 28], 100, &[10], &mut edgelearn_core::seeded_rng(0)).unwrap();
    let f = FineTune::new(cfg).footprint(&lenet).unwrap();
    assert!(f.workspace > 4 * 10 * 24 * 24 * 25, "{f}");
}

#[test]
fn a_trimmed_basis_reports_the_energy_lost() {
    let cfg = TrainConfig { epochs: 1, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
    let gcfg = GpmConfig { thresholds: vec![0.999], threshold_increment: 0.0, samples: 1000, project_heads: false };
    let (tr1, va1) = tiny_task(1, 0, 64);
    let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
    let run = |budget: Option<u64>| {
        let mut model = zoo::mlp(6, &[8], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let mut m = GpmMethod::new(cfg.clone(), gcfg.clone());
        m.set_bases_budget(budget);
        let mut rng = edgelearn_core::seeded_rng(7);
        let r = m
            .learn_task(&mut model, &t1, &mut LearnContext { rng: &mut rng, progress: &mut Silent, replay: None })
            .unwrap();
        (r, m.gpm.unwrap())
    };
    let (free, g_free) = run(None);
    assert!(free.basis_energy_lost.iter().all(|&e| e == 0.0));
    let k_free = g_free.bases[0].ncols();
    assert!(k_free >= 3, "need a few directions to trim, got {k_free}");
    // Room for two 6-dim directions: the two leading ones are kept, the rest reported lost.
    let (trim, g_trim) = run(Some(2 * 6 * 4));
    assert_eq!(g_trim.bases[0].ncols(), 2);
    assert!(g_trim.bytes() as u64 <= 48);
    let lost = trim.basis_energy_lost[0];
    assert!(lost > 0.0 && lost < 1.0, "{lost}");
    for j in 0..2 {
        let same = (0..6).all(|i| (g_trim.bases[0][[i, j]] - g_free.bases[0][[i, j]]).abs() < 1e-6);
        assert!(same, "direction {j} is not the untrimmed basis's direction {j}");
    }
    // The energy lost is what the dropped directions would have captured.
    let reps = {
        let mut model = zoo::mlp(6, &[8], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let g = crate::gpm::Gpm::for_model(&model, gcfg.clone()).unwrap();
        g.representations(&mut model, &t1, &mut edgelearn_core::seeded_rng(1)).unwrap()
    };
    let r = &reps[0];
    let full = crate::gpm::captured_energy(&g_free.bases[0], &r.view());
    let kept = crate::gpm::captured_energy(&g_trim.bases[0], &r.view());
    assert!((full - kept - lost).abs() < 1e-3, "full {full} kept {kept} lost {lost}");
}
