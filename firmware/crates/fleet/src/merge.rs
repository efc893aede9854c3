//! The fleet merge: many boards' updates into one model over the union of their classes.

use crate::slda::SldaSums;
use crate::update::FleetUpdate;
use edgelearn_core::error::{Error, Result};
use edgelearn_learn::merge::fisher_weighted::ImmModeSums;
use edgelearn_store::ParamEntry;

/// The merged model, ready to be published as the fleet model.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedModel {
    /// The base model every merged update started from.
    pub base_model: String,
    /// The merged class registry (the union, sorted by name), in head-row order.
    pub classes: Vec<String>,
    /// The merged layout: the boards' trunk entries, then `head.0.weight` (`classes × width`) and `head.0.bias`.
    pub layout: Vec<ParamEntry>,
    /// The merged parameters, in `layout` order.
    pub params: Vec<f32>,
    /// `Σᵢ Fᵢ` per parameter (for a head row, over the boards that know its class): the merged model's Fisher.
    pub fisher: Vec<f32>,
    /// `(device, generation)` of every update merged, sorted by device, then generation.
    pub merged: Vec<(String, u64)>,
    /// The pooled SLDA statistics of every update (`None` when the updates carry none): what a board that adopts
    /// the model goes on learning from.
    pub slda: Option<SldaSums>,
}

/// Merge the boards' updates with the Fisher-weighted closed form, per parameter `p`:
///
/// `θ*_p = (Σᵢ Fᵢ,p)⁻¹ Σᵢ Fᵢ,p θᵢ,p`
///
/// over every board `i` (its newest update) for the trunk. `Fᵢ` is board `i`'s accumulated diagonal Fisher
/// (decoded from its compact format) plus [`edgelearn_learn::merge::fisher_weighted::IMM_FISHER_EPS`], so a parameter no board
/// uses gets the plain mean. This is the mode of the product of the boards' Laplace posteriors (mode-IMM's merge,
/// [`ImmModeSums`], the same code).
///
/// **The head.** With SLDA statistics in the updates (the device's field method), the head is the SLDA head of
/// the pooled statistics, `Σ` over *every* update of every board, each `(device, generation)` once
/// ([`SldaSums::add`], [`SldaSums::head`]): the updates carry what each task added, so the pool holds every
/// sample every board learned, once. (Measured, docs/results.md "Fleet": the Fisher-weighted rows lose to a plain
/// average, because each SLDA row is a whole solution under its board's own `Σ`; pooling the statistics does not.)
/// Without statistics, the head's row of class `c` (weights and bias) is the same Fisher-weighted closed form over
/// the boards whose registry has `c` (a board that never saw a class says nothing about its row). A class with no
/// pooled sample gets a zero row.
///
/// **Relation to BECAME's α.** For two models, BECAME minimises the same Fisher-weighted quadratic
/// `Σ_p F_old,p (θ_p − θ_GP,p)² + F_cur,p (θ_p − θ̂_p)²` but only along the line `θ = (1 − α)θ_GP + αθ̂`, which
/// gives `α = Σ_p F_cur,p d_p² / Σ_p (F_old,p + F_cur,p) d_p²` with `d = θ̂ − θ_GP`. The unconstrained
/// minimiser is this merge with two boards, `θ*_p = θ_GP,p + a_p d_p` with `a_p = F_cur,p / (F_old,p + F_cur,p)`:
/// one α per parameter instead of one for the model. The two coincide when `a_p` is the same for every parameter
/// that moved, and BECAME's α is the `d²`-weighted mean of the `a_p` in general.
///
/// Determinism: updates are taken in `(device, generation)` order, a repeat of a pair once, the registry is sorted
/// by class name, and sums run in that order; the result does not depend on the order the updates arrived in.
/// Errors (nothing merged) when there is no update, when the boards disagree on the base model or the trunk's
/// layout, when some updates carry SLDA statistics and others do not, or when an update does not validate.
pub fn merge_updates(updates: &[FleetUpdate]) -> Result<MergedModel> {
    let mut all: Vec<&FleetUpdate> = Vec::with_capacity(updates.len());
    for u in updates {
        u.validate().map_err(|r| Error::Config(format!("update of {} refused: {r}", u.device)))?;
        all.push(u);
    }
    all.sort_by(|a, b| (&a.device, a.generation).cmp(&(&b.device, b.generation)));
    all.dedup_by(|a, b| a.device == b.device && a.generation == b.generation);
    // The newest update of each device: its trunk, Fisher and registry are the board's whole state.
    let mut latest: Vec<&FleetUpdate> = Vec::new();
    for &u in &all {
        match latest.last_mut() {
            Some(x) if x.device == u.device => *x = u,
            _ => latest.push(u),
        }
    }
    let first = *latest.first().ok_or_else(|| Error::Empty("fleet merge: no update".into()))?;
    let trunk: Vec<ParamEntry> = first.layout.iter().filter(|p| !p.name.starts_with("head.")).cloned().collect();
    let trunk_len: usize = trunk.iter().map(entry_len).sum();
    let width = head_width(first)?;
    for u in &latest {
        let theirs: Vec<&ParamEntry> = u.layout.iter().filter(|p| !p.name.starts_with("head.")).collect();
        let same = theirs.len() == trunk.len()
            && theirs.iter().zip(&trunk).all(|(a, b)| a.name == b.name && a.shape == b.shape && a.offset == b.offset);
        if u.base_model != first.base_model || !same || head_width(u)? != width {
            return Err(Error::Config(format!(
                "fleet merge: {} does not share {}'s base model and trunk",
                u.device, first.device
            )));
        }
    }
    let with_slda = all.iter().filter(|u| u.slda.is_some()).count();
    if with_slda != 0 && with_slda != all.len() {
        return Err(Error::Config(format!(
            "fleet merge: {with_slda} of {} updates carry SLDA statistics; a fleet merges all or none",
            all.len()
        )));
    }
    let fishers: Vec<Vec<f32>> = latest.iter().map(|u| u.fisher_values()).collect::<Result<_>>()?;

    // Trunk: every board.
    let mut sums = ImmModeSums::default();
    let mut trunk_fisher = vec![0.0f64; trunk_len];
    for (u, f) in latest.iter().zip(&fishers) {
        sums.add(&u.params[..trunk_len], &f[..trunk_len])?;
        trunk_fisher.iter_mut().zip(&f[..trunk_len]).for_each(|(s, &v)| *s += f64::from(v));
    }
    let mut params = sums.merge()?;
    let mut fisher: Vec<f32> = trunk_fisher.iter().map(|&v| v as f32).collect();

    // Head: one row (weights, then bias) per class of the union.
    let mut classes: Vec<String> = latest.iter().flat_map(|u| u.classes.iter().cloned()).collect();
    classes.sort();
    classes.dedup();
    let mut rows = Vec::with_capacity(classes.len());
    let mut row_fishers = Vec::with_capacity(classes.len());
    for c in &classes {
        let mut s = ImmModeSums::default();
        let mut rf = vec![0.0f64; width + 1];
        for (u, f) in latest.iter().zip(&fishers) {
            if let Some(r) = u.classes.iter().position(|x| x == c) {
                let (theta, fi) = (head_row(u, &u.params, r, width)?, head_row(u, f, r, width)?);
                s.add(&theta, &fi)?;
                rf.iter_mut().zip(&fi).for_each(|(a, &v)| *a += f64::from(v));
            }
        }
        rows.push(s.merge()?);
        row_fishers.push(rf);
    }
    let pooled = pool_slda(&all, width)?;
    if let Some(p) = &pooled {
        let (w, b) = p.head(&classes)?;
        for (r, row) in rows.iter_mut().enumerate() {
            row[..width].iter_mut().zip(w.row(r)).for_each(|(x, &v)| *x = v);
            row[width] = b[r];
        }
    }
    let n = classes.len();
    params.extend(rows.iter().flat_map(|r| r[..width].iter().copied()));
    params.extend(rows.iter().map(|r| r[width]));
    fisher.extend(row_fishers.iter().flat_map(|r| r[..width].iter().map(|&v| v as f32)));
    fisher.extend(row_fishers.iter().map(|r| r[width] as f32));
    let mut layout = trunk;
    let off = trunk_len as u64;
    layout.push(ParamEntry { name: "head.0.weight".into(), shape: vec![n as u32, width as u32], offset: off });
    layout.push(ParamEntry { name: "head.0.bias".into(), shape: vec![n as u32], offset: off + (n * width) as u64 });
    Ok(MergedModel {
        base_model: first.base_model.clone(),
        classes,
        layout,
        params,
        fisher,
        merged: all.iter().map(|u| (u.device.clone(), u.generation)).collect(),
        slda: pooled,
    })
}

/// The sum of every update's SLDA statistics, in the given order (`None` when the updates carry none).
fn pool_slda(all: &[&FleetUpdate], width: usize) -> Result<Option<SldaSums>> {
    let mut pooled: Option<SldaSums> = None;
    for u in all {
        if let Some(st) = &u.slda {
            pooled.get_or_insert_with(|| SldaSums::empty(width)).add(st)?;
        }
    }
    Ok(pooled)
}

fn entry_len(p: &ParamEntry) -> usize {
    p.shape.iter().map(|&d| d as usize).product()
}

fn entry<'a>(u: &'a FleetUpdate, name: &str) -> Result<&'a ParamEntry> {
    u.layout.iter().find(|p| p.name == name).ok_or_else(|| Error::Config(format!("{}: no {name}", u.device)))
}

fn head_width(u: &FleetUpdate) -> Result<usize> {
    let w = entry(u, "head.0.weight")?;
    match w.shape.as_slice() {
        [_, width] => Ok(*width as usize),
        s => Err(Error::Config(format!("{}: head.0.weight of shape {s:?}", u.device))),
    }
}

/// Row `r` of the head in `values` (laid out as `u.layout`): its `width` weights, then its bias (0 without one).
fn head_row(u: &FleetUpdate, values: &[f32], r: usize, width: usize) -> Result<Vec<f32>> {
    let w = entry(u, "head.0.weight")?.offset as usize + r * width;
    let mut row =
        values.get(w..w + width).ok_or_else(|| Error::Config(format!("{}: head row {r}", u.device)))?.to_vec();
    let bias = match u.layout.iter().find(|p| p.name == "head.0.bias") {
        Some(b) => {
            *values.get(b.offset as usize + r).ok_or_else(|| Error::Config(format!("{}: bias {r}", u.device)))?
        }
        None => 0.0,
    };
    row.push(bias);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::tests::update;
    use edgelearn_learn::fisher::FisherFormat;

    #[test]
    fn two_boards_merge_per_parameter_and_per_class() {
        // Without SLDA statistics: the head rows are Fisher-weighted too.
        let a = FleetUpdate { slda: None, ..update("a", 1, &["cat", "dog"], 1.0, FisherFormat::F32) };
        let b = FleetUpdate { slda: None, ..update("b", 4, &["dog", "eel"], -2.0, FisherFormat::F32) };
        let m = merge_updates(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(m.slda, None);
        assert_eq!(m.classes, ["cat", "dog", "eel"]);
        assert_eq!(m.merged, [("a".to_string(), 1), ("b".to_string(), 4)]);
        let (fa, fb) = (a.fisher_values().unwrap(), b.fisher_values().unwrap());
        let eps = f64::from(edgelearn_learn::merge::fisher_weighted::IMM_FISHER_EPS);
        let want = |ta: f32, wa: f32, tb: f32, wb: f32| {
            let (wa, wb) = (f64::from(wa) + eps, f64::from(wb) + eps);
            ((wa * f64::from(ta) + wb * f64::from(tb)) / (wa + wb)) as f32
        };
        for p in 0..6 {
            assert_eq!(m.params[p], want(a.params[p], fa[p], b.params[p], fb[p]), "trunk {p}");
            assert_eq!(m.fisher[p], fa[p] + fb[p]);
        }
        // cat only on a (row 0), eel only on b (row 1): copied; dog (a row 1, b row 0): weighted.
        let w = 2;
        assert_eq!(m.params[6..8], a.params[6..8]);
        assert_eq!(m.params[6 + 2 * w..6 + 3 * w], b.params[6 + w..6 + 2 * w]);
        for j in 0..w {
            let (pa, pb) = (6 + w + j, 6 + j);
            assert_eq!(m.params[6 + w + j], want(a.params[pa], fa[pa], b.params[pb], fb[pb]));
        }
        assert_eq!(m.params.len(), 6 + 3 * w + 3);
        assert_eq!(m.layout.last().map(|p| p.shape.clone()), Some(vec![3]));
    }

    #[test]
    fn merge_is_order_free_and_takes_one_update_per_device() {
        let a1 = update("a", 1, &["cat"], 1.0, FisherFormat::F16);
        let a2 = update("a", 2, &["cat", "fox"], 3.0, FisherFormat::F16);
        let b = update("b", 7, &["fox"], 0.5, FisherFormat::Log8);
        let one = merge_updates(&[a1.clone(), a2.clone(), b.clone()]).unwrap();
        let two = merge_updates(&[b.clone(), a2.clone(), a1.clone(), a2.clone()]).unwrap();
        assert_eq!(one, two, "arrival order and a repeat change nothing");
        assert_eq!(one.merged, [("a".to_string(), 1), ("a".to_string(), 2), ("b".to_string(), 7)]);
        // The trunk is a's newest with b's; a1's statistics are in the pool (they are what a's first task added).
        let newest = merge_updates(&[a2.clone(), b.clone()]).unwrap();
        assert_eq!(newest.params[..6], one.params[..6], "a1's parameters add nothing");
        let cat = |m: &MergedModel| {
            let p = m.slda.as_ref().unwrap();
            p.counts[p.classes.iter().position(|c| c == "cat").unwrap()]
        };
        assert_eq!((cat(&one), cat(&newest)), (4, 2), "a1's cat samples are pooled once");
        // One board: its own trunk back (mode of one posterior), bit for bit.
        let solo = merge_updates(std::slice::from_ref(&b)).unwrap();
        assert_eq!(solo.params[..6], b.params[..6]);
    }

    #[test]
    fn the_head_is_the_slda_head_of_the_pooled_statistics() {
        let a = update("a", 1, &["cat", "dog"], 1.0, FisherFormat::F32);
        let b = update("b", 4, &["dog", "eel"], -2.0, FisherFormat::F32);
        let m = merge_updates(&[a.clone(), b.clone()]).unwrap();
        let mut pooled = a.slda.clone().unwrap();
        pooled.add(b.slda.as_ref().unwrap()).unwrap();
        assert_eq!(m.slda.as_ref(), Some(&pooled));
        let (w, bias) = pooled.head(&m.classes).unwrap();
        let off = 6;
        let n = m.classes.len();
        assert_eq!(m.params[off..off + 2 * n], w.iter().copied().collect::<Vec<_>>()[..]);
        assert_eq!(m.params[off + 2 * n..], bias.to_vec()[..]);
        // dog: 3 samples on a (its row 1), 2 on b (its row 0) → 5.
        assert_eq!(pooled.counts[pooled.classes.iter().position(|c| c == "dog").unwrap()], 5);
        // A fleet of boards with and without statistics is not merged.
        let bare = FleetUpdate { slda: None, ..b };
        assert!(merge_updates(&[a, bare]).is_err());
    }

    #[test]
    fn boards_of_another_base_or_trunk_are_not_merged() {
        let a = update("a", 1, &["cat"], 1.0, FisherFormat::F32);
        let mut other = update("b", 1, &["dog"], 1.0, FisherFormat::F32);
        other.base_model = "base-2".into();
        assert!(merge_updates(&[a.clone(), other]).is_err());
        let mut wide = update("c", 1, &["dog"], 1.0, FisherFormat::F32);
        wide.layout[0].shape = vec![3, 2];
        assert!(merge_updates(&[a, wide]).is_err());
        assert!(merge_updates(&[]).is_err());
    }
}
