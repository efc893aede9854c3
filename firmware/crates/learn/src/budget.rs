//! Board profiles (`boards/*.toml`) and the learner's memory budgets.
//!
//! A [`BoardProfile`] names the board's target, glibc, CUDA architecture, how many output classes the learner may
//! grow to, how the accumulated Fisher is stored, and six byte [`Budgets`]: parameters, GPM bases, Fisher,
//! training workspace, one state-file slot and the replay buffer ([`crate::replay`]). The schema is documented in `boards/README.md`; unknown keys are
//! rejected so that a typo does not pass silently.
//!
//! Before every learning step the learner computes a [`Footprint`] — what the step needs in each budget, from the
//! model and the method's state, without allocating any of it — and [`Footprint::check`] refuses the step with
//! [`Error::OverBudget`] (naming the budget and the bytes needed and allowed) **before any state changes**.
//! The check is the learner's, in one place ([`crate::learner::Learner`]: a new learner, a new class, every task,
//! a loaded state; host simulation runs the same learner). The one budget
//! that is enforced by trimming rather than refusal is the bases budget: a GPM basis that would outgrow it keeps
//! its highest-energy directions ([`crate::gpm::Gpm::max_bytes`]) and the energy lost is reported.
//!
//! What the footprint counts (all f32 unless said otherwise; a conservative estimate: phases that do not overlap
//! in time are added, not maxed):
//!
//! | budget | counted |
//! |---|---|
//! | `params` | every trainable scalar, 4 bytes |
//! | `bases` | the GPM bases as they are before the step, `Σ d_in·k · 4` |
//! | `fisher` | what the method keeps between tasks besides bases: `F_old` in its [`FisherFormat`] (BECAME), Fisher and θ_old (EWC, f32) |
//! | `workspace` | gradients (one per parameter), SGD momentum, activations of the largest batch the step runs (training batch, Fisher batch of 64, GPM representation samples) with the caches backward keeps, the transient full-length copies of the method (best-validation copy, θ_GP, θ̂, F_cur, θ*, F(θ*), …), the Fisher estimator's f64 accumulator, the GPM projectors, representation matrices and SVD work arrays |
//! | `state_file` | one slot after the step: frame header and CRC, parameters and their layout, bases at the largest size the bases budget lets them reach, the stored Fisher, plus what the caller adds (registries, metrics, the replay buffer's samples after the step) |
//! | `replay` | the exemplar memory ([`crate::replay::ReplayBuffer`]) at its capacity, `4 · features + 4` bytes a sample; a method's own footprint has none, [`crate::learner::Learner::footprint`] adds it (and the transient copy of the stored samples handed to the method, to `workspace`) |
//!
//! Incoming samples (the learner's fixed-capacity buffer) are allocated once at start and are not part of these
//! budgets; the stored samples of the replay buffer are (`replay`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fisher::{FISHER_BATCH, FisherFormat};
use edgelearn_core::augment::AugmentPolicy;
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Layer, Model};
use edgelearn_store::{CRC_LEN, HEADER_LEN};

pub use edgelearn_core::error::ProfileError;

/// Byte budgets of the learner (`[budget]` of a board profile). Every value is > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Trainable parameters (f32).
    pub params: u64,
    /// GPM bases of all projected layers (f32); a basis that would exceed it keeps its highest-energy directions.
    pub bases: u64,
    /// The accumulated Fisher in the profile's format (and other per-parameter state a method keeps).
    pub fisher: u64,
    /// Activations, gradients and transient copies while learning.
    pub workspace: u64,
    /// One slot of the state store on disk (header, payload and CRC).
    pub state_file: u64,
    /// The replay buffer (exemplar memory) of stored samples, `4 · features + 4` bytes a sample
    /// ([`crate::replay::ReplayBuffer::with_budget`]).
    #[serde(default)]
    pub replay: u64,
}

impl Budgets {
    /// Budgets large enough never to refuse anything (`u64::MAX` each).
    pub const UNLIMITED: Budgets = Budgets {
        params: u64::MAX,
        bases: u64::MAX,
        fisher: u64::MAX,
        workspace: u64::MAX,
        state_file: u64::MAX,
        replay: u64::MAX,
    };

    /// `(name, value)` of each budget in a fixed order (the order [`Footprint::check`] tests them in).
    pub fn entries(&self) -> [(&'static str, u64); 6] {
        [
            ("params", self.params),
            ("bases", self.bases),
            ("fisher", self.fisher),
            ("workspace", self.workspace),
            ("state_file", self.state_file),
            ("replay", self.replay),
        ]
    }

    /// `params + bases + fisher + workspace + replay`: the learner's RAM budget (saturating).
    pub fn ram(&self) -> u64 {
        self.params
            .saturating_add(self.bases)
            .saturating_add(self.fisher)
            .saturating_add(self.workspace)
            .saturating_add(self.replay)
    }
}

/// One board profile (`boards/<name>.toml`); see `boards/README.md` for the schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoardProfile {
    /// The profile's name (equals the file name without `.toml`; letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Rust target triple the firmware is built for.
    pub target: String,
    /// Newest glibc the board's OS ships, `"2.N"`.
    pub glibc_max: String,
    /// NVIDIA JetPack release (`""` for non-Jetson boards).
    pub jetpack: String,
    /// GPU compute capability (`sm_87`, …), `""` without a GPU.
    pub cuda_arch: String,
    /// cudarc CUDA-version feature of the `cuda` backend, `""` when the CPU backend is the only one.
    pub cuda_feature: String,
    /// Most output classes the learner may grow to.
    pub max_classes: usize,
    /// How the accumulated Fisher is stored between tasks.
    pub fisher_format: FisherFormat,
    /// Byte budgets.
    pub budget: Budgets,
    /// Compute threads of the learner (the `threads` key; absent: every core this machine reports). Results do
    /// not depend on it.
    pub threads: usize,
    /// Jittered copies of the photos of a class with few photos (the `[augment]` table; absent: none), added where
    /// the board takes photos in ([`edgelearn_core::augment::expand`]).
    pub augment: AugmentPolicy,
}

/// The file as written, before the checks that turn it into a [`BoardProfile`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    target: String,
    glibc_max: String,
    jetpack: String,
    cuda_arch: String,
    cuda_feature: String,
    max_classes: i64,
    fisher_format: String,
    #[serde(default)]
    threads: Option<i64>,
    budget: RawBudgets,
    #[serde(default)]
    augment: Option<RawAugment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAugment {
    samples_per_class: i64,
    max_variants: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudgets {
    params: i64,
    bases: i64,
    fisher: i64,
    workspace: i64,
    state_file: i64,
    replay: i64,
}

impl BoardProfile {
    /// Read and check a profile file. The file name (without `.toml`) must equal the profile's `name`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io { path: shown.clone(), source })?;
        let profile = Self::parse(&text, &shown)?;
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && path.extension().is_some_and(|e| e == "toml")
            && stem != profile.name
        {
            return Err(ProfileError::Invalid {
                path: shown,
                key: "name",
                reason: format!("{:?} does not match the file name {stem:?}", profile.name),
            }
            .into());
        }
        Ok(profile)
    }

    /// Parse and check a profile from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let raw: RawProfile = toml::from_str(text)
            .map_err(|e| ProfileError::Parse { path: origin.to_string(), message: e.message().trim().to_string() })?;
        let invalid =
            |key: &'static str, reason: String| ProfileError::Invalid { path: origin.to_string(), key, reason };
        let name_ok =
            !raw.name.is_empty() && raw.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(invalid("name", format!("{:?}: use letters, digits, '.', '_' and '-'", raw.name)).into());
        }
        if raw.target.is_empty() || raw.target.split('-').count() < 3 {
            return Err(invalid("target", format!("{:?} is not a target triple", raw.target)).into());
        }
        let glibc_ok = raw
            .glibc_max
            .strip_prefix("2.")
            .is_some_and(|minor| !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit()));
        if !glibc_ok {
            return Err(invalid("glibc_max", format!("{:?} is not of the form \"2.N\"", raw.glibc_max)).into());
        }
        let cuda_ok = raw.cuda_arch.is_empty()
            || raw
                .cuda_arch
                .strip_prefix("sm_")
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()));
        if !cuda_ok {
            return Err(invalid("cuda_arch", format!("{:?} is neither \"\" nor \"sm_NN\"", raw.cuda_arch)).into());
        }
        let max_classes = usize::try_from(raw.max_classes)
            .ok()
            .filter(|&m| m >= 1 && m <= u32::MAX as usize)
            .ok_or_else(|| invalid("max_classes", format!("{} must be between 1 and 2^32 − 1", raw.max_classes)))?;
        let fisher_format = raw.fisher_format.parse::<FisherFormat>().map_err(|_| {
            invalid("fisher_format", format!("{:?}: use f32, bf16, f16, log8 or q4", raw.fisher_format))
        })?;
        let b = &raw.budget;
        let budget_of = |key: &'static str, v: i64| {
            u64::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| invalid(key, format!("{v} must be > 0 bytes")))
        };
        let budget = Budgets {
            params: budget_of("budget.params", b.params)?,
            bases: budget_of("budget.bases", b.bases)?,
            fisher: budget_of("budget.fisher", b.fisher)?,
            workspace: budget_of("budget.workspace", b.workspace)?,
            state_file: budget_of("budget.state_file", b.state_file)?,
            replay: budget_of("budget.replay", b.replay)?,
        };
        let threads = match raw.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(t) => usize::try_from(t)
                .ok()
                .filter(|&t| (1..=1024).contains(&t))
                .ok_or_else(|| invalid("threads", format!("{t} must be between 1 and 1024")))?,
        };
        let augment = match &raw.augment {
            None => AugmentPolicy::OFF,
            Some(a) => AugmentPolicy {
                samples_per_class: usize::try_from(a.samples_per_class).ok().filter(|&v| v <= 1 << 20).ok_or_else(
                    || invalid("augment.samples_per_class", format!("{} must be 0 to 2^20", a.samples_per_class)),
                )?,
                max_variants: usize::try_from(a.max_variants)
                    .ok()
                    .filter(|&v| v <= 1024)
                    .ok_or_else(|| invalid("augment.max_variants", format!("{} must be 0 to 1024", a.max_variants)))?,
            },
        };
        Ok(Self {
            threads,
            augment,
            name: raw.name,
            description: raw.description,
            target: raw.target,
            glibc_max: raw.glibc_max,
            jetpack: raw.jetpack,
            cuda_arch: raw.cuda_arch,
            cuda_feature: raw.cuda_feature,
            max_classes,
            fisher_format,
            budget,
        })
    }
}

/// What one learning step needs in each budget, computed before the step (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    /// Trainable parameters.
    pub params: u64,
    /// GPM bases as they are before the step.
    pub bases: u64,
    /// Per-parameter state the method keeps between tasks (stored Fisher, EWC's θ_old).
    pub fisher: u64,
    /// Peak transient memory of the step (estimate, see the module docs).
    pub workspace: u64,
    /// One state-file slot after the step.
    pub state_file: u64,
    /// The replay buffer at its capacity (0 in a method's own footprint; the learner adds it).
    #[serde(default)]
    pub replay: u64,
}

impl Footprint {
    /// `(name, bytes)` in the order of [`Budgets::entries`].
    pub fn entries(&self) -> [(&'static str, u64); 6] {
        [
            ("params", self.params),
            ("bases", self.bases),
            ("fisher", self.fisher),
            ("workspace", self.workspace),
            ("state_file", self.state_file),
            ("replay", self.replay),
        ]
    }

    /// Refuse with [`Error::OverBudget`] naming the first budget (in [`Budgets::entries`] order) the footprint
    /// exceeds, with the bytes needed and allowed.
    pub fn check(&self, budgets: &Budgets) -> Result<()> {
        for ((budget, needed), (_, limit)) in self.entries().into_iter().zip(budgets.entries()) {
            if needed > limit {
                return Err(Error::OverBudget { budget, needed, limit });
            }
        }
        Ok(())
    }

    /// Every budget this footprint exceeds, as `(name, needed, limit)` (empty when it fits).
    pub fn overruns(&self, budgets: &Budgets) -> Vec<(&'static str, u64, u64)> {
        self.entries()
            .into_iter()
            .zip(budgets.entries())
            .filter(|((_, n), (_, l))| n > l)
            .map(|((name, n), (_, l))| (name, n, l))
            .collect()
    }

    /// `params + bases + fisher + workspace + replay` (saturating).
    pub fn ram(&self) -> u64 {
        self.params
            .saturating_add(self.bases)
            .saturating_add(self.fisher)
            .saturating_add(self.workspace)
            .saturating_add(self.replay)
    }

    /// The footprint of a step described by `plan` on `model` (see the module docs for what is counted).
    pub fn estimate(model: &Model, plan: &StepPlan) -> Result<Self> {
        let n = model.num_params() as u64;
        let shapes = layer_costs(model)?;
        let act_batch = [plan.batch_size, if plan.fisher_pass { FISHER_BATCH } else { 0 }, plan.gpm_samples]
            .into_iter()
            .max()
            .unwrap_or(1)
            .max(1) as u64;
        let per_sample: u64 = shapes.iter().map(|l| l.cached + l.output).sum();
        let widest = shapes.iter().map(|l| l.output.max(l.input)).max().unwrap_or(0);
        // Cached activations of the forward pass, plus two gradient arrays of the widest layer in backward, plus
        // the selected mini-batch itself.
        let activations = act_batch * (per_sample + 2 * widest + model.input_len() as u64);
        let mut workspace = 4 * (n * (1 + u64::from(plan.momentum) + plan.flat_copies as u64) + activations);
        if plan.fisher_pass {
            workspace += 8 * n; // f64 accumulator of the Fisher estimator
        }
        let bases_now: u64 = plan.gpm_layers.iter().map(|&(d, k)| 4 * (d * k) as u64).sum();
        if !plan.gpm_layers.is_empty() {
            let reps = projected_columns(model, &shapes)?;
            // Every projectable trunk layer, plus the head when heads are projected.
            if plan.gpm_layers.len() + 1 < reps.len() || plan.gpm_layers.len() > reps.len() {
                return Err(Error::Config(format!(
                    "footprint: {} GPM layers planned, the model has {} projectable trunk layers",
                    plan.gpm_layers.len(),
                    reps.len() - 1
                )));
            }
            let s = plan.gpm_samples.max(1) as u64;
            // Projectors: a copy of each basis, plus its orthonormal complement when it holds more than half of d.
            let projectors: u64 = plan
                .gpm_layers
                .iter()
                .map(|&(d, k)| {
                    let (d, k) = (d as u64, k as u64);
                    4 * (d * k + if 2 * k > d { d * (d - k) } else { 0 })
                })
                .sum();
            // Representation matrices of all layers (f32), and for the largest layer the SVD's work: an f64 copy,
            // the f32 residual, U and V (f64), faer's scratch (as much again) and the new basis.
            let mut rep_bytes = 0u64;
            let mut svd = 0u64;
            for (&(d, _), &cols) in plan.gpm_layers.iter().zip(&reps) {
                let (d, c) = (d as u64, cols * s);
                let m = d.min(c);
                rep_bytes += 4 * d * c;
                svd = svd.max(8 * d * c + 4 * d * c + 2 * 8 * (d + c) * m + 4 * d * d.min(d + m));
            }
            workspace += projectors + rep_bytes + svd;
        }
        let bases_after = match plan.bases_cap {
            Some(cap) => cap.max(bases_now).min(max_bases_bytes(&plan.gpm_layers)),
            None => max_bases_bytes(&plan.gpm_layers),
        };
        let state_file = state_file_estimate(model, plan.gpm_layers.len(), bases_after, plan.stored_fisher_bytes)?;
        Ok(Self { params: 4 * n, bases: bases_now, fisher: plan.kept_bytes, workspace, state_file, replay: 0 })
    }
}

/// Largest the bases can get: every projected layer at `d_in` columns.
fn max_bases_bytes(layers: &[(usize, usize)]) -> u64 {
    layers.iter().map(|&(d, _)| 4 * (d as u64) * (d as u64)).sum()
}

/// What a method does in one learning step, the input of [`Footprint::estimate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    /// Mini-batch size of its training stages.
    pub batch_size: usize,
    /// SGD momentum > 0 (one velocity per parameter).
    pub momentum: bool,
    /// Transient full-length f32 vectors alive while it learns (best-validation copy, θ_GP, θ̂, F_cur, …).
    pub flat_copies: usize,
    /// Whether it runs the diagonal Fisher estimator (batches of 64, an f64 accumulator per parameter).
    pub fisher_pass: bool,
    /// GPM: `(d_in, k)` of each projected layer's basis before the step (empty without GPM).
    pub gpm_layers: Vec<(usize, usize)>,
    /// GPM: samples in a representation matrix.
    pub gpm_samples: usize,
    /// GPM: the bases budget the bases are trimmed to (`None`: untrimmed, up to `d_in` columns each).
    pub bases_cap: Option<u64>,
    /// Bytes of per-parameter state kept between tasks (stored Fisher, EWC's θ_old): the `fisher` budget line.
    pub kept_bytes: u64,
    /// Bytes of the stored Fisher as it goes into the state file (0 when the method keeps none).
    pub stored_fisher_bytes: u64,
}

/// Per-sample sizes (floats) of one layer during a forward/backward pass.
#[derive(Debug, Clone, Copy, Default)]
struct LayerCost {
    input: u64,
    output: u64,
    /// What the layer keeps for backward (inputs, masks, im2col patches, argmax indices).
    cached: u64,
    /// Columns one sample adds to a GPM representation matrix (Linear: 1, Conv2d: out_h·out_w); 0 otherwise.
    rep_cols: u64,
    projectable: bool,
}

/// Walk the model's shapes (trunk, then the widest head) and cost each layer per sample.
fn layer_costs(model: &Model) -> Result<Vec<LayerCost>> {
    let mut shape = model.input_shape.clone();
    let mut out = Vec::with_capacity(model.trunk.len() + 1);
    for (i, layer) in model.trunk.iter().enumerate() {
        let input: u64 = shape.iter().product::<usize>() as u64;
        let bad = |what: &str| Error::Config(format!("footprint: trunk layer {i} ({what}) gets input {shape:?}"));
        let (next, cached, rep_cols, projectable) = match layer {
            Layer::Linear(l) => (vec![l.out_features()], input, 1, true),
            Layer::Conv2d(c) => {
                let [_, h, w] = shape[..] else { return Err(bad("Conv2d")) };
                let (oh, ow) = c.output_size(h, w)?;
                let positions = (oh * ow) as u64;
                (vec![c.out_channels(), oh, ow], positions * c.patch_len() as u64, positions, true)
            }
            Layer::MaxPool2d(p) => {
                let [ch, h, w] = shape[..] else { return Err(bad("MaxPool2d")) };
                let (oh, ow) = p.output_size(h, w)?;
                // argmax indices are usize: two f32 slots each.
                (vec![ch, oh, ow], 2 * (ch * oh * ow) as u64, 0, false)
            }
            Layer::Flatten(_) => (vec![shape.iter().product()], 0, 0, false),
            // Nothing cached (its backward needs only its fixed matrix) and nothing to project.
            Layer::RandomFeatures(r) => (vec![r.out_features()], 0, 0, false),
            // Its pre-activation is cached for backward (the cosine's slope); nothing to project.
            Layer::RandomFourier(r) => (vec![r.out_features()], r.out_features() as u64, 0, false),
            Layer::Relu(_) | Layer::Dropout(_) => (shape.clone(), input, 0, false),
            Layer::BatchNorm(_) => (shape.clone(), 2 * input, 0, false),
        };
        let output = next.iter().product::<usize>() as u64;
        out.push(LayerCost { input, output, cached, rep_cols, projectable });
        shape = next;
    }
    let input: u64 = shape.iter().product::<usize>() as u64;
    let widest = (0..model.heads.len()).map(|h| model.head_outputs(h)).collect::<Result<Vec<_>>>()?;
    let output = widest.into_iter().max().unwrap_or(0) as u64;
    out.push(LayerCost { input, output, cached: input, rep_cols: 1, projectable: false });
    Ok(out)
}

/// Representation columns per sample of each layer GPM projects, in [`crate::gpm::Gpm::for_model`] order (every
/// projectable trunk layer, then the head when the plan has one more layer than the trunk).
fn projected_columns(model: &Model, costs: &[LayerCost]) -> Result<Vec<u64>> {
    let mut cols: Vec<u64> = costs[..model.trunk.len()].iter().filter(|l| l.projectable).map(|l| l.rep_cols).collect();
    cols.push(1); // the head, used only when heads are projected (the plan then lists one more layer)
    Ok(cols)
}

/// Upper bound of one encoded state slot for `model` with `basis_count` bases of `bases_bytes` in all and a stored
/// Fisher of `fisher_bytes`, before registries and metrics: frame, parameters, layout, model description, bases,
/// Fisher blob. Every postcard length prefix is counted at its largest (10 bytes).
pub fn state_file_estimate(model: &Model, basis_count: usize, bases_bytes: u64, fisher_bytes: u64) -> Result<u64> {
    const VARINT: u64 = 10;
    let infos = model.param_infos();
    let layout: u64 =
        infos.iter().map(|p| VARINT + p.name.len() as u64 + VARINT + VARINT * p.shape.len() as u64 + VARINT).sum();
    let desc: u64 = 4 * VARINT
        + 32
        + VARINT * model.input_shape.len() as u64
        + model.trunk.iter().map(|l| VARINT + l.kind().len() as u64).sum::<u64>()
        + VARINT * model.heads.len() as u64;
    let bases = bases_bytes + basis_count as u64 * (1 + 4 * VARINT);
    let fisher = if fisher_bytes > 0 { 1 + VARINT + 16 + 2 * VARINT + fisher_bytes + 64 } else { 1 };
    let params = VARINT + 4 * model.num_params() as u64;
    Ok((HEADER_LEN + CRC_LEN) as u64 + VARINT + desc + params + VARINT + layout + VARINT + bases + fisher + 4 * VARINT)
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "params {} B, bases {} B, fisher {} B, workspace {} B, state file {} B, replay {} B",
            self.params, self.bases, self.fisher, self.workspace, self.state_file, self.replay
        )
    }
}

#[cfg(test)]
mod tests;
