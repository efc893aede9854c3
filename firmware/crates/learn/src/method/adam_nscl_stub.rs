//! The stand-in for Adam-NSCL in a build without the `baselines` feature (the board's binary): a type with no
//! values, so that [`super::Became`]'s optional Adam-NSCL stage 1 is always `None` and every branch on it compiles
//! to nothing. Adam-NSCL itself ([`super::adam_nscl`] with the feature) is a host-side comparison method.

use crate::budget::StepPlan;
use edgelearn_core::data::TaskData;
use edgelearn_core::error::Result;
use edgelearn_core::nn::Model;
use edgelearn_core::train::TrainLog;

use super::{LearnContext, MethodState};

/// Adam-NSCL is not compiled in: no value of this type exists.
#[derive(Debug, Clone)]
pub enum AdamNscl {}

impl AdamNscl {
    /// Unreachable: no value exists.
    pub fn bytes(&self) -> usize {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn null_dims(&self) -> &[usize] {
        match *self {}
    }

    pub(crate) fn plan(&self, _model: &Model) -> Result<StepPlan> {
        match *self {}
    }

    pub(crate) fn train_stage(
        &mut self,
        _model: &mut Model,
        _task: &TaskData<'_>,
        _ctx: &mut LearnContext<'_>,
        _stage: &str,
    ) -> Result<(TrainLog, f64)> {
        match *self {}
    }

    pub(crate) fn update_memory(&mut self, _model: &mut Model, _task: &TaskData<'_>) -> Result<f64> {
        match *self {}
    }

    pub(crate) fn export_state(&self) -> Result<MethodState> {
        match *self {}
    }

    pub(crate) fn import_state(&mut self, _model: &Model, _state: MethodState) -> Result<()> {
        match *self {}
    }
}
