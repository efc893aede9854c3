//! BECAME (Li et al., ICML 2025) on top of GPM: a projected stage, an unconstrained stage, and a closed-form
//! Fisher-weighted merge of the two with one global coefficient α.

use std::time::Instant;

use super::gpm::{projected_stage, update_bases};
use super::{LearnContext, Method, TaskReport};
use crate::data::TaskData;
use crate::error::Result;
use crate::fisher::diagonal_fisher;
use crate::gpm::{Gpm, GpmConfig};
use crate::merge::{add_assign, became_alpha, interpolate};
use crate::nn::Model;
use crate::train::{NoHook, TrainConfig, train};

/// GPM + BECAME.
///
/// Task 1: plain SGD → θ₁; `F_old = Fisher(θ₁)`; bases from θ₁.
/// Task t ≥ 2: stage 1, GPM-projected SGD from θ*₍t−1₎ with best-validation restore → θ_GP; stage 2, a fresh
/// plain SGD (no projection, every parameter trainable, schedule restarted, no restore) from θ_GP → θ̂;
/// `F_cur = Fisher(θ̂)`; α = [`became_alpha`]; `θ* = (1 − α) θ_GP + α θ̂`; `F_old ← F_old + Fisher(θ*)`;
/// bases from θ*.
///
/// Between tasks it keeps only the bases and one accumulated Fisher vector.
#[derive(Debug, Clone)]
pub struct Became {
    /// Stage-1 training settings (best-validation restore on).
    pub stage1: TrainConfig,
    /// Stage-2 training settings (restore forced off).
    pub stage2: TrainConfig,
    /// GPM settings.
    pub gpm_cfg: GpmConfig,
    /// Bases, created on the first task.
    pub gpm: Option<Gpm>,
    /// Accumulated Fisher of the merged models, flat.
    pub f_old: Vec<f32>,
    tasks_seen: usize,
}

impl Became {
    /// BECAME with stage 2 using the same schedule as stage 1 (without the best-validation restore).
    pub fn new(stage1: TrainConfig, gpm_cfg: GpmConfig) -> Self {
        let stage2 = TrainConfig { restore_best: false, ..stage1.clone() };
        Self { stage1, stage2, gpm_cfg, gpm: None, f_old: Vec::new(), tasks_seen: 0 }
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }
}

impl Method for Became {
    fn name(&self) -> String {
        "gpm+became".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let gpm = match &mut self.gpm {
            Some(g) => g,
            None => self.gpm.insert(Gpm::for_model(model, self.gpm_cfg.clone())?),
        };
        let first = self.tasks_seen == 0;
        let (log1, t1) = projected_stage(gpm, first, model, task, &self.stage1, ctx, "stage1")?;
        let mut report =
            TaskReport { task_id: task.task_id, stages: vec![("stage1".into(), log1)], ..Default::default() };
        report.timings.push(("stage1".into(), t1));
        if first {
            let t0 = Instant::now();
            self.f_old = diagonal_fisher(model, task)?;
            report.timings.push(("fisher".into(), t0.elapsed().as_secs_f64()));
        } else {
            let theta_gp = model.flat_params();
            let t0 = Instant::now();
            let stage2 = TrainConfig { restore_best: false, ..self.stage2.clone() };
            let log2 = train(model, task, &stage2, &mut NoHook, ctx.rng, ctx.progress, "stage2")?;
            report.stages.push(("stage2".into(), log2));
            report.timings.push(("stage2".into(), t0.elapsed().as_secs_f64()));
            let theta_hat = model.flat_params();

            let t0 = Instant::now();
            let f_cur = diagonal_fisher(model, task)?;
            let t_fisher_cur = t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            let alpha = became_alpha(&f_cur, &self.f_old, &theta_gp, &theta_hat)?;
            let merged = interpolate(&theta_gp, &theta_hat, alpha)?;
            model.set_flat_params(&merged)?;
            report.timings.push(("merge".into(), t0.elapsed().as_secs_f64()));

            let t0 = Instant::now();
            let f_merged = diagonal_fisher(model, task)?;
            add_assign(&mut self.f_old, &f_merged)?;
            report.timings.push(("fisher".into(), t_fisher_cur + t0.elapsed().as_secs_f64()));
            tracing::info!(task = task.task_id, alpha, "BECAME merge");
            report.alpha = Some(alpha);
        }
        let t_basis = update_bases(gpm, model, task, self.tasks_seen, ctx)?;
        report.timings.push(("basis".into(), t_basis));
        report.basis_sizes = gpm.basis_sizes();
        self.tasks_seen += 1;
        report.bytes_kept = self.bytes_kept();
        Ok(report)
    }

    fn bytes_kept(&self) -> usize {
        self.gpm.as_ref().map_or(0, Gpm::bytes) + self.f_old.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Samples;
    use crate::nn::zoo;
    use crate::train::Silent;
    use ndarray::Array2;
    use rand::Rng;

    /// Two tiny 2-class tasks on 6 features: the label depends on different features per task.
    fn tiny_task(seed: u64, feature: usize) -> (Samples, Samples) {
        let mut rng = crate::seeded_rng(seed);
        let make = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| {
            let x = Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
            let y = (0..n).map(|i| usize::from(x[[i, feature]] > 0.0)).collect();
            Samples::new(x, y).unwrap()
        };
        (make(&mut rng, 48), make(&mut rng, 16))
    }

    fn projector_matrix(m: &Array2<f32>) -> Array2<f32> {
        m.dot(&m.t())
    }

    #[test]
    fn merged_model_drives_fisher_and_bases() {
        let mut rng = crate::seeded_rng(0);
        let mut model = zoo::mlp(6, &[8], &[2, 2], false, &mut rng).unwrap();
        let cfg = TrainConfig { epochs: 3, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        // samples ≥ task size: the representation does not depend on which samples are drawn.
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: false };
        let mut method = Became::new(cfg, gcfg);
        let (tr1, va1) = tiny_task(1, 0);
        let (tr2, va2) = tiny_task(2, 3);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let mut run_rng = crate::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut run_rng, progress: &mut Silent };

        let r1 = method.learn_task(&mut model, &t1, &mut ctx).unwrap();
        assert_eq!(r1.stages.len(), 1, "task 1 has no stage 2");
        assert!(r1.alpha.is_none());
        let f1 = diagonal_fisher(&mut model, &t1).unwrap();
        assert_eq!(method.f_old, f1, "F_old after task 1 is Fisher(θ₁)");
        let gpm_after_1 = method.gpm.clone().unwrap();

        let r2 = method.learn_task(&mut model, &t2, &mut ctx).unwrap();
        assert_eq!(r2.stages.len(), 2);
        let alpha = r2.alpha.unwrap();
        assert!((0.0..=1.0).contains(&alpha));
        assert!(alpha > 0.0 && alpha < 1.0, "α = {alpha}: the test needs a real interpolation");

        // F_old grew by exactly the Fisher of the model the method left behind (θ*).
        let f_star = diagonal_fisher(&mut model, &t2).unwrap();
        for ((new, old), fs) in method.f_old.iter().zip(&f1).zip(&f_star) {
            assert!((new - old - fs).abs() <= 1e-6 * (1.0 + fs.abs()), "F_old grew by {} not {fs}", new - old);
        }

        // The bases were updated from θ*: redo the update from the final model and compare the projectors.
        let mut expect = gpm_after_1;
        let reps = expect.representations(&mut model, &t2, &mut crate::seeded_rng(99)).unwrap();
        expect.update(&reps, 1).unwrap();
        let got = method.gpm.as_ref().unwrap();
        for (a, b) in expect.bases.iter().zip(&got.bases) {
            assert_eq!(a.ncols(), b.ncols());
            let diff = &projector_matrix(a) - &projector_matrix(b);
            assert!(diff.iter().all(|v| v.abs() < 1e-3), "basis not built from θ*");
        }
        assert_eq!(r2.basis_sizes, got.basis_sizes());
        assert_eq!(method.bytes_kept(), got.bytes() + method.f_old.len() * 4);
    }
}
