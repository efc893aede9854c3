//! Class-incremental pieces of GPM and BECAME (one growing head, no task id at test time; issue 17).
//!
//! With one shared head, training on a task's new classes alone pushes every old input towards the new logits.
//! BECAME's unconstrained stage 2 learns exactly that bias and one global α keeps a share of it. The options here
//! change what the stages see and what the merge covers, one at a time, so that each can be measured:
//!
//! - **labels trick** ([`edgelearn_core::train::TrainConfig::labels_trick`]): the loss of a task is taken over the classes
//!   its training data contains only; old classes' head rows get no gradient from the new task's data.
//! - **head merge** ([`HeadMerge`]): BECAME's α over every parameter (the paper), or one α per group: the trunk, the
//!   head rows of the task's classes ("new rows") and the other head rows ("old rows"), each group's α the same
//!   closed form ([`crate::merge::became_alpha`]) over that group's parameters only; or old rows kept at θ_GP.
//! - **weight aligning** (Zhao et al., CVPR 2020): after the merge the new rows are scaled so that their mean norm
//!   is the old rows' mean norm, `w_c ← γ w_c` for every new class `c`, `γ = mean_{old} ‖w‖ / mean_{new} ‖w‖`. It
//!   needs no stored data.
//! - **replay** (the exemplar memory, [`crate::method::LearnContext::replay`]): stored samples of earlier classes
//!   are added to the training data of stage 2 (unprojected), and optionally of stage 1.
//! - **balanced head fine-tuning** on the stored samples and as many samples per class of the current task: after
//!   the merge, only the head is trained, which corrects the new-class bias with the memory (EEIL, Castro et al.,
//!   ECCV 2018).
//! - **random features** (`rp<M>`, RanPAC, McDonnell et al., NeurIPS 2023, eq. 5): a frozen Gaussian projection of
//!   the trunk's output to `M` features and a ReLU before the head ([`ensure_random_features`]), added before the
//!   first task; with the SLDA head (`slda`) the classes that one shared covariance separates badly over the
//!   trunk's features separate over `M` of them (split-mnist-ci: 89.1 → 92.7 % at `M` = 2048, docs/results.md).
//!
//! **Replay under projection.** GPM's stage 1 projects every weight gradient onto the orthogonal complement of the
//! old tasks' input spans. An old sample's input lies mostly inside that span, so the projected gradient of a
//! replayed sample keeps only its small out-of-span part: projected replay can barely correct old classes, and it
//! cannot break GPM's guarantee (the update still lies in the complement). Replay therefore acts where nothing is
//! projected: stage 2, whose moves the merge weighs with α, and the balanced head fine-tuning, which changes the
//! head only and leaves every trunk feature (and so the bases' meaning) as it was. Replay in stage 1
//! ([`ClassIl::replay_stage1`]) is offered to measure what projected replay keeps.

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::Model;
use edgelearn_core::train::{GradHook, TrainConfig, class_mask, train};

use super::LearnContext;
use super::prototype::{
    ClassMeans, Shrinkage, SldaStats, compensate_drift, compensate_drift_from_task, ensure_head_bias,
    ensure_random_features, feature_means, parse_random_features, shaped_with_random_features, slda_refit,
    trunk_features,
};
use super::skip::ensure_identity_skip;

/// What BECAME's merge covers with one α ([`crate::merge::became_alpha`] over each group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadMerge {
    /// One α over every parameter, heads included (the paper).
    #[default]
    Global,
    /// One α for the trunk, one for the new rows of the head; old rows kept at θ_GP.
    KeepOld,
    /// One α each for the trunk, the new rows and the old rows.
    Split,
}

/// The class-incremental options of a GPM or BECAME run (all off: the methods as published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassIl {
    /// What the merge covers with one α (BECAME only).
    pub head_merge: HeadMerge,
    /// Scale the new head rows to the old rows' mean norm after the merge (weight aligning).
    pub weight_align: bool,
    /// Replay the stored samples in stage 1 (projected).
    pub replay_stage1: bool,
    /// Replay the stored samples in stage 2 (unprojected; BECAME only).
    pub replay_stage2: bool,
    /// Fine-tune the head alone on a class-balanced set (the stored samples and as many per class of the task's
    /// own) after the merge.
    pub balanced_head: bool,
    /// After each task, write the head as streaming LDA over the trained trunk's features
    /// ([`crate::method::prototype::slda_refit`]).
    pub slda_head: bool,
    /// With `slda_head`: move the stored class means by the drift the stored samples' features show over the task
    /// ([`crate::method::prototype::compensate_drift`]).
    pub drift: bool,
    /// RanPAC's random-feature expansion of width `M` between the trunk and the head
    /// ([`crate::method::prototype::ensure_random_features`]), added before the method's first task.
    pub random_features: Option<u32>,
    /// The trunk is not trained (`+ft`): stage 1 and stage 2 are skipped, no GPM basis is built, and the head is
    /// whatever the rest computes (with `slda`, streaming LDA over the fixed trunk's features). What a board in a
    /// fleet learns with: every board keeps the fleet's trunk, so the boards' SLDA statistics are over the same
    /// features and add up exactly in the fleet merge ([`crate::fleet::merge`]).
    pub frozen_trunk: bool,
    /// With `slda_head` (`+m2`): BECAME's stage 2 and the α merge run although nothing is replayed; the old
    /// classes' statistics then follow the drift the task's own samples show between the trunk before the task and
    /// the merged one (with `sdc`, [`compensate_drift_from_task`]).
    pub merge_stage2: bool,
    /// With `slda_head` (`+fl`): every Fisher BECAME computes (`F_cur` at θ̂, the Fisher added to `F_old`) is the
    /// Fisher of the classifier the board answers with — the SLDA head refitted over the features of the model at
    /// hand — instead of the softmax head that trains the trunk.
    pub lda_fisher: bool,
    /// With `slda_head` (`+la`, "LDA anchors"): each task trains from the SLDA head the board answers with (old
    /// classes' rows as streaming LDA wrote them, the new classes' rows at zero) instead of the previous task's
    /// softmax head; without the labels trick the new classes' features are then trained away from the old
    /// classes as the deployed classifier sees them.
    pub lda_anchors: bool,
    /// OAS shrinkage for the `slda` head (`+oas`, [`Shrinkage::Oas`]) instead of the fixed ε.
    pub oas: bool,
    /// The model's input carried beside the trunk to the head (`+id`, [`ensure_identity_skip`]), added before
    /// the method's first task: on a cut model the head reads the frozen prefix's features and the trained ones.
    pub identity_skip: bool,
    /// First-session adaptation (`fsa`, Panos et al., ICCV 2023): the trunk trains on the method's first task only
    /// and is frozen from the second task on (as `+ft`); with `slda`, the head is streaming LDA over the frozen
    /// trunk's features. No GPM basis is built (nothing is ever projected).
    pub first_session: bool,
}

/// What [`ClassIl::slda_begin`] keeps to measure the trunk's drift over a task.
#[derive(Debug, Clone)]
pub enum DriftProbe {
    /// The stored samples' class means under the trunk before the task.
    Stored(ClassMeans),
    /// Features of some of the task's own samples (`rows` of its training split) under the trunk before the task.
    Task {
        /// Rows of the task's training split.
        rows: Vec<usize>,
        /// Their features before the task, `(rows, d)`.
        z: ndarray::Array2<f32>,
    },
}

/// Task samples whose features measure the drift without stored samples ([`DriftProbe::Task`]): evenly spaced
/// over the training split, at most this many.
pub const DRIFT_PROBE_SAMPLES: usize = 1000;

impl ClassIl {
    /// The options as name tokens (`+lt` labels trick, `+keepold` / `+split` head merge, `+wa` weight aligning,
    /// `+r1` / `+r2` replay in stage 1 / 2, `+bh` balanced head fine-tuning, `+slda` streaming-LDA head, `+oas`
    /// its OAS shrinkage, `+sdc` its drift compensation, `+rp<M>` random features of width `M`, `+ft` frozen
    /// trunk), in that order; empty when all off. First-session adaptation (`fsa`) is not a suffix: the method's
    /// name starts with it ([`crate::method::GpmMethod`]).
    pub fn suffix(&self, labels_trick: bool) -> String {
        let mut s = String::new();
        let on = [
            (labels_trick, "+lt"),
            (self.head_merge == HeadMerge::KeepOld, "+keepold"),
            (self.head_merge == HeadMerge::Split, "+split"),
            (self.weight_align, "+wa"),
            (self.replay_stage1, "+r1"),
            (self.replay_stage2, "+r2"),
            (self.balanced_head, "+bh"),
            (self.slda_head, "+slda"),
            (self.oas, "+oas"),
            (self.drift, "+sdc"),
            (self.merge_stage2, "+m2"),
            (self.lda_fisher, "+fl"),
            (self.lda_anchors, "+la"),
        ];
        for (flag, tok) in on {
            if flag {
                s.push_str(tok);
            }
        }
        if self.identity_skip {
            s.push_str("+id");
        }
        if let Some(m) = self.random_features {
            s.push_str(&format!("+rp{m}"));
        }
        if self.frozen_trunk {
            s.push_str("+ft");
        }
        s
    }

    /// Parse the tokens of [`ClassIl::suffix`] (without their `+`); returns the options and the labels trick.
    /// An unknown token is an [`Error::Config`].
    pub fn parse_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<(Self, bool)> {
        let (mut ci, mut lt) = (Self::default(), false);
        for t in tokens {
            match t {
                "lt" => lt = true,
                "keepold" => ci.head_merge = HeadMerge::KeepOld,
                "split" => ci.head_merge = HeadMerge::Split,
                "wa" => ci.weight_align = true,
                "r1" => ci.replay_stage1 = true,
                "r2" => ci.replay_stage2 = true,
                "bh" => ci.balanced_head = true,
                "slda" => ci.slda_head = true,
                "sdc" => ci.drift = true,
                "ft" => ci.frozen_trunk = true,
                "m2" => ci.merge_stage2 = true,
                "fl" => ci.lda_fisher = true,
                "la" => ci.lda_anchors = true,
                "oas" => ci.oas = true,
                "id" => ci.identity_skip = true,
                "fsa" => ci.first_session = true,
                rp if rp.starts_with("rp") && rp.len() > 2 => ci.random_features = Some(parse_random_features(rp)?),
                other => {
                    return Err(Error::Config(format!(
                        "class-incremental option {other:?} (known: lt, keepold, split, wa, r1, r2, bh, slda, oas, sdc, m2, fl, la, id, rp<M>, ft, fsa)"
                    )));
                }
            }
        }
        Ok((ci, lt))
    }

    /// The SLDA head's shrinkage: OAS with `+oas`, else the fixed [`crate::method::SLDA_SHRINKAGE`].
    pub fn shrinkage(&self) -> Shrinkage {
        if self.oas { Shrinkage::Oas } else { Shrinkage::default() }
    }

    /// Whether the trunk trains on the method's task number `tasks_seen` (0-based): not with `+ft`, and with
    /// `fsa` on the first task only.
    pub fn trains_trunk(&self, tasks_seen: usize) -> bool {
        !(self.frozen_trunk || (self.first_session && tasks_seen > 0))
    }

    /// Before each task (`tasks_seen` learned before it), ahead of anything the method builds from the model's
    /// shape: with `+id`, before the first task only, the input carried beside the trunk
    /// ([`ensure_identity_skip`]); with `rp<M>`, RanPAC's expansion ([`ensure_random_features`]; a no-op once the
    /// model has it).
    pub fn prepare_model(&self, model: &mut Model, tasks_seen: usize) -> Result<()> {
        if self.identity_skip && tasks_seen == 0 {
            ensure_identity_skip(model)?;
        }
        if let Some(m) = self.random_features {
            ensure_random_features(model, m as usize)?;
        }
        Ok(())
    }

    /// `model` as the method will train it after `tasks_seen` tasks: before the first, with `+id` or `rp<M>`, a
    /// copy widened as [`ClassIl::prepare_model`] will (for footprints computed before the first task); otherwise
    /// `model` itself.
    pub fn shaped<'m>(&self, model: &'m Model, tasks_seen: usize) -> Result<std::borrow::Cow<'m, Model>> {
        if self.identity_skip && tasks_seen == 0 {
            let mut copy = model.clone();
            self.prepare_model(&mut copy, 0)?;
            return Ok(std::borrow::Cow::Owned(copy));
        }
        shaped_with_random_features(model, self.random_features)
    }

    /// The corrections after the merge (after stage 1 for GPM): weight aligning of the new rows, then balanced head
    /// fine-tuning on the stored samples with `cfg`'s schedule, each when asked for.
    pub fn correct_head(
        &self,
        model: &mut Model,
        task: &TaskData<'_>,
        new_rows: &[bool],
        cfg: &TrainConfig,
        ctx: &mut LearnContext<'_>,
    ) -> Result<()> {
        if self.weight_align
            && let Some(gamma) = weight_align(model, task.head, new_rows)?
        {
            tracing::debug!(task = task.task_id, gamma, "weight aligning");
        }
        if self.balanced_head {
            balanced_head_finetune(model, task, cfg, ctx)?;
        }
        Ok(())
    }

    /// The `slda` option before a task's training: on the method's first task the head gets a bias (before
    /// anything is kept per parameter), on later ones the kept training head replaces the SLDA head
    /// ([`SldaStats::swap_in_train_head`]); with `sdc` and stored samples, their class means at the trunk as it
    /// is now (the "before" of [`ClassIl::slda_end`]). `None` when there is nothing to compare later.
    pub fn slda_begin(
        &self,
        model: &mut Model,
        task: &TaskData<'_>,
        replay: Option<&Samples>,
        stats: Option<&SldaStats>,
    ) -> Result<Option<DriftProbe>> {
        if !self.slda_head {
            return Ok(None);
        }
        match stats {
            None => {
                ensure_head_bias(model, task.head)?;
            }
            Some(st) if self.lda_anchors => anchor_scale(model, task.head, st)?,
            Some(st) => st.swap_in_train_head(model, task.head)?,
        }
        let classes = model.head_outputs(task.head)?;
        if !self.drift || stats.is_none() {
            return Ok(None);
        }
        match replay.filter(|r| !r.is_empty()) {
            Some(r) => feature_means(model, r, classes).map(|m| Some(DriftProbe::Stored(m))),
            None => {
                let n = task.train.len();
                let k = n.min(DRIFT_PROBE_SAMPLES);
                let rows: Vec<usize> = (0..k).map(|i| i * n / k.max(1)).collect();
                let z = trunk_features(model, &task.train.x.select(ndarray::Axis(0), &rows).view())?;
                model.clear_cache();
                Ok(Some(DriftProbe::Task { rows, z }))
            }
        }
    }

    /// The `slda` option after training (and merge): with `before` (from [`ClassIl::slda_begin`]) the stored
    /// samples' drift moves the old classes' means ([`compensate_drift`]); then the task's features are absorbed
    /// and the head rewritten ([`slda_refit`]). Returns the seconds spent (`None` without the option).
    pub fn slda_end(
        &self,
        model: &mut Model,
        task: &TaskData<'_>,
        replay: Option<&Samples>,
        before: Option<&DriftProbe>,
        stats: &mut Option<SldaStats>,
    ) -> Result<Option<f64>> {
        if !self.slda_head {
            return Ok(None);
        }
        let t0 = std::time::Instant::now();
        // Work on a copy: nothing changes unless the refit succeeds too.
        let mut work = stats.clone();
        match (before, work.as_mut()) {
            (Some(DriftProbe::Stored(before)), Some(st)) => {
                let r = replay.ok_or_else(|| Error::Config("drift probe of stored samples without them".into()))?;
                let after = feature_means(model, r, before.classes())?;
                let moved = compensate_drift(st, before, &after)?;
                tracing::debug!(task = task.task_id, classes = moved, "SLDA means moved by the stored samples' drift");
            }
            (Some(DriftProbe::Task { rows, z }), Some(st)) => {
                let after = trunk_features(model, &task.train.x.select(ndarray::Axis(0), rows).view())?;
                model.clear_cache();
                let labels: Vec<usize> = rows.iter().map(|&i| task.train.y[i]).collect();
                let moved = compensate_drift_from_task(st, &z.view(), &after.view(), &labels)?;
                tracing::debug!(task = task.task_id, classes = moved, "SLDA means moved by the task samples' drift");
            }
            _ => {}
        }
        slda_refit(model, task, &mut work, self.shrinkage())?;
        *stats = work;
        Ok(Some(t0.elapsed().as_secs_f64()))
    }
}

/// `+la`: scale the SLDA head (weights and bias) so that its rows' mean norm is the kept training head's: LDA's
/// logits are on the scale of Mahalanobis distances, far beyond what softmax training with the preset's learning
/// rate survives (measured: a non-finite loss on the first batch unscaled). The decisions of the head do not change.
fn anchor_scale(model: &mut Model, head: usize, st: &SldaStats) -> Result<()> {
    let Some((w_train, _)) = &st.train_head else { return Ok(()) };
    let mean_norm = |w: &ndarray::ArrayView2<'_, f32>| {
        let n = w.nrows().max(1) as f64;
        w.rows().into_iter().map(|r| f64::from(r.dot(&r)).sqrt()).sum::<f64>() / n
    };
    let lin = &model.heads[head];
    let (target, now) = (mean_norm(&w_train.view()), mean_norm(&lin.w()));
    if target.is_nan() || now.is_nan() || target <= 0.0 || now <= 0.0 {
        return Ok(());
    }
    let scale = (target / now) as f32;
    let w = lin.w().mapv(|v| v * scale);
    let b = lin.bias.as_ref().map(|p| p.value.iter().map(|v| v * scale).collect::<ndarray::Array1<f32>>());
    model.heads[head] = edgelearn_core::nn::Linear::from_weights(&format!("head.{head}"), w, b)?;
    Ok(())
}

/// `cfg` for the method's first task: the labels trick off. Before its first task the method knows nothing of the
/// classes the model may already answer (a pre-trained head: the device's base classes), so the new classes must
/// learn to beat them; later tasks' old classes are the method's own, protected by its bases, Fisher and memory.
/// (On a stream whose first task covers the whole head the two are the same.)
pub fn first_task_plain(cfg: &TrainConfig, first: bool) -> TrainConfig {
    TrainConfig { labels_trick: cfg.labels_trick && !first, ..cfg.clone() }
}

/// The group of a flat parameter: trunk, a head row of a class the task does not contain, or of one it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A trunk parameter (or a head of another task).
    Trunk,
    /// A row (weight and bias entry) of head `head` for a class outside the task.
    Old,
    /// A row of head `head` for a class the task's training data contains.
    New,
}

/// Per flat parameter ([`Model::flat_params`] order), its [`Group`] for head `head` with the task's classes
/// `new[c] == true`.
pub fn param_groups(model: &Model, head: usize, new: &[bool]) -> Result<Vec<Group>> {
    let outputs = model.head_outputs(head)?;
    if new.len() != outputs {
        return Err(shape_err("class-incremental class mask", outputs, new.len()));
    }
    let mut groups = vec![Group::Trunk; model.num_params()];
    let prefix = format!("head.{head}.");
    for info in model.param_infos() {
        if !info.name.starts_with(&prefix) {
            continue;
        }
        // (out, in) weight or (out,) bias: row r is a contiguous run of `per_row` entries.
        let per_row = info.shape.iter().skip(1).product::<usize>();
        for (r, &is_new) in new.iter().enumerate() {
            let g = if is_new { Group::New } else { Group::Old };
            let start = info.offset + r * per_row;
            groups[start..start + per_row].iter_mut().for_each(|x| *x = g);
        }
    }
    Ok(groups)
}

/// One α per [`Group`] (trunk, old rows, new rows), each BECAME's closed form over that group's parameters only:
/// `α_g = Σ_{p∈g} F_cur,p Δₚ² / Σ_{p∈g} (F_cur,p + F_old,p) Δₚ²`, `Δ = θ̂ − θ_GP` (0 when the denominator is 0).
pub fn group_alphas(
    f_cur: &[f32],
    f_old: &[f32],
    theta_gp: &[f32],
    theta_hat: &[f32],
    groups: &[Group],
) -> Result<[f64; 3]> {
    let n = theta_gp.len();
    if groups.len() != n {
        return Err(shape_err("parameter groups", n, groups.len()));
    }
    let mut out = [0.0; 3];
    for (slot, g) in [Group::Trunk, Group::Old, Group::New].into_iter().enumerate() {
        let pick =
            |v: &[f32]| -> Vec<f32> { v.iter().zip(groups).filter(|(_, x)| **x == g).map(|(a, _)| *a).collect() };
        out[slot] = crate::merge::became_alpha(&pick(f_cur), &pick(f_old), &pick(theta_gp), &pick(theta_hat))?;
    }
    Ok(out)
}

/// `θ*_p = (1 − α_{g(p)}) θ_GP,p + α_{g(p)} θ̂_p` with `alphas = [α_trunk, α_old, α_new]`.
pub fn merge_groups(theta_gp: &[f32], theta_hat: &[f32], groups: &[Group], alphas: [f64; 3]) -> Result<Vec<f32>> {
    if theta_hat.len() != theta_gp.len() || groups.len() != theta_gp.len() {
        return Err(shape_err("grouped merge", theta_gp.len(), theta_hat.len().min(groups.len())));
    }
    if let Some(a) = alphas.iter().find(|a| !(0.0..=1.0).contains(*a)) {
        return Err(Error::Config(format!("merge weight {a} outside [0, 1]")));
    }
    Ok(theta_gp
        .iter()
        .zip(theta_hat)
        .zip(groups)
        .map(|((&a, &b), g)| {
            let w = alphas[*g as usize];
            ((1.0 - w) * f64::from(a) + w * f64::from(b)) as f32
        })
        .collect())
}

/// Weight aligning (Zhao et al., CVPR 2020): `w_c ← γ w_c` (and its bias entry) for every new class `c`, with
/// `γ = mean_{c old} ‖w_c‖ / mean_{c new} ‖w_c‖` over the rows of head `head`'s weight. Old classes are the rows
/// outside `new` that are not all zero (a class registered but never trained has a zero row). Returns γ, or
/// `None` when there is no old or no non-zero new row (nothing to align).
pub fn weight_align(model: &mut Model, head: usize, new: &[bool]) -> Result<Option<f64>> {
    let outputs = model.head_outputs(head)?;
    if new.len() != outputs {
        return Err(shape_err("weight aligning class mask", outputs, new.len()));
    }
    let lin = &mut model.heads[head];
    let norms: Vec<f64> = lin
        .w()
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt())
        .collect();
    let mean = |want_new: bool| {
        let v: Vec<f64> =
            norms.iter().zip(new).filter(|(n, is)| **is == want_new && **n > 0.0).map(|(n, _)| *n).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (Some(old), Some(cur)) = (mean(false), mean(true)) else { return Ok(None) };
    let gamma = old / cur;
    for p in lin.params_mut() {
        let per_row = p.value.shape().iter().skip(1).product::<usize>();
        let flat = p.value.as_slice_mut().ok_or_else(|| Error::Config("head parameter not contiguous".into()))?;
        for (r, _) in new.iter().enumerate().filter(|(_, is)| **is) {
            flat[r * per_row..(r + 1) * per_row].iter_mut().for_each(|v| *v = (f64::from(*v) * gamma) as f32);
        }
    }
    Ok(Some(gamma))
}

/// The task's training split with the stored samples appended (`replay` `None` or empty: a copy of `train`).
pub fn with_replay(train: &Samples, replay: Option<&Samples>) -> Result<Samples> {
    match replay.filter(|r| !r.is_empty()) {
        Some(r) => train.concat(r),
        None => Ok(train.clone()),
    }
}

/// A class-balanced set: every stored sample, and from `train` at most as many samples per class as the memory
/// holds per class on average (drawn with `rng`). `None` when nothing is stored.
pub fn balanced_set(train: &Samples, replay: Option<&Samples>, rng: &mut ChaCha8Rng) -> Result<Option<Samples>> {
    let Some(r) = replay.filter(|r| !r.is_empty()) else { return Ok(None) };
    let classes = r.y.iter().copied().collect::<std::collections::BTreeSet<_>>().len().max(1);
    let per_class = r.len().div_ceil(classes);
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &y) in train.y.iter().enumerate() {
        by_class.entry(y).or_default().push(i);
    }
    let mut pick = Vec::new();
    for idx in by_class.values_mut() {
        idx.shuffle(rng);
        pick.extend_from_slice(&idx[..per_class.min(idx.len())]);
    }
    pick.sort_unstable();
    with_replay(&train.select(&pick), Some(r)).map(Some)
}

/// Zeroes every gradient but head `head`'s (training the head alone).
struct HeadOnly {
    head: usize,
}

impl GradHook for HeadOnly {
    fn after_backward(&mut self, model: &mut Model, _task: &TaskData<'_>) -> Result<()> {
        for layer in &mut model.trunk {
            layer.params_mut().into_iter().for_each(|p| p.zero_grad());
        }
        for (h, lin) in model.heads.iter_mut().enumerate() {
            if h != self.head {
                lin.params_mut().into_iter().for_each(|p| p.zero_grad());
            }
        }
        Ok(())
    }
}

/// Balanced head fine-tuning: train head `task.head` alone, with `cfg` (restore off, labels trick off), on
/// [`balanced_set`] of the task and the stored samples. Returns false when nothing is stored (no change).
pub fn balanced_head_finetune(
    model: &mut Model,
    task: &TaskData<'_>,
    cfg: &TrainConfig,
    ctx: &mut LearnContext<'_>,
) -> Result<bool> {
    let Some(set) = balanced_set(task.train, ctx.replay, ctx.rng)? else { return Ok(false) };
    let data = TaskData { train: &set, ..*task };
    let cfg = TrainConfig { restore_best: false, labels_trick: false, ..cfg.clone() };
    train(model, &data, &cfg, &mut HeadOnly { head: task.head }, ctx.rng, ctx.progress, "head")?;
    Ok(true)
}

/// The task's classes as a mask over head `head`'s outputs (the "new rows").
pub fn task_classes(model: &Model, task: &TaskData<'_>) -> Result<Vec<bool>> {
    let outputs = model.head_outputs(task.head)?;
    task.train.check_labels(outputs)?;
    Ok(class_mask(task.train, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::nn::zoo;

    #[test]
    fn random_features_option_parses_prints_and_shapes_the_model_once() {
        let (ci, lt) = ClassIl::parse_tokens(["lt", "slda", "rp64"]).unwrap();
        assert_eq!(ci.random_features, Some(64));
        assert_eq!(ci.suffix(lt), "+lt+slda+rp64");
        for bad in ["rp", "rp0", "rpx", "rp-3", "rp8193"] {
            assert!(matches!(ClassIl::parse_tokens([bad]), Err(Error::Config(_))), "{bad}");
        }
        let mut model = zoo::mlp(5, &[7], &[3], false, &mut edgelearn_core::seeded_rng(1)).unwrap();
        assert_eq!(ci.shaped(&model, 0).unwrap().heads[0].in_features(), 64, "a shaped copy");
        assert_eq!(model.heads[0].in_features(), 7, "the model itself untouched");
        ci.prepare_model(&mut model, 0).unwrap();
        let trained = model.flat_params();
        assert_eq!((model.trunk.len(), model.heads[0].in_features(), model.head_outputs(0).unwrap()), (4, 64, 3));
        ci.prepare_model(&mut model, 0).unwrap();
        assert_eq!(model.flat_params(), trained, "a second call is a no-op");
        let x = ndarray::Array2::<f32>::ones((2, 5));
        assert_eq!(model.forward(&x.view(), 0, edgelearn_core::nn::Mode::Eval).unwrap().dim(), (2, 3));
        let other = ClassIl { random_features: Some(32), ..ci };
        assert!(matches!(other.prepare_model(&mut model, 1), Err(Error::Config(_))), "another width is refused");
    }

    #[test]
    fn groups_follow_head_rows_and_alphas_are_per_group() {
        let mut rng = edgelearn_core::seeded_rng(3);
        let model = zoo::mlp(3, &[2], &[4], true, &mut rng).unwrap();
        let new = [false, true, false, true];
        let g = param_groups(&model, 0, &new).unwrap();
        let infos = model.param_infos();
        let w = infos.iter().find(|p| p.name == "head.0.weight").unwrap();
        let b = infos.iter().find(|p| p.name == "head.0.bias").unwrap();
        // Row 1 of the (4, 2) weight: entries 2, 3; bias entry 1.
        assert_eq!(g[w.offset + 2], Group::New);
        assert_eq!(g[w.offset], Group::Old);
        assert_eq!(g[b.offset + 1], Group::New);
        assert_eq!(g[b.offset + 2], Group::Old);
        assert!(g[..w.offset].iter().all(|x| *x == Group::Trunk));
        assert_eq!(g.iter().filter(|x| **x == Group::New).count(), 2 * 2 + 2);

        // Hand-made: groups [T, O, N], Δ = 1 everywhere: α_g = F_cur / (F_cur + F_old) per entry.
        let groups = [Group::Trunk, Group::Old, Group::New];
        let a = group_alphas(&[1.0, 2.0, 3.0], &[1.0, 2.0, 1.0], &[0.0; 3], &[1.0; 3], &groups).unwrap();
        assert_eq!(a, [0.5, 0.5, 0.75]);
        let m = merge_groups(&[0.0; 3], &[4.0; 3], &groups, [0.5, 0.0, 0.75]).unwrap();
        assert_eq!(m, vec![2.0, 0.0, 3.0]);
        assert!(merge_groups(&[0.0; 3], &[4.0; 3], &groups, [1.5, 0.0, 0.0]).is_err());
        assert!(param_groups(&model, 0, &[true]).is_err());
    }

    #[test]
    fn weight_aligning_scales_new_rows_to_the_old_mean_norm() {
        let mut rng = edgelearn_core::seeded_rng(4);
        let mut model = zoo::mlp(2, &[2], &[3], true, &mut rng).unwrap();
        {
            let lin = &mut model.heads[0];
            let mut ps = lin.params_mut();
            let (w, rest) = ps.split_first_mut().unwrap();
            w.value.as_slice_mut().unwrap().copy_from_slice(&[3.0, 4.0, 0.0, 1.0, 0.0, 10.0]);
            rest[0].value.as_slice_mut().unwrap().copy_from_slice(&[1.0, 1.0, 2.0]);
        }
        // Old rows norms 5 and 1 (mean 3); new row 2 norm 10 → γ = 0.3.
        let gamma = weight_align(&mut model, 0, &[false, false, true]).unwrap().unwrap();
        assert!((gamma - 0.3).abs() < 1e-12);
        let w = model.heads[0].w();
        assert!((w[[2, 1]] - 3.0).abs() < 1e-6 && w[[0, 0]] == 3.0);
        let b = model.heads[0].params()[1].value.clone();
        assert!((b[[2]] - 0.6).abs() < 1e-6 && b[[0]] == 1.0);
        // Nothing old: nothing to align.
        assert_eq!(weight_align(&mut model, 0, &[true, true, true]).unwrap(), None);
    }

    #[test]
    fn replay_is_appended_and_balanced_set_is_balanced() {
        let train = Samples::new(ndarray::Array2::zeros((10, 2)), vec![2, 3, 2, 3, 2, 3, 2, 3, 2, 3]).unwrap();
        let mem = Samples::new(ndarray::Array2::ones((4, 2)), vec![0, 0, 1, 1]).unwrap();
        let all = with_replay(&train, Some(&mem)).unwrap();
        assert_eq!(all.len(), 14);
        assert_eq!(&all.y[10..], &[0, 0, 1, 1]);
        assert_eq!(with_replay(&train, None).unwrap().len(), 10);
        let bad = Samples::new(ndarray::Array2::ones((1, 3)), vec![0]).unwrap();
        assert!(with_replay(&train, Some(&bad)).is_err());
        let set = balanced_set(&train, Some(&mem), &mut edgelearn_core::seeded_rng(0)).unwrap().unwrap();
        let count = |c| set.y.iter().filter(|&&y| y == c).count();
        assert_eq!([count(0), count(1), count(2), count(3)], [2, 2, 2, 2]);
        assert!(balanced_set(&train, None, &mut edgelearn_core::seeded_rng(0)).unwrap().is_none());
    }

    #[test]
    fn labels_trick_leaves_other_classes_rows_untouched() {
        use edgelearn_core::train::Silent;
        let mut rng = edgelearn_core::seeded_rng(5);
        let x = ndarray::Array2::from_shape_fn((16, 3), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0);
        let y: Vec<usize> = (0..16).map(|i| 2 + i % 2).collect();
        let train_set = Samples::new(x, y).unwrap();
        let val = Samples::new(ndarray::Array2::zeros((0, 3)), vec![]).unwrap();
        let task = TaskData { task_id: 1, head: 0, train: &train_set, val: &val };
        for trick in [true, false] {
            let mut model = zoo::mlp(3, &[4], &[4], true, &mut edgelearn_core::seeded_rng(6)).unwrap();
            let before = model.heads[0].w().to_owned();
            let cfg = TrainConfig { epochs: 2, batch_size: 4, lr: 0.1, labels_trick: trick, ..TrainConfig::default() };
            edgelearn_core::train::train(
                &mut model,
                &task,
                &cfg,
                &mut edgelearn_core::train::NoHook,
                &mut rng,
                &mut Silent,
                "t",
            )
            .unwrap();
            let after = model.heads[0].w();
            let old_rows_same = (0..2).all(|r| before.row(r) == after.row(r));
            assert_eq!(old_rows_same, trick, "labels trick {trick}: rows of classes 0, 1 unchanged = {old_rows_same}");
            assert!((2..4).all(|r| before.row(r) != after.row(r)), "the task's rows learn");
        }
    }
}
