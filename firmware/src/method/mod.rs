//! Continual-learning methods behind one interface: each learns one task at a time on a shared model.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::TaskData;
use crate::error::Result;
use crate::nn::Model;
use crate::train::{Progress, TrainLog};

mod became;
mod ewc;
mod finetune;
mod gpm;
mod joint;

pub use became::Became;
pub use ewc::Ewc;
pub use finetune::FineTune;
pub use gpm::GpmMethod;
pub use joint::Joint;

/// Everything a method may use besides the model and the task.
pub struct LearnContext<'a> {
    /// The run's seeded random stream (shuffling, sampling).
    pub rng: &'a mut ChaCha8Rng,
    /// Progress sink.
    pub progress: &'a mut dyn Progress,
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
}
