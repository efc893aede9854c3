//! The stream options `simulate` and `footprint` share ([`StreamArgs`]) and the preset they make.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::data::stream;
use crate::runs::presets::{ModelSpec, Preset, StreamSpec};

/// Which stream a run learns, and the options that change its preset.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Stream: pmnist, split-mnist, split-mnist-ci (class-incremental, growing head), split-fmnist, split-fmnist-ci,
    /// the pre-trained mnist-pt / fmnist-pt (and -ci; see --base) or custom.
    #[arg(long, default_value = "split-mnist")]
    pub(crate) stream: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Number of tasks (pmnist only).
    #[arg(long)]
    pub(crate) tasks: Option<usize>,
    /// Network: mlp:W1,W2[:bias] or lenet (default: the stream's preset).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// One shared head (class-incremental) instead of one head per task (split streams).
    #[arg(long)]
    pub(crate) single_head: bool,
    /// Class-incremental in the field: one shared head that starts with the first task's classes and grows as new
    /// classes arrive (implies --single-head; stream name gets "-ci").
    #[arg(long)]
    pub(crate) grow_head: bool,
    /// Class groups for custom streams, e.g. "0,1;2,3;4,5".
    #[arg(long)]
    pub(crate) groups: Option<String>,
    /// Custom stream: IDX files (train images, train labels, test images, test labels).
    #[arg(long, num_args = 4, value_names = ["TRAIN_IMAGES", "TRAIN_LABELS", "TEST_IMAGES", "TEST_LABELS"])]
    pub(crate) idx: Option<Vec<PathBuf>>,
    /// Override epochs per stage.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Override the learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lr: Option<f32>,
    /// Override the batch size.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Override the EWC penalty strength λ.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) ewc_lambda: Option<f32>,
    /// Pre-trained streams (mnist-pt, fmnist-pt and their -ci forms): the ONNX base model (default: the shipped
    /// models/mnist-cnn-0123.onnx, or `host pretrain`'s output).
    #[arg(long)]
    pub(crate) base: Option<PathBuf>,
    /// Pre-trained streams: where the frozen prefix of the base ends (input: nothing frozen; last:K; a tensor).
    #[arg(long)]
    pub(crate) cut: Option<String>,
    /// Few-shot training: each task keeps only K training samples per class (the first K after the seed's
    /// shuffle; the rest unused); validation and test splits unchanged. The stream's name gets "@K-shot".
    #[arg(long)]
    pub(crate) shots: Option<usize>,
}

/// `--base` / `--cut` on a pre-trained stream's model; an error on any other stream.
pub(crate) fn set_base(p: &mut Preset, base: Option<&PathBuf>, cut: Option<&str>) -> anyhow::Result<()> {
    if base.is_none() && cut.is_none() {
        return Ok(());
    }
    let ModelSpec::Pretrained { path, cut: c } = &mut p.model else {
        bail!("--base and --cut apply to the pre-trained streams (mnist-pt, fmnist-pt and their -ci forms)");
    };
    if let Some(b) = base {
        *path = b.clone();
    }
    if let Some(k) = cut {
        *c = k.to_string();
    }
    Ok(())
}

/// The stream's preset with the options of `a` applied (a custom stream from `--idx` and `--groups`).
pub(crate) fn preset(a: &StreamArgs) -> anyhow::Result<Preset> {
    let mut p = if a.stream == "custom" {
        let files =
            a.idx.clone().context("custom stream needs --idx TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS")?;
        let groups =
            stream::parse_groups(a.groups.as_deref().context("custom stream needs --groups, e.g. \"0,1;2,3\"")?)?;
        let files: [PathBuf; 4] = files.try_into().map_err(|_| anyhow::anyhow!("--idx takes exactly 4 paths"))?;
        let mut p = Preset::named("split-mnist", None)?;
        p.stream = StreamSpec::Custom { files, groups };
        p
    } else {
        Preset::named(&a.stream, a.tasks)?
    };
    if a.single_head || a.grow_head {
        p.multi_head = false;
    }
    if a.grow_head {
        p.grow_head = true;
    }
    if let Some(m) = &a.model {
        p.model = ModelSpec::parse(m)?;
    }
    set_base(&mut p, a.base.as_ref(), a.cut.as_deref())?;
    if let Some(k) = a.shots {
        if k == 0 {
            bail!("--shots must be at least 1");
        }
        p.shots = Some(k);
    }
    if let Some(e) = a.epochs {
        p.train.epochs = e;
    }
    if let Some(lr) = a.lr {
        p.train.lr = lr;
    }
    if let Some(b) = a.batch_size {
        p.train.batch_size = b;
    }
    if let Some(l) = a.ewc_lambda {
        if !(l.is_finite() && l >= 0.0) {
            bail!("--ewc-lambda must be a finite non-negative number, got {l}");
        }
        p.ewc_lambda = l;
    }
    p.train.validate()?;
    Ok(p)
}
