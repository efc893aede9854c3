//! Task streams for continual learning, built from a [`Dataset`].
//!
//! - [`permuted`]: Permuted-MNIST style — every task sees all classes, with its own fixed pixel permutation;
//!   one shared head.
//! - [`split`]: Split-MNIST style — task k sees only the classes of group k. Multi-head (task-incremental, one
//!   head per task, labels local to the group) or single-head (class-incremental, one growing head, labels in
//!   order of first appearance).
//!
//! Every task holds out a seeded random fraction of its training split as validation data. Streams are fully
//! determined by the data set, the arguments and the seed.

use ndarray::Array2;
use rand::seq::SliceRandom;

use firmware::data::Samples;

use super::Dataset;
use crate::error::{Error, Result};

/// Odd constant (2⁶⁴/φ) that spreads task indices over the seed space.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Salt that separates the validation-split rng from the permutation rng of the same task.
const VAL_SALT: u64 = 0x5641_4C5F_5350_4C54; // "VAL_SPLT"

/// One task of a stream: its classes, the head it trains, and its data.
#[derive(Debug, Clone)]
pub struct StreamTask {
    /// Position in the stream (0-based).
    pub id: usize,
    /// Human-readable name, e.g. `perm 3` or `classes 4,5`.
    pub name: String,
    /// Global class ids (of the data set) this task contains.
    pub classes: Vec<usize>,
    /// Head of the model this task trains and is evaluated on.
    pub head: usize,
    /// Training samples (training split minus the validation hold-out); labels as the head sees them.
    pub train: Samples,
    /// Validation samples held out of the training split.
    pub val: Samples,
    /// All test samples of the task's classes.
    pub test: Samples,
}

/// A sequence of tasks plus the output layout the model needs for them.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Stream name (e.g. `pmnist-10`, `split-mnist`).
    pub name: String,
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// True when each task has its own head (task-incremental); false for one shared head.
    pub multi_head: bool,
    /// Outputs of each head.
    pub head_sizes: Vec<usize>,
    /// The tasks in order.
    pub tasks: Vec<StreamTask>,
}

impl Stream {
    /// Width of one flattened input, `channels · rows · cols`.
    pub fn features(&self) -> usize {
        self.channels * self.rows * self.cols
    }
}

/// A ChaCha8 rng for task `task` of a stream seeded with `seed`, with `salt` separating independent uses.
fn task_rng(seed: u64, task: usize, salt: u64) -> rand_chacha::ChaCha8Rng {
    firmware::seeded_rng(seed ^ (task as u64).wrapping_mul(GOLDEN) ^ salt)
}

fn check_val_frac(val_frac: f64) -> Result<()> {
    if (0.0..1.0).contains(&val_frac) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("validation fraction {val_frac} must lie in [0, 1)")))
    }
}

/// Split `n` training indices into (train, val): shuffle with `rng`, the first `round(val_frac · n)` are
/// validation. Both lists come back sorted, so samples keep the data set's order.
fn hold_out(n: usize, val_frac: f64, rng: &mut rand_chacha::ChaCha8Rng) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let n_val = ((val_frac * n as f64).round() as usize).min(n);
    let mut val = idx[..n_val].to_vec();
    let mut train = idx[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// Rows `rows` of `x`, with columns permuted by `perm` (`out[:, j] = x[:, perm[j]]`) when given.
fn gather(x: &Array2<f32>, rows: &[usize], perm: Option<&[usize]>) -> Result<Array2<f32>> {
    let features = x.ncols();
    let mut out = Vec::with_capacity(rows.len() * features);
    for &r in rows {
        let src = x.row(r);
        match (src.as_slice(), perm) {
            (Some(src), Some(p)) => out.extend(p.iter().map(|&j| src[j])),
            (Some(src), None) => out.extend_from_slice(src),
            (None, Some(p)) => out.extend(p.iter().map(|&j| src[j])),
            (None, None) => out.extend(src.iter().copied()),
        }
    }
    Array2::from_shape_vec((rows.len(), features), out)
        .map_err(|e| Error::SizeMismatch(format!("gathering {} rows of {features} features: {e}", rows.len())))
}

/// Samples from rows `rows` of `x`, labels mapped through `label`.
fn samples(
    x: &Array2<f32>,
    y: &[usize],
    rows: &[usize],
    perm: Option<&[usize]>,
    label: impl Fn(usize) -> usize,
) -> Result<Samples> {
    let labels = rows.iter().map(|&r| label(y[r])).collect();
    Ok(Samples::new(gather(x, rows, perm)?, labels)?)
}

/// Permuted stream: `tasks` tasks over all classes of `ds`, task t with its own pixel permutation drawn from a
/// ChaCha8 rng seeded from `(seed, t)`. One shared head of `num_classes` outputs; labels are global.
/// `val_frac` of each task's training split (a different random subset per task) is held out as validation.
///
/// Errors: zero tasks, `val_frac` outside `[0, 1)`, or a hold-out that leaves no training samples.
pub fn permuted(ds: &Dataset, tasks: usize, seed: u64, val_frac: f64) -> Result<Stream> {
    if tasks == 0 {
        return Err(Error::Invalid("a permuted stream needs at least one task".into()));
    }
    check_val_frac(val_frac)?;
    check_dataset(ds)?;
    let features = ds.features();
    let classes: Vec<usize> = (0..ds.num_classes).collect();
    let test_rows: Vec<usize> = (0..ds.test_y.len()).collect();
    let mut out = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mut perm: Vec<usize> = (0..features).collect();
        perm.shuffle(&mut task_rng(seed, t, 0));
        let (train_rows, val_rows) = hold_out(ds.train_y.len(), val_frac, &mut task_rng(seed, t, VAL_SALT));
        if train_rows.is_empty() {
            return Err(Error::Invalid(format!("validation fraction {val_frac} leaves task {t} no training samples")));
        }
        out.push(StreamTask {
            id: t,
            name: format!("perm {t}"),
            classes: classes.clone(),
            head: 0,
            train: samples(&ds.train_x, &ds.train_y, &train_rows, Some(&perm), |c| c)?,
            val: samples(&ds.train_x, &ds.train_y, &val_rows, Some(&perm), |c| c)?,
            test: samples(&ds.test_x, &ds.test_y, &test_rows, Some(&perm), |c| c)?,
        });
    }
    Ok(Stream {
        name: format!("p{}-{tasks}", ds.name),
        channels: ds.channels,
        rows: ds.rows,
        cols: ds.cols,
        multi_head: false,
        head_sizes: vec![ds.num_classes],
        tasks: out,
    })
}

/// Split stream: task k holds the classes `groups[k]` of `ds`.
///
/// - `multi_head = true` (task-incremental): task k trains head k of `groups[k].len()` outputs; labels are the
///   index of the class within its group.
/// - `multi_head = false` (class-incremental): one head of as many outputs as classes in all groups; a class's
///   label is its position in the concatenation of the groups (the first task's classes are `0, 1, …`).
///
/// `val_frac` of each task's training samples is held out (seeded, per task); the test split of a task is every
/// test sample of its classes.
///
/// Errors: no groups, an empty group, a class id `>= num_classes`, a class in two groups (or twice in one), a
/// group without training samples, `val_frac` outside `[0, 1)`, or a hold-out that leaves no training samples.
pub fn split(
    ds: &Dataset,
    name: &str,
    groups: &[Vec<usize>],
    multi_head: bool,
    seed: u64,
    val_frac: f64,
) -> Result<Stream> {
    check_val_frac(val_frac)?;
    check_dataset(ds)?;
    let owner = check_groups(groups, ds.num_classes)?;
    // label_of[c] = (task, label the head sees) for each class that belongs to a group.
    let mut label_of: Vec<Option<(usize, usize)>> = vec![None; ds.num_classes];
    let mut global = 0;
    for (k, group) in groups.iter().enumerate() {
        for (local, &c) in group.iter().enumerate() {
            label_of[c] = Some((k, if multi_head { local } else { global }));
            global += 1;
        }
    }
    let label = |c: usize| label_of.get(c).copied().flatten().map_or(usize::MAX, |(_, l)| l);
    let rows_of = |y: &[usize], k: usize| -> Vec<usize> {
        y.iter().enumerate().filter(|&(_, &c)| owner.get(c).copied().flatten() == Some(k)).map(|(i, _)| i).collect()
    };

    let mut tasks = Vec::with_capacity(groups.len());
    for (k, group) in groups.iter().enumerate() {
        let all_train = rows_of(&ds.train_y, k);
        if all_train.is_empty() {
            return Err(Error::Invalid(format!("{name}: task {k} (classes {group:?}) has no training samples")));
        }
        let (train_pos, val_pos) = hold_out(all_train.len(), val_frac, &mut task_rng(seed, k, VAL_SALT));
        if train_pos.is_empty() {
            return Err(Error::Invalid(format!("validation fraction {val_frac} leaves task {k} no training samples")));
        }
        let train_rows: Vec<usize> = train_pos.iter().map(|&i| all_train[i]).collect();
        let val_rows: Vec<usize> = val_pos.iter().map(|&i| all_train[i]).collect();
        let test_rows = rows_of(&ds.test_y, k);
        tasks.push(StreamTask {
            id: k,
            name: format!("classes {}", group.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")),
            classes: group.clone(),
            head: if multi_head { k } else { 0 },
            train: samples(&ds.train_x, &ds.train_y, &train_rows, None, label)?,
            val: samples(&ds.train_x, &ds.train_y, &val_rows, None, label)?,
            test: samples(&ds.test_x, &ds.test_y, &test_rows, None, label)?,
        });
    }
    let head_sizes = if multi_head { groups.iter().map(Vec::len).collect() } else { vec![global] };
    Ok(Stream {
        name: name.to_string(),
        channels: ds.channels,
        rows: ds.rows,
        cols: ds.cols,
        multi_head,
        head_sizes,
        tasks,
    })
}

/// Salt of the rng that draws the shots ([`keep_shots`]).
const SHOTS_SALT: u64 = 0x5348_4F54_535F_4B00; // "SHOTS_K"

/// Few-shot training: every task of `stream` keeps only `k` training samples per class, the first `k` of that
/// class after a shuffle of the task's training split seeded from `(seed, task)` (each seed draws other shots);
/// the rest are unused. Kept samples stay in the split's order. Validation and test splits are unchanged. A class
/// with fewer than `k` training samples keeps all of them. Errors on `k = 0`.
pub fn keep_shots(stream: &mut Stream, k: usize, seed: u64) -> Result<()> {
    if k == 0 {
        return Err(Error::Invalid("--shots: at least 1 training sample per class".into()));
    }
    for task in &mut stream.tasks {
        let mut order: Vec<usize> = (0..task.train.len()).collect();
        order.shuffle(&mut task_rng(seed, task.id, SHOTS_SALT));
        let mut taken: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        let mut keep: Vec<usize> = order
            .into_iter()
            .filter(|&i| {
                let n = taken.entry(task.train.y[i]).or_insert(0);
                *n += 1;
                *n <= k
            })
            .collect();
        keep.sort_unstable();
        task.train = task.train.select(&keep);
    }
    Ok(())
}

/// Check that `ds` is internally consistent (labels in range, rows match), so stream building cannot index out
/// of bounds.
fn check_dataset(ds: &Dataset) -> Result<()> {
    let features = ds.features();
    for (what, x, y) in [("training", &ds.train_x, &ds.train_y), ("test", &ds.test_x, &ds.test_y)] {
        if x.nrows() != y.len() || x.ncols() != features {
            return Err(Error::SizeMismatch(format!(
                "{}: {what} data is {}x{} with {} labels, expected {features} features per row",
                ds.name,
                x.nrows(),
                x.ncols(),
                y.len()
            )));
        }
        if let Some(&bad) = y.iter().find(|&&c| c >= ds.num_classes) {
            return Err(Error::Invalid(format!(
                "{}: {what} label {bad} out of range for {} classes",
                ds.name, ds.num_classes
            )));
        }
    }
    Ok(())
}

/// Validate groups and return, per class id, the group that owns it.
fn check_groups(groups: &[Vec<usize>], num_classes: usize) -> Result<Vec<Option<usize>>> {
    if groups.is_empty() {
        return Err(Error::Invalid("a split stream needs at least one group of classes".into()));
    }
    let mut owner: Vec<Option<usize>> = vec![None; num_classes];
    for (k, group) in groups.iter().enumerate() {
        if group.is_empty() {
            return Err(Error::Invalid(format!("group {k} has no classes")));
        }
        for &c in group {
            let slot = owner.get_mut(c).ok_or_else(|| {
                Error::Invalid(format!("class {c} in group {k} is out of range (the data set has {num_classes})"))
            })?;
            if let Some(prev) = *slot {
                return Err(Error::Invalid(format!("class {c} appears in group {prev} and group {k}")));
            }
            *slot = Some(k);
        }
    }
    Ok(owner)
}

/// Parse a class-group spec such as `"0,1;2,3;4,5"`: groups separated by `;`, classes by `,`, spaces allowed.
///
/// Errors ([`Error::Invalid`]): an empty spec, an empty group, or a class that is not a non-negative integer.
/// Range and overlap checks happen in [`split`], which knows the data set.
pub fn parse_groups(spec: &str) -> Result<Vec<Vec<usize>>> {
    if spec.trim().is_empty() {
        return Err(Error::Invalid("empty class-group spec (expected e.g. \"0,1;2,3\")".into()));
    }
    spec.split(';')
        .enumerate()
        .map(|(k, group)| {
            if group.trim().is_empty() {
                return Err(Error::Invalid(format!("group {k} of \"{spec}\" is empty")));
            }
            group
                .split(',')
                .map(|c| {
                    c.trim().parse::<usize>().map_err(|_| {
                        Error::Invalid(format!("\"{}\" in group {k} of \"{spec}\" is not a class id", c.trim()))
                    })
                })
                .collect()
        })
        .collect()
}

/// Consecutive pairs of classes, `[[0,1],[2,3],…]`; with an odd count the last group holds one class.
pub fn default_pairs(num_classes: usize) -> Vec<Vec<usize>> {
    (0..num_classes).collect::<Vec<_>>().chunks(2).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A toy data set: `per_class` train and 2 test samples for each of `classes` classes, 2×3 images whose
    /// pixels encode (sample index, pixel index) so rows and permutations can be traced.
    fn toy(classes: usize, per_class: usize) -> Dataset {
        let features = 6;
        let n_train = classes * per_class;
        let n_test = classes * 2;
        let train_x = Array2::from_shape_fn((n_train, features), |(i, j)| (i * 100 + j) as f32);
        let test_x = Array2::from_shape_fn((n_test, features), |(i, j)| -((i * 100 + j) as f32));
        Dataset {
            name: "toy".into(),
            channels: 1,
            rows: 2,
            cols: 3,
            num_classes: classes,
            train_x,
            train_y: (0..n_train).map(|i| i % classes).collect(),
            test_x,
            test_y: (0..n_test).map(|i| i % classes).collect(),
        }
    }

    /// Recover (source row, permutation) from a permuted training row of `toy`.
    fn decode(row: ndarray::ArrayView1<'_, f32>) -> (usize, Vec<usize>) {
        let src = (row[0] as usize) / 100;
        (src, row.iter().map(|&v| v as usize - src * 100).collect())
    }

    /// `--shots K`: K training samples per class remain in every task, drawn per seed; validation and test splits
    /// are untouched; K above a class's count keeps it whole; K = 0 is refused.
    #[test]
    fn shots_keep_k_training_samples_per_class() {
        let ds = toy(4, 20);
        let full = split(&ds, "toy", &[vec![0, 1], vec![2, 3]], false, 5, 0.1).unwrap();
        let picked = |k: usize, seed: u64| {
            let mut s = full.clone();
            keep_shots(&mut s, k, seed).unwrap();
            s
        };
        for k in [1, 3, 5] {
            let s = picked(k, 5);
            for (t, f) in s.tasks.iter().zip(&full.tasks) {
                for &c in &f.train.y {
                    assert_eq!(t.train.y.iter().filter(|&&y| y == c).count(), k, "task {} class {c}", t.id);
                }
                assert_eq!(t.train.len(), 2 * k);
                assert_eq!((&t.val, &t.test), (&f.val, &f.test));
                // Every kept sample is one of the task's own training samples.
                for r in t.train.x.outer_iter() {
                    assert!(f.train.x.outer_iter().any(|q| q == r));
                }
            }
        }
        let (a, b) = (picked(3, 5), picked(3, 6));
        assert_ne!(a.tasks[0].train.x, b.tasks[0].train.x, "another seed draws other shots");
        assert_eq!(a.tasks[0].train.x, picked(3, 5).tasks[0].train.x, "the same seed the same shots");
        assert_eq!(picked(1000, 5).tasks[1].train, full.tasks[1].train);
        assert!(keep_shots(&mut full.clone(), 0, 5).is_err());
    }

    #[test]
    fn permutations_differ_per_task_and_are_bijections() {
        let ds = toy(3, 10);
        let s = permuted(&ds, 4, 7, 0.2).unwrap();
        assert_eq!(s.tasks.len(), 4);
        assert_eq!(s.name, "ptoy-4");
        assert!(!s.multi_head);
        assert_eq!(s.head_sizes, vec![3]);
        let mut perms = HashSet::new();
        for t in &s.tasks {
            assert_eq!(t.head, 0);
            assert_eq!(t.classes, vec![0, 1, 2]);
            let (_, perm) = decode(t.train.x.row(0));
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..6).collect::<Vec<_>>(), "not a bijection: {perm:?}");
            // The same permutation applies to every row of train, val and test.
            for r in 0..t.train.len() {
                let (src, p) = decode(t.train.x.row(r));
                assert_eq!(p, perm);
                assert_eq!(t.train.y[r], ds.train_y[src], "labels stay global");
            }
            for r in 0..t.val.len() {
                assert_eq!(decode(t.val.x.row(r)).1, perm);
            }
            let test_row: Vec<usize> = t.test.x.row(1).iter().map(|&v| (-v) as usize - 100).collect();
            assert_eq!(test_row, perm);
            perms.insert(perm);
        }
        assert_eq!(perms.len(), 4, "each task has its own permutation");
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let ds = toy(3, 10);
        let a = permuted(&ds, 3, 11, 0.1).unwrap();
        let b = permuted(&ds, 3, 11, 0.1).unwrap();
        let c = permuted(&ds, 3, 12, 0.1).unwrap();
        for ((ta, tb), tc) in a.tasks.iter().zip(&b.tasks).zip(&c.tasks) {
            assert_eq!(ta.train, tb.train);
            assert_eq!(ta.val, tb.val);
            assert_eq!(ta.test, tb.test);
            assert_ne!(ta.train.x, tc.train.x);
        }
        let g = default_pairs(3);
        let sa = split(&ds, "s", &g, true, 5, 0.3).unwrap();
        let sb = split(&ds, "s", &g, true, 5, 0.3).unwrap();
        for (ta, tb) in sa.tasks.iter().zip(&sb.tasks) {
            assert_eq!(ta.train, tb.train);
            assert_eq!(ta.val, tb.val);
        }
    }

    #[test]
    fn val_and_train_disjoint_with_right_sizes() {
        let ds = toy(4, 25); // 100 training samples
        let s = permuted(&ds, 2, 3, 0.1).unwrap();
        for t in &s.tasks {
            assert_eq!(t.val.len(), 10);
            assert_eq!(t.train.len(), 90);
            assert_eq!(t.test.len(), 8);
            let train: HashSet<usize> = (0..t.train.len()).map(|r| decode(t.train.x.row(r)).0).collect();
            let val: HashSet<usize> = (0..t.val.len()).map(|r| decode(t.val.x.row(r)).0).collect();
            assert!(train.is_disjoint(&val));
            assert_eq!(train.len() + val.len(), 100);
        }
        // The held-out subsets differ between tasks.
        let v0: Vec<usize> = (0..10).map(|r| decode(s.tasks[0].val.x.row(r)).0).collect();
        let v1: Vec<usize> = (0..10).map(|r| decode(s.tasks[1].val.x.row(r)).0).collect();
        assert_ne!(v0, v1);

        let s = split(&ds, "s", &[vec![0, 1], vec![2, 3]], false, 1, 0.05).unwrap();
        for t in &s.tasks {
            // 50 samples per task, round(2.5) = 3 held out.
            assert_eq!(t.val.len(), 3);
            assert_eq!(t.train.len(), 47);
            let train: HashSet<usize> = (0..t.train.len()).map(|r| t.train.x[[r, 0]] as usize / 100).collect();
            let val: HashSet<usize> = (0..t.val.len()).map(|r| t.val.x[[r, 0]] as usize / 100).collect();
            assert!(train.is_disjoint(&val));
            assert_eq!(train.len() + val.len(), 50);
        }
        let s = split(&ds, "s", &[vec![0, 1]], false, 1, 0.0).unwrap();
        assert!(s.tasks[0].val.is_empty());
        assert_eq!(s.tasks[0].train.len(), 50);
    }

    #[test]
    fn multi_head_labels_are_local() {
        let ds = toy(6, 5);
        let groups = vec![vec![4, 1], vec![0, 2, 5], vec![3]];
        let s = split(&ds, "mh", &groups, true, 0, 0.2).unwrap();
        assert!(s.multi_head);
        assert_eq!(s.head_sizes, vec![2, 3, 1]);
        for (k, t) in s.tasks.iter().enumerate() {
            assert_eq!(t.head, k);
            assert_eq!(t.classes, groups[k]);
            for part in [&t.train, &t.val, &t.test] {
                for r in 0..part.len() {
                    let v = part.x[[r, 0]];
                    let (rows_y, src) =
                        if v >= 0.0 { (&ds.train_y, v as usize / 100) } else { (&ds.test_y, (-v) as usize / 100) };
                    let global = rows_y[src];
                    assert_eq!(groups[k][part.y[r]], global);
                }
            }
            assert_eq!(t.test.len(), 2 * groups[k].len());
        }
        assert_eq!(s.tasks[0].train.y.iter().copied().max(), Some(1));
    }

    #[test]
    fn single_head_labels_are_remapped() {
        let ds = toy(6, 5);
        let groups = vec![vec![4, 1], vec![0, 2, 5]];
        let s = split(&ds, "sh", &groups, false, 0, 0.0).unwrap();
        assert!(!s.multi_head);
        assert_eq!(s.head_sizes, vec![5]);
        let order = [4, 1, 0, 2, 5];
        for t in &s.tasks {
            assert_eq!(t.head, 0);
            for r in 0..t.train.len() {
                let src = t.train.x[[r, 0]] as usize / 100;
                assert_eq!(order[t.train.y[r]], ds.train_y[src]);
            }
        }
        let first: HashSet<usize> = s.tasks[0].train.y.iter().copied().collect();
        assert_eq!(first, HashSet::from([0, 1]));
        let second: HashSet<usize> = s.tasks[1].test.y.iter().copied().collect();
        assert_eq!(second, HashSet::from([2, 3, 4]));
    }

    #[test]
    fn errors() {
        let ds = toy(4, 5);
        assert!(matches!(permuted(&ds, 0, 0, 0.1), Err(Error::Invalid(_))));
        for bad in [-0.1, 1.0, 1.5, f64::NAN] {
            assert!(matches!(permuted(&ds, 1, 0, bad), Err(Error::Invalid(_))), "{bad}");
            assert!(matches!(split(&ds, "s", &default_pairs(4), true, 0, bad), Err(Error::Invalid(_))), "{bad}");
        }
        // A hold-out that swallows everything.
        let tiny = toy(2, 1);
        assert!(matches!(split(&tiny, "s", &[vec![0]], true, 0, 0.9), Err(Error::Invalid(_))));
        let bad_groups: [&[Vec<usize>]; 5] = [
            &[],                       // no groups
            &[vec![0, 1], vec![]],     // empty group
            &[vec![0, 4]],             // class out of range
            &[vec![0, 1], vec![1, 2]], // class in two groups
            &[vec![2, 2]],             // class twice in one group
        ];
        for g in bad_groups {
            assert!(matches!(split(&ds, "s", g, true, 0, 0.1), Err(Error::Invalid(_))), "{g:?}");
            assert!(matches!(split(&ds, "s", g, false, 0, 0.1), Err(Error::Invalid(_))), "{g:?}");
        }
        // A class with no training samples.
        let mut sparse = toy(4, 5);
        sparse.num_classes = 5;
        assert!(matches!(split(&sparse, "s", &[vec![0], vec![4]], true, 0, 0.1), Err(Error::Invalid(_))));
        // An inconsistent data set is reported, not indexed out of bounds.
        let mut broken = toy(4, 5);
        broken.train_y[0] = 9;
        assert!(permuted(&broken, 1, 0, 0.1).is_err());
        broken.train_y.pop();
        assert!(matches!(split(&broken, "s", &[vec![0]], true, 0, 0.1), Err(Error::SizeMismatch(_))));
    }

    #[test]
    fn group_specs() {
        assert_eq!(parse_groups("0,1;2,3;4,5").unwrap(), vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        assert_eq!(parse_groups(" 3 , 1 ; 7 ").unwrap(), vec![vec![3, 1], vec![7]]);
        assert_eq!(parse_groups("9").unwrap(), vec![vec![9]]);
        for bad in ["", "  ", "0,1;;2", "0,1;", "a,b", "0,,1", "-1", "0;1.5", "0 1"] {
            assert!(matches!(parse_groups(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert_eq!(default_pairs(10), vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7], vec![8, 9]]);
        assert_eq!(default_pairs(3), vec![vec![0, 1], vec![2]]);
        assert!(default_pairs(0).is_empty());
    }
}
