//! The continual-merging family beside BECAME: fine-tune on each task, then merge the task model into the running
//! model with a closed-form rule ([`crate::merge`]). One method type, [`Merging`], with one [`MergeRule`] each.
//!
//! Choices the papers leave open, made the same way for every rule so that only the merge differs:
//! - Each task is trained with the stream's [`TrainConfig`] (plain SGD, GPM's schedule).
//! - *Where training starts.* 1/t, CoMA, CoFiMA and P&M train task `t` from the previous **merged** model, as their
//!   papers do. IMM and MagMax train a **chain** of sequentially fine-tuned models (task `t` from `θ̂_{t−1}`) and
//!   merge the chain's task optima; the chain model is kept between tasks (one vector) and the merged model is what
//!   is evaluated and deployed.
//! - *Fishers* are the BECAME estimator ([`diagonal_fisher`]) at the task's fine-tuned model `θ̂_t` on task `t`'s
//!   training split (per-task optima, as IMM and P&M define them). CoFiMA keeps the previous task's Fisher only.
//! - *MagMax's θ₀* is the model before the first task of the stream (the pre-trained or initial model).
//! - *P&M's perturbation*: each step evaluates the gradient at one of `θ`, `θ + εΔ`, `θ − εΔ` (uniformly), with
//!   `Δ = θ − θ_{t−1}` the task vector so far and ε = 0.5, and applies it at `θ`; the first task trains plainly.
//! - The state these methods keep is not in the state store's schema (it has bases and one Fisher): they are for
//!   host-side comparison, and [`Method::export_state`] refuses with a typed error once they keep anything.

use std::time::Instant;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::fisher::diagonal_fisher;
use crate::merge::average::{coma, running_mean};
use crate::merge::fisher_weighted::{ImmModeSums, cofima};
use crate::merge::magmax::{fold_max_magnitude, magmax_merge};
use crate::merge::pam::pam_alpha;
use crate::merge::{add_assign, interpolate};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Model, ParamGrowth};
use edgelearn_core::train::{GradHook, NoHook, TrainConfig, train};

/// P&M's perturbation scale ε.
pub const PAM_EPSILON: f32 = 0.5;

/// How the task model is merged into the running model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MergeRule {
    /// 1/t averaging ([`running_mean`]).
    Average,
    /// CoMA with weight `a` on the new model ([`coma`]).
    Coma {
        /// Weight of the new task model.
        a: f64,
    },
    /// CoFiMA with weight `a` ([`cofima`]).
    Cofima {
        /// Weight of the new task model.
        a: f64,
    },
    /// Mean-IMM: the mean of the chain's task optima.
    ImmMean,
    /// Mode-IMM: the Fisher-weighted mean of the chain's task optima ([`ImmModeSums`]).
    ImmMode,
    /// MagMax with scale λ ([`magmax_merge`]; 0.5 in the paper).
    MagMax {
        /// Scale of the max-magnitude task vector.
        lambda: f64,
    },
    /// P&M: perturbation training, then the closed-form α* ([`pam_alpha`]).
    PerturbMerge {
        /// Perturbation scale ε ([`PAM_EPSILON`]).
        eps: f32,
    },
}

impl MergeRule {
    /// Short identifier (`avg`, `coma`, `cofima`, `imm-mean`, `imm-mode`, `magmax`, `magmax:<λ>`, `pam`).
    pub fn name(&self) -> String {
        match self {
            Self::Average => "avg".into(),
            Self::Coma { .. } => "coma".into(),
            Self::Cofima { .. } => "cofima".into(),
            Self::ImmMean => "imm-mean".into(),
            Self::ImmMode => "imm-mode".into(),
            Self::MagMax { lambda } if *lambda == crate::merge::magmax::MAGMAX_LAMBDA => "magmax".into(),
            Self::MagMax { lambda } => format!("magmax:{lambda}"),
            Self::PerturbMerge { .. } => "pam".into(),
        }
    }

    fn trains_chain(&self) -> bool {
        matches!(self, Self::ImmMean | Self::ImmMode | Self::MagMax { .. })
    }

    fn needs_fisher(&self) -> bool {
        matches!(self, Self::Cofima { .. } | Self::ImmMode | Self::PerturbMerge { .. })
    }

    /// Full-length vectors kept between tasks: `(f32 vectors, f64 vectors)`.
    fn kept_vectors(&self) -> (usize, usize) {
        match self {
            Self::Average | Self::Coma { .. } => (0, 0),
            Self::Cofima { .. } | Self::ImmMean => (1, 0),
            Self::ImmMode => (1, 2),
            Self::MagMax { .. } => (3, 0),
            Self::PerturbMerge { .. } => (1, 1),
        }
    }
}

/// Fine-tune on each task, then merge by [`MergeRule`]. See the module documentation for the choices made.
#[derive(Debug, Clone)]
pub struct Merging {
    /// Training settings for every task.
    pub train: TrainConfig,
    /// The merge rule.
    pub rule: MergeRule,
    tasks_seen: usize,
    /// IMM, MagMax: the sequentially fine-tuned model training continues from.
    chain: Vec<f32>,
    /// MagMax: the model before the first task.
    theta0: Vec<f32>,
    /// MagMax: the running max-magnitude task vector.
    tau_max: Vec<f32>,
    /// CoFiMA: the previous task's Fisher. P&M: `F_old = Σ_{k<t} F_k`.
    fisher: Vec<f32>,
    /// P&M: `S = Σ_{k<t} F_k ⊙ θ̂_k`.
    pam_s: Vec<f64>,
    /// Mode-IMM's running sums.
    imm: ImmModeSums,
    /// Entries added by [`Method::params_grown`] whose chain/θ₀ values are taken from the model at the next task.
    grown: Option<Vec<bool>>,
}

impl Merging {
    /// A merging method with the given training settings and rule.
    pub fn new(train: TrainConfig, rule: MergeRule) -> Self {
        Self {
            train,
            rule,
            tasks_seen: 0,
            chain: Vec::new(),
            theta0: Vec::new(),
            tau_max: Vec::new(),
            fisher: Vec::new(),
            pam_s: Vec::new(),
            imm: ImmModeSums::default(),
            grown: None,
        }
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }

    /// Fill the entries a head growth added to the chain and θ₀ with the model's current values.
    fn take_grown_entries(&mut self, current: &[f32]) {
        if let Some(mask) = self.grown.take() {
            for v in [&mut self.chain, &mut self.theta0] {
                if v.len() == mask.len() {
                    v.iter_mut().zip(&mask).zip(current).filter(|((_, new), _)| **new).for_each(|((x, _), c)| *x = *c);
                }
            }
        }
    }
}

/// P&M's training hook: before each forward pass, move θ to one of θ, θ ± εΔ; after backward, move it back.
struct Perturb<'a> {
    anchor: &'a [f32],
    eps: f32,
    rng: ChaCha8Rng,
    shift: Vec<f32>,
}

impl GradHook for Perturb<'_> {
    fn before_forward(&mut self, model: &mut Model) -> Result<()> {
        let sign = [0.0f32, 1.0, -1.0][self.rng.random_range(0..3)];
        let theta = model.flat_params();
        self.shift = theta.iter().zip(self.anchor).map(|(t, a)| sign * self.eps * (t - a)).collect();
        let moved: Vec<f32> = theta.iter().zip(&self.shift).map(|(t, s)| t + s).collect();
        model.set_flat_params(&moved)
    }

    fn after_backward(&mut self, model: &mut Model, _: &TaskData<'_>) -> Result<()> {
        let back: Vec<f32> = model.flat_params().iter().zip(&self.shift).map(|(t, s)| t - s).collect();
        model.set_flat_params(&back)
    }
}

impl Method for Merging {
    fn name(&self) -> String {
        self.rule.name()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let n = model.num_params();
        let prev = model.flat_params();
        self.take_grown_entries(&prev);
        let t = self.tasks_seen + 1;
        if self.rule.trains_chain() && t > 1 {
            if self.chain.len() != n {
                return Err(shape_err(&format!("{} chain model", self.name()), n, self.chain.len()));
            }
            model.set_flat_params(&self.chain)?;
        }
        let t0 = Instant::now();
        let log = match self.rule {
            MergeRule::PerturbMerge { eps } if t > 1 => {
                let rng = edgelearn_core::seeded_rng(ctx.rng.random());
                let mut hook = Perturb { anchor: &prev, eps, rng, shift: Vec::new() };
                train(model, task, &self.train, &mut hook, ctx.rng, ctx.progress, "train")?
            }
            _ => train(model, task, &self.train, &mut NoHook, ctx.rng, ctx.progress, "train")?,
        };
        let t_train = t0.elapsed().as_secs_f64();
        let theta_hat = model.flat_params();
        let t1 = Instant::now();
        let f_t = if self.rule.needs_fisher() { diagonal_fisher(model, task)? } else { Vec::new() };
        let t_fisher = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let (merged, alpha) = self.merge(t, &prev, theta_hat, f_t)?;
        model.set_flat_params(&merged)?;
        self.tasks_seen = t;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            alpha,
            timings: vec![
                ("train".into(), t_train),
                ("fisher".into(), t_fisher),
                ("merge".into(), t2.elapsed().as_secs_f64()),
            ],
            bytes_kept: self.bytes_kept(),
            ..TaskReport::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        4 * (self.chain.len() + self.theta0.len() + self.tau_max.len() + self.fisher.len())
            + 8 * self.pam_s.len()
            + self.imm.bytes()
    }

    /// Plain SGD, the Fisher pass where the rule uses one, the vectors kept between tasks (the `fisher` budget
    /// line) and four transient copies (best-validation copy, the previous model, θ̂, the merged model).
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let (f32s, f64s) = self.rule.kept_vectors();
        let kept = (4 * f32s + 8 * f64s) as u64 * model.num_params() as u64;
        let plan = StepPlan {
            flat_copies: 4 + usize::from(self.rule.needs_fisher()),
            fisher_pass: self.rule.needs_fisher(),
            kept_bytes: kept,
            ..sgd_plan(&self.train)
        };
        Footprint::estimate(model, &plan)
    }

    fn params_grown(&mut self, growth: &ParamGrowth) -> Result<()> {
        if growth.is_identity() || self.tasks_seen == 0 {
            return Ok(());
        }
        // Every vector is resized on the side and swapped in only when all succeeded: unchanged on error.
        let grow =
            |v: &Vec<f32>| -> Result<Vec<f32>> { if v.is_empty() { Ok(Vec::new()) } else { growth.resize(v, 0.0) } };
        let grow64 =
            |v: &Vec<f64>| -> Result<Vec<f64>> { if v.is_empty() { Ok(Vec::new()) } else { growth.resize(v, 0.0) } };
        let grown = (
            grow(&self.chain)?,
            grow(&self.theta0)?,
            grow(&self.tau_max)?,
            grow(&self.fisher)?,
            grow64(&self.pam_s)?,
            grow64(&self.imm.weighted)?,
            grow64(&self.imm.precision)?,
        );
        (self.chain, self.theta0, self.tau_max, self.fisher, self.pam_s, self.imm.weighted, self.imm.precision) = grown;
        self.grown = Some(growth.new_entries());
        Ok(())
    }

    /// Nothing before the first task; afterwards a typed error for the rules that keep vectors (the state store
    /// has no place for them), and the task count alone for 1/t averaging and CoMA.
    fn export_state(&self) -> Result<MethodState> {
        if self.bytes_kept() > 0 {
            return Err(super::host_only_state(&self.name(), self.bytes_kept()));
        }
        Ok(MethodState { tasks_seen: self.tasks_seen, ..MethodState::default() })
    }

    fn import_state(&mut self, _model: &Model, state: MethodState) -> Result<()> {
        if !state.bases.is_empty() || state.fisher.is_some() {
            return Err(Error::Config(format!(
                "method {} keeps no bases or Fisher; the stored state has some",
                self.name()
            )));
        }
        if state.tasks_seen > 0 && self.rule.kept_vectors() != (0, 0) {
            return Err(Error::Config(format!("method {}'s state cannot be restored from the store", self.name())));
        }
        self.tasks_seen = state.tasks_seen;
        Ok(())
    }
}

impl Merging {
    /// Merge task `t`'s fine-tuned `θ̂_t` (Fisher `f_t` where the rule uses one) into the running model `prev`;
    /// returns the merged model and the weight on the new model where the rule has one.
    fn merge(&mut self, t: usize, prev: &[f32], theta_hat: Vec<f32>, f_t: Vec<f32>) -> Result<(Vec<f32>, Option<f64>)> {
        Ok(match self.rule {
            MergeRule::Average => {
                let a = 1.0 / t as f64;
                (running_mean(prev, &theta_hat, t)?, Some(a))
            }
            MergeRule::Coma { a } if t > 1 => (coma(prev, &theta_hat, a)?, Some(a)),
            MergeRule::Cofima { a } if t > 1 => {
                let merged = cofima(prev, &self.fisher, &theta_hat, &f_t, a)?;
                self.fisher = f_t;
                (merged, Some(a))
            }
            MergeRule::Coma { .. } => (theta_hat, Some(1.0)),
            MergeRule::Cofima { .. } => {
                self.fisher = f_t;
                (theta_hat, Some(1.0))
            }
            MergeRule::ImmMean => {
                let merged = running_mean(prev, &theta_hat, t)?;
                self.chain = theta_hat;
                (merged, Some(1.0 / t as f64))
            }
            MergeRule::ImmMode => {
                self.imm.add(&theta_hat, &f_t)?;
                self.chain = theta_hat;
                (self.imm.merge()?, None)
            }
            MergeRule::MagMax { lambda } => {
                if t == 1 {
                    self.theta0 = prev.to_vec();
                    self.tau_max = vec![0.0; prev.len()];
                }
                fold_max_magnitude(&mut self.tau_max, &self.theta0, &theta_hat)?;
                self.chain = theta_hat;
                (magmax_merge(&self.theta0, &self.tau_max, lambda)?, None)
            }
            MergeRule::PerturbMerge { .. } => {
                let alpha = if t == 1 { 1.0 } else { pam_alpha(&f_t, &self.fisher, &self.pam_s, prev, &theta_hat)? };
                let merged = interpolate(prev, &theta_hat, alpha)?;
                if t == 1 {
                    self.fisher = vec![0.0; f_t.len()];
                    self.pam_s = vec![0.0; f_t.len()];
                }
                self.pam_s
                    .iter_mut()
                    .zip(&f_t)
                    .zip(&theta_hat)
                    .for_each(|((s, f), th)| *s += f64::from(*f) * f64::from(*th));
                add_assign(&mut self.fisher, &f_t)?;
                (merged, Some(alpha))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(rule: MergeRule) -> Merging {
        Merging::new(TrainConfig::default(), rule)
    }

    #[test]
    fn average_and_imm_mean_give_the_mean_of_task_optima() {
        for rule in [MergeRule::Average, MergeRule::ImmMean] {
            let mut m = method(rule);
            let (m1, _) = m.merge(1, &[0.0, 0.0], vec![2.0, 4.0], Vec::new()).unwrap();
            assert_eq!(m1, vec![2.0, 4.0]);
            let (m2, a) = m.merge(2, &m1, vec![4.0, 0.0], Vec::new()).unwrap();
            assert_eq!((m2, a), (vec![3.0, 2.0], Some(0.5)));
        }
        // IMM keeps the chain's last optimum to train from; 1/t averaging keeps nothing.
        let mut imm = method(MergeRule::ImmMean);
        imm.merge(1, &[0.0], vec![5.0], Vec::new()).unwrap();
        assert_eq!(imm.chain, vec![5.0]);
        assert_eq!(imm.bytes_kept(), 4);
    }

    #[test]
    fn cofima_keeps_only_the_previous_tasks_fisher() {
        let mut m = method(MergeRule::Cofima { a: 0.5 });
        m.merge(1, &[0.0], vec![2.0], vec![1.0]).unwrap();
        // Task 2: (0.5·1·2 + 0.5·3·6)/(0.5·1 + 0.5·3) = 5.
        let (m2, _) = m.merge(2, &[2.0], vec![6.0], vec![3.0]).unwrap();
        assert!((m2[0] - 5.0).abs() < 1e-6);
        assert_eq!(m.fisher, vec![3.0], "the previous task's Fisher replaces, not adds");
    }

    #[test]
    fn magmax_merges_from_theta0_with_lambda() {
        let mut m = method(MergeRule::MagMax { lambda: 0.5 });
        let (m1, _) = m.merge(1, &[1.0, 1.0], vec![3.0, 0.0], Vec::new()).unwrap();
        assert_eq!(m1, vec![2.0, 0.5]); // θ₀ + 0.5·[2, −1]
        // The chain (θ̂₁), not the merged model, is where task 2 starts; its optimum is folded against θ₀.
        assert_eq!(m.chain, vec![3.0, 0.0]);
        let (m2, _) = m.merge(2, &m1, vec![2.0, 4.0], Vec::new()).unwrap();
        assert_eq!(m2, vec![2.0, 2.5]); // τ_max = [2, 3]
        assert_eq!(MergeRule::MagMax { lambda: 0.5 }.name(), "magmax");
        assert_eq!(MergeRule::MagMax { lambda: 0.7 }.name(), "magmax:0.7");
    }

    #[test]
    fn pam_accumulates_optima_and_fishers() {
        let mut m = method(MergeRule::PerturbMerge { eps: PAM_EPSILON });
        let (m1, a1) = m.merge(1, &[0.0], vec![2.0], vec![1.0]).unwrap();
        assert_eq!((m1.clone(), a1), (vec![2.0], Some(1.0)));
        assert_eq!((m.fisher.clone(), m.pam_s.clone()), (vec![1.0], vec![2.0]));
        // Old optimum 2 at the previous merged model → BECAME's ratio 3/(1 + 3) on Δ = 2.
        let (m2, a2) = m.merge(2, &m1, vec![4.0], vec![3.0]).unwrap();
        assert!((a2.unwrap() - 0.75).abs() < 1e-12);
        assert!((m2[0] - 3.5).abs() < 1e-6);
        assert_eq!((m.fisher.clone(), m.pam_s.clone()), (vec![4.0], vec![14.0]));
    }

    #[test]
    fn rules_that_keep_vectors_refuse_to_export_state() {
        let mut m = method(MergeRule::ImmMode);
        assert!(m.export_state().is_ok());
        m.merge(1, &[0.0], vec![1.0], vec![1.0]).unwrap();
        assert!(matches!(m.export_state(), Err(Error::Config(_))));
        let mut c = method(MergeRule::Coma { a: 0.5 });
        c.merge(1, &[0.0], vec![1.0], Vec::new()).unwrap();
        c.tasks_seen = 1;
        assert_eq!(c.export_state().unwrap().tasks_seen, 1);
    }
}
