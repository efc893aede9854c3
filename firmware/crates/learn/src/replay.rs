//! A budgeted, class-balanced exemplar memory: the stored samples of earlier classes that a class-incremental
//! method replays ([`crate::method::LearnContext::replay`]).
//!
//! # Budget
//!
//! One stored sample costs `4 · features + 4` bytes (its `f32` values and a `u32` class id), so a byte budget `B`
//! holds `B / (4 · features + 4)` samples ([`ReplayBuffer::with_budget`], [`bytes_per_sample`]). Besides the
//! samples the buffer keeps one `seen` counter per class (12 bytes a class in the state file), which the budget
//! does not count: it is bounded by the board's `max_classes`.
//!
//! # Policy: class-balanced reservoir sampling
//!
//! The class-balanced reservoir of Chrysakis & Moens (CBRS, "Online Continual Learning from Imbalanced Data",
//! ICML 2020), the policy behind Mammoth's and Avalanche's class-balanced buffers:
//!
//! - while the buffer is not full, every offered sample is kept;
//! - when it is full, a sample of class `c` that holds fewer samples than the currently largest class (a new class
//!   holds none) replaces a random sample of the largest class (ties between largest classes broken at random);
//! - otherwise (`c` is one of the largest classes) it is kept with probability `stored_c / seen_c` (per-class
//!   reservoir sampling, `seen_c` counting this sample) and replaces a random stored sample of `c`.
//!
//! After any stream every class holds either all of its samples or within one of the largest class's count, and
//! the stored samples of a class are a uniform sample of the ones it was offered. Every random choice draws from
//! the caller's [`ChaCha8Rng`], so a seed fixes the buffer exactly. Nothing is drawn and nothing changes when an
//! offer is refused (wrong length, NaN/Inf, a class id over `u32::MAX`).
//!
//! # Replay and gradient projection
//!
//! An old sample's input lies mostly in the span that GPM protects (its bases are built from those inputs), so a
//! replayed sample's gradient through a projected layer loses most of its size to the projection: replaying under
//! projection does little, and cannot break GPM's guarantee, because the update stays orthogonal to the bases.
//! Replay is effective where nothing is projected: BECAME's unconstrained stage 2, the (growing) head, and bias
//! correction after the merge. Which of these a method uses, and what projected replay keeps, is the method's
//! business (`crate::method`); this module only stores and hands out samples.

use std::collections::BTreeMap;

use ndarray::Array2;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use edgelearn_core::data::Samples;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_store::{ReplaySeen, ReplayState, to_u32};

/// Bytes one stored sample of `features` values takes: `4 · features` for the values and 4 for the class id
/// (saturating at `u64::MAX`).
pub fn bytes_per_sample(features: usize) -> u64 {
    (features as u64).saturating_mul(4).saturating_add(4)
}

/// How many of one class the buffer holds and has been offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClassCount {
    stored: usize,
    seen: u64,
}

/// The buffer's contents as plain vectors, for the state store ([`ReplayBuffer::to_parts`],
/// [`ReplayBuffer::from_parts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayParts {
    /// Values per sample.
    pub features: usize,
    /// Class id of each stored sample.
    pub labels: Vec<u32>,
    /// `labels.len() · features` values, sample after sample.
    pub values: Vec<f32>,
    /// Samples offered so far per class id (every class with a stored sample must appear), ascending class ids.
    pub seen: Vec<(u32, u64)>,
}

/// A class-balanced exemplar memory of at most [`capacity`](ReplayBuffer::capacity) samples (see the module
/// documentation for the policy).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    capacity: usize,
    features: usize,
    /// Class id of each stored sample.
    labels: Vec<u32>,
    /// Stored values, sample after sample (`labels.len() · features`).
    values: Vec<f32>,
    /// Per class id: stored and seen counts.
    counts: BTreeMap<u32, ClassCount>,
}

impl ReplayBuffer {
    /// An empty buffer for up to `capacity` samples of `features` values.
    pub fn new(capacity: usize, features: usize) -> Self {
        Self { capacity, features, labels: Vec::new(), values: Vec::new(), counts: BTreeMap::new() }
    }

    /// An empty buffer holding as many samples of `features` values as `bytes` allows
    /// (`bytes / (4 · features + 4)`, see [`bytes_per_sample`]).
    pub fn with_budget(bytes: u64, features: usize) -> Self {
        let capacity = usize::try_from(bytes / bytes_per_sample(features)).unwrap_or(usize::MAX);
        Self::new(capacity, features)
    }

    /// Most samples the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Samples stored now.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes the stored samples take (`len · (4 · features + 4)`); at most the budget it was sized from.
    pub fn bytes(&self) -> u64 {
        (self.len() as u64).saturating_mul(bytes_per_sample(self.features))
    }

    /// Bytes a full buffer takes (`capacity · (4 · features + 4)`).
    pub fn capacity_bytes(&self) -> u64 {
        (self.capacity as u64).saturating_mul(bytes_per_sample(self.features))
    }

    /// Stored samples per class id, ascending ids (classes offered but holding nothing are left out).
    pub fn class_counts(&self) -> Vec<(usize, usize)> {
        self.counts.iter().filter(|(_, c)| c.stored > 0).map(|(&k, c)| (k as usize, c.stored)).collect()
    }

    /// Samples of class `label` offered so far (0 for a class never offered).
    pub fn seen(&self, label: usize) -> u64 {
        u32::try_from(label).ok().and_then(|l| self.counts.get(&l)).map_or(0, |c| c.seen)
    }

    /// Check one sample without changing anything; returns its class id as stored.
    fn check(&self, label: usize, x: &[f32], context: &str) -> Result<u32> {
        if x.len() != self.features {
            return Err(shape_err(context, self.features, x.len()));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("{context} (value {i})")));
        }
        u32::try_from(label).map_err(|_| Error::LabelOutOfRange { label, classes: u32::MAX as usize + 1 })
    }

    /// Offer one sample of class `label`; the policy decides whether it is kept and what it replaces. A sample of
    /// the wrong length, with a NaN/Inf value or a class id over `u32::MAX` is refused ([`Error::Shape`],
    /// [`Error::NonFinite`], [`Error::LabelOutOfRange`]) and the buffer (and `rng`) is unchanged.
    pub fn offer(&mut self, label: usize, x: &[f32], rng: &mut ChaCha8Rng) -> Result<()> {
        let label = self.check(label, x, "replay sample")?;
        self.insert(label, x, rng);
        Ok(())
    }

    /// Check every sample of `samples` as [`ReplayBuffer::offer_all`] does, changing nothing; returns the checked
    /// labels, for [`ReplayBuffer::offer_checked`].
    pub fn check_all(&self, samples: &Samples) -> Result<Vec<u32>> {
        if samples.x.nrows() != samples.y.len() {
            return Err(shape_err("replay samples: rows vs labels", samples.x.nrows(), samples.y.len()));
        }
        if samples.features() != self.features {
            return Err(shape_err("replay samples: features", self.features, samples.features()));
        }
        let mut labels = Vec::with_capacity(samples.len());
        for (i, (row, &y)) in samples.x.rows().into_iter().zip(&samples.y).enumerate() {
            let row = row.to_vec();
            labels.push(self.check(y, &row, &format!("replay sample {i}"))?);
        }
        Ok(labels)
    }

    /// Offer every sample of `samples`, in order. All of them are checked first ([`ReplayBuffer::check_all`]): on
    /// any error nothing is offered.
    pub fn offer_all(&mut self, samples: &Samples, rng: &mut ChaCha8Rng) -> Result<()> {
        let labels = self.check_all(samples)?;
        self.offer_checked(samples, labels, rng);
        Ok(())
    }

    /// Offer every sample of `samples`, in order, with the labels [`ReplayBuffer::check_all`] returned for them
    /// (the check done once, ahead of the offer: the learner checks before a task and offers after it).
    pub fn offer_checked(&mut self, samples: &Samples, labels: Vec<u32>, rng: &mut ChaCha8Rng) {
        for (row, label) in samples.x.rows().into_iter().zip(labels) {
            self.insert(label, &row.to_vec(), rng);
        }
    }

    /// The policy, for a checked sample.
    fn insert(&mut self, label: u32, x: &[f32], rng: &mut ChaCha8Rng) {
        let count = self.counts.entry(label).or_default();
        count.seen = count.seen.saturating_add(1);
        let (stored, seen) = (count.stored, count.seen);
        if self.len() < self.capacity {
            self.labels.push(label);
            self.values.extend_from_slice(x);
            self.bump(label, 1);
            return;
        }
        if self.capacity == 0 {
            return;
        }
        let largest = self.counts.values().map(|c| c.stored).max().unwrap_or(0);
        if stored < largest {
            let biggest: Vec<u32> = self.counts.iter().filter(|(_, c)| c.stored == largest).map(|(&k, _)| k).collect();
            let victim_class = biggest[rng.random_range(0..biggest.len())];
            let slot = self.random_slot_of(victim_class, largest, rng);
            self.bump(victim_class, -1);
            self.replace(slot, label, x);
            self.bump(label, 1);
        } else if rng.random_range(0..seen) < stored as u64 {
            let slot = self.random_slot_of(label, stored, rng);
            self.replace(slot, label, x);
        }
    }

    /// Index of a uniformly chosen stored sample of `class`, which holds `stored` (> 0) samples.
    fn random_slot_of(&self, class: u32, stored: usize, rng: &mut ChaCha8Rng) -> usize {
        let k = rng.random_range(0..stored);
        self.labels.iter().enumerate().filter(|(_, l)| **l == class).nth(k).map_or(0, |(i, _)| i)
    }

    fn replace(&mut self, slot: usize, label: u32, x: &[f32]) {
        self.labels[slot] = label;
        self.values[slot * self.features..(slot + 1) * self.features].copy_from_slice(x);
    }

    fn bump(&mut self, label: u32, by: isize) {
        let c = self.counts.entry(label).or_default();
        c.stored = c.stored.saturating_add_signed(by);
    }

    /// Every stored sample, in buffer order (what is replayed); labels are global class ids. Empty (0 rows of
    /// `features`) when nothing is stored.
    pub fn samples(&self) -> Result<Samples> {
        let x = Array2::from_shape_vec((self.len(), self.features), self.values.clone())
            .map_err(|e| shape_err("replay buffer", (self.len(), self.features), e.to_string()))?;
        Samples::new(x, self.labels.iter().map(|&l| l as usize).collect())
    }

    /// The stored samples of `classes` only, in buffer order (a replay request for specific classes). A class with
    /// nothing stored is refused with [`Error::UnknownClass`].
    pub fn restrict(&self, classes: &[usize]) -> Result<Samples> {
        let mut wanted = Vec::with_capacity(classes.len());
        for &c in classes {
            match u32::try_from(c).ok().filter(|l| self.counts.get(l).is_some_and(|n| n.stored > 0)) {
                Some(l) => wanted.push(l),
                None => return Err(Error::UnknownClass(format!("{c} (no samples in the replay buffer)"))),
            }
        }
        let idx: Vec<usize> = (0..self.len()).filter(|&i| wanted.contains(&self.labels[i])).collect();
        Ok(self.samples()?.select(&idx))
    }

    /// The stored form of this buffer (the state file's [`ReplayState`]).
    pub fn to_state(&self) -> Result<ReplayState> {
        let parts = self.to_parts();
        Ok(ReplayState {
            features: to_u32(parts.features, "replay features")?,
            labels: parts.labels,
            values: parts.values,
            seen: parts.seen.into_iter().map(|(class, seen)| ReplaySeen { class, seen }).collect(),
        })
    }

    /// The buffer of `capacity` samples of `features` values that `state` holds; an empty stored buffer (an older
    /// state file) gives an empty buffer. Refused: more samples than `capacity` ([`Error::OverBudget`], budget
    /// `replay`), samples of another width than `features` ([`Error::Shape`]), and what
    /// [`ReplayBuffer::from_parts`] refuses.
    pub fn from_state(state: &ReplayState, capacity: usize, features: usize) -> Result<Self> {
        if state.labels.is_empty() && state.seen.is_empty() {
            return Ok(Self::new(capacity, features));
        }
        if state.features as usize != features {
            return Err(shape_err("stored replay samples", features, state.features));
        }
        Self::from_parts(
            capacity,
            ReplayParts {
                features,
                labels: state.labels.clone(),
                values: state.values.clone(),
                seen: state.seen.iter().map(|s| (s.class, s.seen)).collect(),
            },
        )
    }

    /// The contents as plain vectors (for the state store).
    pub fn to_parts(&self) -> ReplayParts {
        ReplayParts {
            features: self.features,
            labels: self.labels.clone(),
            values: self.values.clone(),
            seen: self.counts.iter().map(|(&k, c)| (k, c.seen)).collect(),
        }
    }

    /// A buffer of `capacity` samples holding `parts` (restored from the state store). Refused, with nothing
    /// built: more samples than `capacity` ([`Error::OverBudget`], budget `replay`), values that do not match
    /// `features` ([`Error::Shape`]), a NaN/Inf value ([`Error::NonFinite`]), a class with stored samples but fewer
    /// seen than stored, or seen counts not in ascending class order ([`Error::Config`]).
    pub fn from_parts(capacity: usize, parts: ReplayParts) -> Result<Self> {
        let ReplayParts { features, labels, values, seen } = parts;
        let per = bytes_per_sample(features);
        if labels.len() > capacity {
            return Err(Error::OverBudget {
                budget: "replay",
                needed: (labels.len() as u64).saturating_mul(per),
                limit: (capacity as u64).saturating_mul(per),
            });
        }
        if Some(values.len()) != labels.len().checked_mul(features) {
            return Err(shape_err("replay buffer values", (labels.len(), features), values.len()));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("replay buffer sample {}", i / features.max(1))));
        }
        let mut counts: BTreeMap<u32, ClassCount> = BTreeMap::new();
        for w in seen.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(Error::Config(format!("replay buffer: seen counts out of order at class {}", w[1].0)));
            }
        }
        for (class, n) in seen {
            counts.insert(class, ClassCount { stored: 0, seen: n });
        }
        for &l in &labels {
            counts.entry(l).or_default().stored += 1;
        }
        if let Some((class, c)) = counts.iter().find(|(_, c)| c.seen < c.stored as u64) {
            return Err(Error::Config(format!(
                "replay buffer: class {class} stores {} samples but saw only {}",
                c.stored, c.seen
            )));
        }
        Ok(Self { capacity, features, labels, values, counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::seeded_rng;

    /// `n` samples of class `label`, 2 features: `[label, i]`.
    fn class_stream(label: usize, n: usize) -> Vec<(usize, [f32; 2])> {
        (0..n).map(|i| (label, [label as f32, i as f32])).collect()
    }

    fn offer_stream(buf: &mut ReplayBuffer, stream: &[(usize, [f32; 2])], rng: &mut ChaCha8Rng) {
        for (l, x) in stream {
            buf.offer(*l, x, rng).unwrap();
        }
    }

    #[test]
    fn budget_arithmetic() {
        assert_eq!(bytes_per_sample(784), 3140);
        let b = ReplayBuffer::with_budget(3140 * 200 + 3139, 784);
        assert_eq!(b.capacity(), 200);
        assert_eq!(b.capacity_bytes(), 3140 * 200);
        assert_eq!(b.bytes(), 0);
        assert_eq!(ReplayBuffer::with_budget(3139, 784).capacity(), 0);
        assert_eq!(ReplayBuffer::with_budget(12, 2).capacity(), 1);
        let mut b = ReplayBuffer::new(3, 2);
        let mut rng = seeded_rng(0);
        offer_stream(&mut b, &class_stream(0, 5), &mut rng);
        assert_eq!((b.len(), b.bytes()), (3, 36));
        assert!(b.bytes() <= b.capacity_bytes());
        // A zero-capacity buffer counts what it sees and stores nothing.
        let mut z = ReplayBuffer::with_budget(0, 2);
        offer_stream(&mut z, &class_stream(1, 4), &mut rng);
        assert!(z.is_empty());
        assert_eq!(z.seen(1), 4);
        assert_eq!(z.samples().unwrap().len(), 0);
    }

    #[test]
    fn keeps_everything_until_full() {
        let mut b = ReplayBuffer::new(10, 2);
        let mut rng = seeded_rng(1);
        offer_stream(&mut b, &class_stream(3, 4), &mut rng);
        offer_stream(&mut b, &class_stream(7, 2), &mut rng);
        let s = b.samples().unwrap();
        assert_eq!(s.y, vec![3, 3, 3, 3, 7, 7]);
        assert_eq!(s.x.row(5).to_vec(), vec![7.0, 1.0]);
        assert_eq!(b.class_counts(), vec![(3, 4), (7, 2)]);
    }

    #[test]
    fn class_balance_after_a_long_imbalanced_stream() {
        let mut b = ReplayBuffer::new(20, 2);
        let mut rng = seeded_rng(2);
        offer_stream(&mut b, &class_stream(0, 1000), &mut rng);
        assert_eq!(b.class_counts(), vec![(0, 20)]);
        offer_stream(&mut b, &class_stream(1, 100), &mut rng);
        assert_eq!(b.class_counts(), vec![(0, 10), (1, 10)]);
        offer_stream(&mut b, &class_stream(2, 50), &mut rng);
        offer_stream(&mut b, &class_stream(3, 300), &mut rng);
        assert_eq!(b.class_counts(), vec![(0, 5), (1, 5), (2, 5), (3, 5)]);
        // A class with fewer samples than its share keeps all of them; the others split the rest.
        offer_stream(&mut b, &class_stream(4, 2), &mut rng);
        let counts = b.class_counts();
        assert_eq!(counts[4], (4, 2));
        let others: Vec<usize> = counts[..4].iter().map(|c| c.1).collect();
        assert_eq!(others.iter().sum::<usize>(), 18);
        assert!(others.iter().max().unwrap() - others.iter().min().unwrap() <= 1, "{counts:?}");
        assert_eq!(b.len(), 20);
        // Each stored sample is one that was offered, with its own label.
        let s = b.samples().unwrap();
        for (row, &y) in s.x.rows().into_iter().zip(&s.y) {
            assert_eq!(row[0], y as f32);
        }
        // Interleaved classes stay balanced too.
        let mut c = ReplayBuffer::new(9, 2);
        for i in 0..3000 {
            c.offer(i % 3, &[(i % 3) as f32, i as f32], &mut rng).unwrap();
        }
        assert_eq!(c.class_counts(), vec![(0, 3), (1, 3), (2, 3)]);
    }

    #[test]
    fn reservoir_keeps_late_samples_of_a_class() {
        // Per-class reservoir: after 1000 samples of one class the kept ones are spread over the stream, not the
        // first ones only.
        let mut b = ReplayBuffer::new(10, 2);
        let mut rng = seeded_rng(3);
        offer_stream(&mut b, &class_stream(0, 1000), &mut rng);
        let s = b.samples().unwrap();
        assert!(s.x.column(1).iter().any(|&i| i >= 500.0), "{:?}", s.x.column(1));
        assert_eq!(b.seen(0), 1000);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let run = |seed| {
            let mut b = ReplayBuffer::new(12, 2);
            let mut rng = seeded_rng(seed);
            for c in 0..5 {
                offer_stream(&mut b, &class_stream(c, 40 + 7 * c), &mut rng);
            }
            b
        };
        assert_eq!(run(4), run(4));
        assert_eq!(run(4).samples().unwrap(), run(4).samples().unwrap());
        assert_ne!(run(4).samples().unwrap(), run(5).samples().unwrap());
        // offer_all is the same as offering one by one.
        let mut a = ReplayBuffer::new(5, 2);
        let mut one = a.clone();
        let stream = class_stream(2, 30);
        let x = Array2::from_shape_fn((30, 2), |(i, j)| stream[i].1[j]);
        let samples = Samples::new(x, vec![2; 30]).unwrap();
        a.offer_all(&samples, &mut seeded_rng(6)).unwrap();
        offer_stream(&mut one, &stream, &mut seeded_rng(6));
        assert_eq!(a, one);
    }

    #[test]
    fn errors_leave_the_buffer_unchanged() {
        let mut b = ReplayBuffer::new(4, 2);
        let mut rng = seeded_rng(7);
        offer_stream(&mut b, &class_stream(0, 6), &mut rng);
        let before = b.clone();
        let rng_before = rng.clone();
        assert!(matches!(b.offer(1, &[1.0], &mut rng), Err(Error::Shape { .. })));
        assert!(matches!(b.offer(1, &[1.0, 2.0, 3.0], &mut rng), Err(Error::Shape { .. })));
        assert!(matches!(b.offer(1, &[f32::NAN, 0.0], &mut rng), Err(Error::NonFinite(_))));
        assert!(matches!(b.offer(1, &[0.0, f32::INFINITY], &mut rng), Err(Error::NonFinite(_))));
        if usize::BITS > 32 {
            let big = u32::MAX as usize + 1;
            assert!(matches!(b.offer(big, &[0.0, 0.0], &mut rng), Err(Error::LabelOutOfRange { .. })));
        }
        // offer_all checks every sample first: a NaN in the last one stores none of them.
        let mut x = Array2::from_elem((3, 2), 1.0f32);
        x[[2, 1]] = f32::NAN;
        let bad = Samples { x, y: vec![5, 5, 5] };
        assert!(matches!(b.offer_all(&bad, &mut rng), Err(Error::NonFinite(_))));
        let wide = Samples::new(Array2::zeros((2, 3)), vec![5, 5]).unwrap();
        assert!(matches!(b.offer_all(&wide, &mut rng), Err(Error::Shape { .. })));
        let ragged = Samples { x: Array2::zeros((2, 2)), y: vec![5] };
        assert!(matches!(b.offer_all(&ragged, &mut rng), Err(Error::Shape { .. })));
        assert!(matches!(b.restrict(&[0, 9]), Err(Error::UnknownClass(_))));
        assert_eq!(b, before);
        assert_eq!(rng, rng_before);
    }

    #[test]
    fn restrict_returns_the_requested_classes() {
        let mut b = ReplayBuffer::new(6, 2);
        let mut rng = seeded_rng(8);
        for c in [4, 1, 9] {
            offer_stream(&mut b, &class_stream(c, 2), &mut rng);
        }
        let r = b.restrict(&[9, 4]).unwrap();
        assert_eq!(r.y, vec![4, 4, 9, 9]);
        assert_eq!(r.x.row(2).to_vec(), vec![9.0, 0.0]);
        assert_eq!(b.restrict(&[]).unwrap().len(), 0);
        assert!(matches!(b.restrict(&[2]), Err(Error::UnknownClass(_))));
        // A class offered to a zero-capacity buffer holds nothing: unknown for replay.
        let mut z = ReplayBuffer::new(0, 2);
        offer_stream(&mut z, &class_stream(1, 1), &mut rng);
        assert!(matches!(z.restrict(&[1]), Err(Error::UnknownClass(_))));
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_refused() {
        let mut b = ReplayBuffer::new(5, 2);
        let mut rng = seeded_rng(9);
        offer_stream(&mut b, &class_stream(0, 9), &mut rng);
        offer_stream(&mut b, &class_stream(1, 3), &mut rng);
        let parts = b.to_parts();
        assert_eq!(ReplayBuffer::from_parts(5, parts.clone()).unwrap(), b);
        // The restored buffer continues exactly like the original.
        let mut restored = ReplayBuffer::from_parts(5, parts.clone()).unwrap();
        offer_stream(&mut b, &class_stream(2, 4), &mut rng.clone());
        offer_stream(&mut restored, &class_stream(2, 4), &mut rng);
        assert_eq!(restored, b);

        let over = ReplayBuffer::from_parts(4, parts.clone());
        assert!(matches!(over, Err(Error::OverBudget { budget: "replay", needed: 60, limit: 48 })), "{over:?}");
        let mut short = parts.clone();
        short.values.pop();
        assert!(matches!(ReplayBuffer::from_parts(5, short), Err(Error::Shape { .. })));
        let mut nan = parts.clone();
        nan.values[3] = f32::NAN;
        assert!(matches!(ReplayBuffer::from_parts(5, nan), Err(Error::NonFinite(_))));
        let mut unseen = parts.clone();
        unseen.seen.clear();
        assert!(matches!(ReplayBuffer::from_parts(5, unseen), Err(Error::Config(_))));
        let mut unordered = parts;
        unordered.seen.reverse();
        assert!(matches!(ReplayBuffer::from_parts(5, unordered), Err(Error::Config(_))));
    }
}
