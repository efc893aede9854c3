//! Continual-learning methods behind one interface: each learns one task at a time on a shared model.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::budget::{Footprint, StepPlan};
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Model, ParamGrowth};
use edgelearn_core::train::{Progress, TrainConfig, TrainLog};
use edgelearn_store::{BasisState, FisherBlob};

// The host-side comparison methods (feature `baselines`): the board's binary carries none of them.
#[cfg(feature = "baselines")]
mod adam;
#[cfg(feature = "baselines")]
mod adam_nscl;
#[cfg(not(feature = "baselines"))]
#[path = "adam_nscl_stub.rs"]
mod adam_nscl;
mod became;
pub mod class_il;
mod ewc;
mod finetune;
mod gpm;
#[cfg(feature = "baselines")]
mod holistic;
mod joint;
#[cfg(feature = "baselines")]
mod merging;
mod prototype;
mod skip;
#[cfg(feature = "baselines")]
mod trm;

#[cfg(feature = "baselines")]
pub use adam::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS, AdamHook, AdamMoments, adam_stage_config};
pub use adam_nscl::AdamNscl;
#[cfg(feature = "baselines")]
pub use adam_nscl::{NSCL_EIG_FLOOR, NSCL_THRESHOLD, NsclConfig, null_space_dim, project_update, range_basis};
pub use became::{Became, BecameTrace, MergeTrace};
pub use ewc::Ewc;
pub use finetune::FineTune;
pub use gpm::GpmMethod;
#[cfg(feature = "baselines")]
pub use holistic::{CORRECTION_SAMPLES, HOLISTIC_LR, Holistic, linearisation_error};
pub use joint::Joint;
#[cfg(feature = "baselines")]
pub use merging::{MergeRule, Merging, PAM_EPSILON};
pub use prototype::{
    ClassMeans, FEATURE_BATCH, InputStats, MAX_RANDOM_FEATURES, Prototype, PrototypeRule, RandomFourierSpec,
    SLDA_SHRINKAGE, SharedCovariance, Shrinkage, SldaStats, UNSEEN_CLASS_BIAS, ensure_random_features, ncm_head,
    oas_shrinkage, parse_random_features, random_features_width, random_fourier_width, randumb_model,
    shaped_with_random_features, slda_head, slda_head_with, trunk_features,
};
pub use skip::{ensure_identity_skip, identity_skip_of};
#[cfg(feature = "baselines")]
pub use trm::{TRM_BETA, TRM_GAMMA, TRM_STEPS, Trm};

/// The class-incremental configuration the device learns with by default (the learner, the daemon,
/// `host device-learn` and the demo; `host simulate --method field` runs the same): GPM + BECAME with the
/// [`class_il`] options named by its tokens — the labels trick, the head written as streaming LDA, its covariance
/// shrunk by OAS — over the trained features **and** the features entering the trunk's fully connected layers,
/// carried beside them (`+id`, [`ensure_identity_skip`]; on a model cut behind a frozen prefix, the prefix's
/// features). Chosen on the shipped base learning 4/5, 6/7, 8/9 from K photos per digit with their jittered copies
/// (docs/results.md, session 33, 3 seeds): new digits 81.86 / 91.27 / 94.42 % at K = 5 / 10 / 20 against
/// 78.77 / 86.11 / 88.84 % for the session-32 default `gpm+became+lt+slda+oas`, whose head read only the 100
/// features of the trained 800 → 100 layer. The SLDA head runs without BECAME's stage 2 ([`Became`]'s stage-2
/// rule; the merge designs measured under it are in docs/results.md, sessions 30 and 33).
pub const FIELD_METHOD: &str = "gpm+became+lt+slda+oas+id";

/// The widths the field's random-feature expansion may take, widest first.
pub const FIELD_RANDOM_FEATURES: [u32; 4] = [2048, 1024, 512, 256];

/// The widest of [`FIELD_RANDOM_FEATURES`] whose SLDA covariance (`8·M²` bytes, f64) takes at most half of a
/// `fisher` budget of `fisher_budget` bytes (the rest holds the stored Fisher, the class means and the trained
/// head); `None` when not even the narrowest fits (the field then runs SLDA over the trunk's own features).
pub fn field_random_features(fisher_budget: u64) -> Option<u32> {
    FIELD_RANDOM_FEATURES.into_iter().find(|&m| 2 * 8 * u64::from(m) * u64::from(m) <= fisher_budget)
}

/// The GPM settings of the device: ε = 0.97 on every projected layer, 300 samples per layer (GPM's MLP setting;
/// its conv nets' 125 cost the field 1.4 points of split-mnist-ci ACC, session 24), the one shared head projected.
pub fn field_gpm() -> crate::gpm::GpmConfig {
    crate::gpm::GpmConfig { thresholds: vec![0.97], threshold_increment: 0.0, samples: 300, project_heads: true }
}

/// The method of a board in a fleet (issue 18): [`FIELD_METHOD`] with the trunk frozen (`+ft`). Every board keeps
/// the fleet's trunk, so the SLDA statistics of all boards are over the same features and the fleet merge of
/// their statistics is the head one board would compute from all their samples (docs/results.md, "Fleet":
/// 95.5–96.4 % merged against 82.5–87.6 % for the plain average and 86–94 % when every board trains its trunk).
pub const FLEET_METHOD: &str = "gpm+became+lt+slda+rp2048+ft";

/// [`FIELD_METHOD`] with the training schedule `train` (both stages), [`field_gpm`], `F_old` stored in `format`
/// and the random-feature width that fits a `fisher` budget of `fisher_budget` bytes ([`field_random_features`]).
pub fn field_method(train: TrainConfig, format: crate::fisher::FisherFormat, fisher_budget: u64) -> Result<Became> {
    device_method(FIELD_METHOD, train, format, fisher_budget)
}

/// [`FLEET_METHOD`], otherwise as [`field_method`].
pub fn fleet_method(train: TrainConfig, format: crate::fisher::FisherFormat, fisher_budget: u64) -> Result<Became> {
    device_method(FLEET_METHOD, train, format, fisher_budget)
}

fn device_method(
    spec: &str,
    train: TrainConfig,
    format: crate::fisher::FisherFormat,
    fisher_budget: u64,
) -> Result<Became> {
    let tokens = spec.strip_prefix("gpm+became").unwrap_or_default().split('+').filter(|t| !t.is_empty());
    let (mut ci, lt) = class_il::ClassIl::parse_tokens(tokens)?;
    ci.random_features = ci.random_features.and(field_random_features(fisher_budget));
    Ok(Became::new(train, field_gpm()).with_fisher_format(format).with_class_il(ci, lt))
}

/// The error `export_state` returns for a host-side comparison method that keeps `bytes` between tasks which the
/// state store's schema (parameters, bases, one Fisher, BECAME's SLDA statistics) has no place for.
pub(crate) fn host_only_state(name: &str, bytes: usize) -> Error {
    Error::Config(format!(
        "method {name} keeps {bytes} bytes the state store does not hold; it is for host-side comparison"
    ))
}

/// `import_state` of a method that keeps nothing the state store holds: only an empty state (no task seen, no
/// bases, no Fisher) is accepted.
pub(crate) fn import_nothing(name: &str, state: &MethodState) -> Result<()> {
    if state.tasks_seen > 0 || !state.bases.is_empty() || state.fisher.is_some() || state.slda.is_some() {
        return Err(Error::Config(format!("method {name}'s state cannot be restored from the store")));
    }
    Ok(())
}

/// Everything a method may use besides the model and the task.
pub struct LearnContext<'a> {
    /// The run's seeded random stream (shuffling, sampling).
    pub rng: &'a mut ChaCha8Rng,
    /// Progress sink.
    pub progress: &'a mut dyn Progress,
    /// Stored samples of earlier classes (the exemplar memory) that a class-incremental method
    /// may replay; `None` when nothing is stored. Labels are global class ids, like the task's.
    pub replay: Option<&'a Samples>,
}

/// What a method reports after learning one task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskReport {
    /// Task index in the stream.
    pub task_id: usize,
    /// Training logs per stage (`"train"`, or `"stage1"`/`"stage2"` for two-stage methods).
    pub stages: Vec<(String, TrainLog)>,
    /// Merge coefficient α used for this task, if the method merges.
    pub alpha: Option<f64>,
    /// Basis size per projected layer after this task, if the method keeps bases.
    pub basis_sizes: Vec<usize>,
    /// Wall-clock seconds per phase (e.g. `stage1`, `stage2`, `fisher`, `merge`, `basis`).
    pub timings: Vec<(String, f64)>,
    /// Bytes the method keeps between tasks after this task.
    pub bytes_kept: usize,
    /// Per projected layer: the share of this task's representation energy that the bases budget made the basis
    /// drop (0 everywhere when the bases fit; empty for methods without bases). See [`crate::gpm::Gpm::max_bytes`].
    #[serde(default)]
    pub basis_energy_lost: Vec<f64>,
    /// Tangent-space methods (holistic): the deployed network's distance from the linearised one that was trained,
    /// relative to the distance training moved it ([`holistic::linearisation_error`]); `None` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linearisation_error: Option<f64>,
}

/// What a method keeps between tasks, in the state store's schema (for [`edgelearn_store::LearnerState`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodState {
    /// Tasks learned so far.
    pub tasks_seen: usize,
    /// GPM bases, one per projected layer (empty without GPM or before the first task).
    pub bases: Vec<BasisState>,
    /// The accumulated Fisher, in the method's storage format.
    pub fisher: Option<FisherBlob>,
    /// The SLDA head's statistics (the `slda` class-incremental option).
    pub slda: Option<edgelearn_store::SldaState>,
}

/// The [`StepPlan`] of plain SGD training with `cfg` (the best-validation copy is the one transient vector).
pub fn sgd_plan(cfg: &TrainConfig) -> StepPlan {
    StepPlan { batch_size: cfg.batch_size, momentum: cfg.momentum != 0.0, flat_copies: 1, ..StepPlan::default() }
}

/// A continual-learning method (fine-tune, EWC, GPM, BECAME, merges, ...).
pub trait Method {
    /// Short identifier used on the command line and in reports.
    fn name(&self) -> String;

    /// Learn `task` into `model`, in place; the model is then evaluated on every task by the caller.
    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport>;

    /// Bytes of state the method keeps between tasks (not counting the model itself).
    fn bytes_kept(&self) -> usize {
        0
    }

    /// Whether the method trains with a held-out validation split (its learning-rate schedule, best-validation
    /// restore). A method that trains nothing says no, and the device learner gives it every buffered sample
    /// ([`crate::learner::VAL_EVERY`]).
    fn uses_validation(&self) -> bool {
        true
    }

    /// What learning one more task on `model` needs in each budget, from the method's current state, computed
    /// without allocating it ([`crate::budget`]). The default is plain SGD with batches of 64 and nothing kept;
    /// every method of this crate overrides it.
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        Footprint::estimate(model, &StepPlan { batch_size: 64, flat_copies: 1, ..StepPlan::default() })
    }

    /// Limit the bytes of the GPM bases (all layers together): a basis that would outgrow it keeps its
    /// highest-energy directions ([`crate::gpm::Gpm::max_bytes`]). `None` lifts the limit. Methods without bases
    /// ignore it.
    fn set_bases_budget(&mut self, _bytes: Option<u64>) {}

    /// The model's flat parameter vector grew ([`Model::grow_head`], class-incremental learning): resize every
    /// flat per-parameter vector the method keeps (new entries: zero Fisher, anchors at the new parameters'
    /// values). Bases are over layer inputs and do not change. On error the method is unchanged (the learner
    /// relies on it when a new class is refused). The default keeps nothing and does nothing.
    fn params_grown(&mut self, _growth: &ParamGrowth) -> Result<()> {
        Ok(())
    }

    /// What the method keeps between tasks, for the state store. The default keeps nothing.
    fn export_state(&self) -> Result<MethodState> {
        Ok(MethodState::default())
    }

    /// Restore what [`Method::export_state`] saved, for `model` (already holding the stored parameters). On error
    /// the method is unchanged. The default accepts only an empty state.
    fn import_state(&mut self, _model: &Model, state: MethodState) -> Result<()> {
        if state.bases.is_empty() && state.fisher.is_none() && state.slda.is_none() {
            Ok(())
        } else {
            Err(Error::Config(format!("method {} keeps no bases or Fisher; the stored state has some", self.name())))
        }
    }
}

/// A boxed method, or a borrowed one, is a method: every trait method is forwarded, the defaulted ones included
/// (a wrapper that fell back to a default would change what the learner does, e.g. hold samples out of a method
/// that trains nothing, [`Method::uses_validation`]).
macro_rules! forward_method {
    ($($ty:ty),*) => {$(
        impl<M: Method + ?Sized> Method for $ty {
            fn name(&self) -> String {
                (**self).name()
            }

            fn learn_task(
                &mut self,
                model: &mut Model,
                task: &TaskData<'_>,
                ctx: &mut LearnContext<'_>,
            ) -> Result<TaskReport> {
                (**self).learn_task(model, task, ctx)
            }

            fn bytes_kept(&self) -> usize {
                (**self).bytes_kept()
            }

            fn uses_validation(&self) -> bool {
                (**self).uses_validation()
            }

            fn footprint(&self, model: &Model) -> Result<Footprint> {
                (**self).footprint(model)
            }

            fn set_bases_budget(&mut self, bytes: Option<u64>) {
                (**self).set_bases_budget(bytes);
            }

            fn params_grown(&mut self, growth: &ParamGrowth) -> Result<()> {
                (**self).params_grown(growth)
            }

            fn export_state(&self) -> Result<MethodState> {
                (**self).export_state()
            }

            fn import_state(&mut self, model: &Model, state: MethodState) -> Result<()> {
                (**self).import_state(model, state)
            }
        }
    )*};
}

forward_method!(Box<M>, &mut M);

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::nn::zoo;

    /// A method whose every defaulted trait method answers something other than the default.
    #[derive(Default)]
    struct Stub {
        bases_budget: Option<u64>,
        grown: bool,
    }

    impl Method for Stub {
        fn name(&self) -> String {
            "stub".into()
        }

        fn learn_task(&mut self, _: &mut Model, task: &TaskData<'_>, _: &mut LearnContext<'_>) -> Result<TaskReport> {
            Ok(TaskReport { task_id: task.task_id, ..TaskReport::default() })
        }

        fn bytes_kept(&self) -> usize {
            42
        }

        fn uses_validation(&self) -> bool {
            false
        }

        fn footprint(&self, _: &Model) -> Result<Footprint> {
            Err(Error::Config("stub footprint".into()))
        }

        fn set_bases_budget(&mut self, bytes: Option<u64>) {
            self.bases_budget = bytes;
        }

        fn params_grown(&mut self, _: &ParamGrowth) -> Result<()> {
            self.grown = true;
            Ok(())
        }

        fn export_state(&self) -> Result<MethodState> {
            Ok(MethodState { tasks_seen: 3, ..MethodState::default() })
        }

        fn import_state(&mut self, _: &Model, state: MethodState) -> Result<()> {
            Err(Error::Config(format!("stub import of {} tasks", state.tasks_seen)))
        }
    }

    fn uses_validation<M: Method>(m: &M) -> bool {
        m.uses_validation()
    }

    /// `+ft` trains nothing: boxed (as methods chosen at run time are), the fleet's method still says it needs no
    /// validation split, so the learner gives it every buffered sample; the field method (which trains) does.
    #[test]
    fn a_boxed_method_that_trains_nothing_uses_no_validation() {
        let format = crate::fisher::FisherFormat::F32;
        let fleet = fleet_method(TrainConfig::default(), format, u64::MAX).unwrap();
        assert!(!uses_validation(&fleet));
        let boxed: Box<dyn Method> = Box::new(fleet);
        assert!(!uses_validation(&boxed));
        let field: Box<dyn Method> = Box::new(field_method(TrainConfig::default(), format, u64::MAX).unwrap());
        assert!(uses_validation(&field));
    }

    /// `Box<M>` and `&mut M` forward every trait method, the defaulted ones included.
    fn forwarded<M: Method>(m: &mut M, model: &mut Model) {
        assert_eq!(m.name(), "stub");
        assert_eq!(m.bytes_kept(), 42);
        assert!(!m.uses_validation());
        assert!(matches!(m.footprint(model), Err(Error::Config(s)) if s == "stub footprint"));
        m.set_bases_budget(Some(7));
        let growth = model.grow_head(0, 3).unwrap();
        m.params_grown(&growth).unwrap();
        assert_eq!(m.export_state().unwrap().tasks_seen, 3);
        let refused = m.import_state(model, MethodState { tasks_seen: 5, ..MethodState::default() });
        assert!(matches!(refused, Err(Error::Config(s)) if s == "stub import of 5 tasks"));
    }

    #[test]
    fn a_box_forwards_every_method() {
        let mut model = zoo::mlp(4, &[3], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let mut boxed = Box::new(Stub::default());
        forwarded(&mut boxed, &mut model);
        assert_eq!(boxed.bases_budget, Some(7));
        assert!(boxed.grown);
        // A borrowed method (what a simulation hands the learner) forwards the same way.
        let mut model = zoo::mlp(4, &[3], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let mut stub = Stub::default();
        forwarded(&mut &mut stub, &mut model);
        assert_eq!(stub.bases_budget, Some(7));
    }
}
