//! A board adopts the fleet model: [`adopted_state`] turns a checked [`FleetModel`] and the board's committed
//! state into the state the board commits next ([`edgelearn_learn::learner::Learner::adopt`], one A/B commit).
//!
//! What changes: the trainable parameters (the merged trunk, the head over the fleet's class registry), the class
//! registry (the fleet's, sorted by name: class ids may change, and every id the state holds — tasks, replay
//! samples — is renumbered by name), the accumulated Fisher (`Σᵢ Fᵢ`) and the SLDA statistics (the fleet's pooled
//! ones, so the board's next task adds to what every board learned). What stays: the board's GPM bases, metrics
//! history and inbox ledger (the photos it learned are still the ones it learned), and its generation counter.
//!
//! When a board adopts (otherwise `Ok(None)`, nothing to do):
//! - the model is newer than the one the state was adopted from (`version >` the state's `model_version`);
//! - the model merged the board's newest learned update (`(device, learned_generation)` in `merged`), so adopting
//!   never drops a task the board learned after its last update reached the merger (it adopts the next model,
//!   which has it).
//!
//! A model that passes those but does not fit the board (another trunk, a class the board knows missing from the
//! registry, statistics missing) is an error: nothing is adopted.

use crate::model::FleetModel;
use edgelearn_core::error::{Error, Result};
use edgelearn_store::{ClassEntry, FleetState, LearnerState, ModelDesc, ReplaySeen};

/// The state a board with committed state `current` (device id `device`) commits to adopt `model`, or `None`
/// when it should not adopt it (see the [module docs](self)). `model` must already be decoded and checked
/// ([`crate::decode_model`]: its fleet, base model and consistency).
pub fn adopted_state(current: &LearnerState, model: &FleetModel, device: &str) -> Result<Option<LearnerState>> {
    let fleet = current.fleet.clone().unwrap_or_default();
    if model.version <= fleet.model_version {
        return Ok(None);
    }
    if fleet.learned_generation > 0 && !model.merged.iter().any(|(d, g)| d == device && *g == fleet.learned_generation)
    {
        return Ok(None);
    }
    let refuse = |m: String| Err(Error::Config(format!("fleet model {}: {m}", model.version)));
    // The trunk: the same entries (names, shapes, offsets); the head over the model's registry.
    let trunk = |layout: &[edgelearn_store::ParamEntry]| -> Vec<edgelearn_store::ParamEntry> {
        layout.iter().filter(|p| !p.name.starts_with("head.")).cloned().collect()
    };
    if trunk(&current.layout) != trunk(&model.layout) {
        return refuse("its trunk is not this board's".into());
    }
    let width = |layout: &[edgelearn_store::ParamEntry]| {
        layout.iter().find(|p| p.name == "head.0.weight").and_then(|p| p.shape.get(1).copied())
    };
    if width(&current.layout) != width(&model.layout) {
        return refuse("its head's input width is not this board's".into());
    }
    let new_id = |old: u32| -> Result<u32> {
        let name = current
            .classes
            .iter()
            .find(|c| c.id == old)
            .map(|c| c.name.as_str())
            .ok_or_else(|| Error::Config(format!("class id {old} is not in the board's registry")))?;
        model
            .classes
            .iter()
            .position(|c| c == name)
            .map(|i| i as u32)
            .ok_or_else(|| Error::UnknownClass(format!("fleet model {} has no class {name:?}", model.version)))
    };
    for c in &current.classes {
        new_id(c.id)?;
    }
    let slda = match (&current.slda, &model.slda) {
        (None, _) => None,
        (Some(_), Some(pooled)) => Some(pooled.to_state(&model.classes)?),
        (Some(_), None) => return refuse("no SLDA statistics for this board's SLDA head".into()),
    };
    let mut next = current.clone();
    next.model = ModelDesc { head_outputs: vec![model.classes.len() as u32], ..current.model.clone() };
    next.params = model.params.clone();
    next.layout = model.layout.clone();
    next.fisher = Some(model.fisher.clone());
    next.slda = slda;
    next.classes =
        model.classes.iter().enumerate().map(|(i, name)| ClassEntry { id: i as u32, name: name.clone() }).collect();
    for t in &mut next.tasks {
        t.classes = t.classes.iter().map(|&c| new_id(c)).collect::<Result<_>>()?;
    }
    next.replay.labels = next.replay.labels.iter().map(|&c| new_id(c)).collect::<Result<_>>()?;
    let mut seen: Vec<ReplaySeen> = next
        .replay
        .seen
        .iter()
        .map(|s| Ok(ReplaySeen { class: new_id(s.class)?, seen: s.seen }))
        .collect::<Result<_>>()?;
    seen.sort_by_key(|s| s.class);
    next.replay.seen = seen;
    next.fleet = Some(FleetState { model_version: model.version, learned_generation: fleet.learned_generation });
    next.validate()?;
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FleetModel, merge_updates};
    use edgelearn_learn::fisher::FisherFormat;
    use edgelearn_store::{InboxLedger, ParamEntry, ReplayState, TaskEntry};

    /// A board state shaped like the fixture updates (2×3 trunk, head of width 2 with a bias), knowing `classes`.
    fn board(classes: &[&str], learned: u64) -> LearnerState {
        let u = crate::update::tests::update("a", learned, classes, 1.0, FisherFormat::F32);
        let slda = u.slda.as_ref().unwrap().to_state(&u.classes).unwrap();
        LearnerState {
            generation: learned,
            model: ModelDesc {
                arch: "t".into(),
                input_shape: vec![3],
                trunk: vec!["linear".into()],
                head_outputs: vec![classes.len() as u32],
            },
            params: u.params.clone(),
            layout: u.layout.clone(),
            fisher: Some(u.fisher.clone()),
            tasks: vec![TaskEntry { id: 0, name: "t0".into(), head: 0, classes: (0..classes.len() as u32).collect() }],
            classes: classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassEntry { id: i as u32, name: c.to_string() })
                .collect(),
            inbox: InboxLedger { samples_learned: 9, files: vec![] },
            replay: ReplayState {
                features: 3,
                labels: vec![0, 1],
                values: vec![0.0; 6],
                seen: vec![ReplaySeen { class: 0, seen: 1 }, ReplaySeen { class: 1, seen: 1 }],
            },
            slda: Some(slda),
            fleet: Some(FleetState { model_version: 0, learned_generation: learned }),
            ..LearnerState::default()
        }
    }

    fn fleet_model(version: u64, updates: &[crate::FleetUpdate]) -> FleetModel {
        FleetModel::from_merge("lab", version, &merge_updates(updates).unwrap())
    }

    #[test]
    fn a_board_adopts_a_newer_model_that_merged_its_newest_task_and_renumbers_its_classes() {
        let a = crate::update::tests::update("a", 3, &["dog", "cat"], 1.0, FisherFormat::F32);
        let b = crate::update::tests::update("b", 5, &["eel", "ant"], 2.0, FisherFormat::F32);
        let current = board(&["dog", "cat"], 3);
        let model = fleet_model(2, &[a.clone(), b.clone()]);
        let next = adopted_state(&current, &model, "a").unwrap().expect("adopts");
        let names: Vec<&str> = next.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ant", "cat", "dog", "eel"]);
        assert_eq!(next.params, model.params);
        assert_eq!(next.model.head_outputs, [4]);
        // dog was 0 and cat 1; now dog is 2 and cat 1: tasks and replay labels follow the names.
        assert_eq!(next.tasks[0].classes, [2, 1]);
        assert_eq!(next.replay.labels, [2, 1]);
        assert_eq!(next.replay.seen.iter().map(|s| s.class).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(next.fleet, Some(FleetState { model_version: 2, learned_generation: 3 }));
        assert_eq!(next.inbox, current.inbox);
        assert_eq!(next.slda.as_ref().unwrap().counts.len(), 4);
        // Not again (same version), not an older one, not one that lacks the board's newest task.
        assert_eq!(adopted_state(&next, &model, "a").unwrap(), None);
        assert_eq!(adopted_state(&next, &fleet_model(1, &[a.clone(), b.clone()]), "a").unwrap(), None);
        let ahead = board(&["dog", "cat"], 4);
        assert_eq!(adopted_state(&ahead, &fleet_model(3, &[a.clone(), b.clone()]), "a").unwrap(), None);
        // A board that never learned adopts any newer model.
        let fresh = LearnerState { fleet: None, replay: ReplayState::default(), tasks: vec![], ..board(&["dog"], 0) };
        assert!(adopted_state(&fresh, &model, "c").unwrap().is_some());
    }

    #[test]
    fn a_model_that_does_not_fit_the_board_is_refused() {
        let a = crate::update::tests::update("a", 3, &["dog", "cat"], 1.0, FisherFormat::F32);
        let current = board(&["dog", "cat", "yak"], 3);
        // The model lacks a class the board knows.
        assert!(adopted_state(&current, &fleet_model(2, std::slice::from_ref(&a)), "a").is_err());
        // Another trunk.
        let mut model = fleet_model(2, std::slice::from_ref(&a));
        let current = board(&["dog", "cat"], 3);
        model.layout[0] = ParamEntry { name: "trunk.9.weight".into(), ..model.layout[0].clone() };
        assert!(adopted_state(&current, &model, "a").is_err());
        // No statistics for an SLDA board.
        let mut model = fleet_model(2, std::slice::from_ref(&a));
        model.slda = None;
        assert!(adopted_state(&current, &model, "a").is_err());
    }
}
