//! SLDA statistics in the form that adds up across boards and tasks: [`SldaSums`].
//!
//! A board's SLDA head (`w_c = Λμ_c`, `b_c = −½ μ_cᵀΛμ_c`, `Λ = ((1−ε)Σ + εI)⁻¹`) rests on per-class means `μ_c`
//! over `n_c` samples and one shared within-class covariance `Σ` over `t` samples
//! ([`edgelearn_learn::method::SharedCovariance`]). Kept as sums,
//!
//! `n_c`, `s_c = n_c μ_c`, `S = t Σ`, `t`,
//!
//! they are additive: the samples a task absorbs add `Δn_c`, `Δs_c`, `ΔS`, `Δt` whatever came before (the board's
//! streaming update of `Σ` adds `ΔS = Σᵢ (t+i)/(t+i+1) dᵢdᵢᵀ` to `tΣ`, [`edgelearn_learn::method::SharedCovariance::add_deviations`]).
//! So a board publishes what each committed task *added* ([`SldaSums::delta`]), the merger adds every board's
//! every update once ([`SldaSums::add`]), and the fleet's head is the SLDA head of the pooled sums
//! ([`SldaSums::head`]): with every board on the same trunk (the fleet's; `+ft`) that is the head one board would
//! compute from all the boards' samples, up to the between-board spread of a class's mean, which the pooled `S`
//! leaves out.
//!
//! On the wire `S` is symmetric and travels as its upper triangle in f32 (`d(d+1)/2` values: 8 MiB at `d` = 2048
//! instead of 32 MiB of f64); counts and class sums stay exact (u64, f64).

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_learn::method::{ClassMeans, SLDA_SHRINKAGE, SharedCovariance, SldaStats, slda_head};
use edgelearn_store::SldaState;

/// Additive SLDA statistics over named classes; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SldaSums {
    /// Feature width `d` (the head's input width).
    pub dim: u32,
    /// Class names, one per entry of `counts` (distinct).
    pub classes: Vec<String>,
    /// `n_c`, samples per class.
    pub counts: Vec<u64>,
    /// `s_c = n_c μ_c`, `classes · d` values, class after class.
    pub sums: Vec<f64>,
    /// `S = tΣ`, the upper triangle row by row (`S₀₀ S₀₁ … S₀,d−1 S₁₁ …`), `d(d+1)/2` values.
    pub scatter: Vec<f32>,
    /// `t`, samples in `S`.
    pub samples: u64,
}

fn tri_len(d: usize) -> usize {
    d * (d + 1) / 2
}

impl SldaSums {
    /// No samples over `d` features and no class.
    pub fn empty(d: usize) -> Self {
        Self {
            dim: d as u32,
            classes: Vec::new(),
            counts: Vec::new(),
            sums: Vec::new(),
            scatter: vec![0.0; tri_len(d)],
            samples: 0,
        }
    }

    /// Lengths, distinct non-empty class names, finite values.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim as usize;
        let bad = |m: String| Err(Error::Config(format!("SLDA sums: {m}")));
        if self.dim == 0 || self.dim > edgelearn_learn::method::MAX_RANDOM_FEATURES {
            return bad(format!("feature width {}", self.dim));
        }
        if self.counts.len() != self.classes.len() || Some(self.sums.len()) != self.classes.len().checked_mul(d) {
            return bad(format!(
                "{} classes, {} counts, {} sums of width {d}",
                self.classes.len(),
                self.counts.len(),
                self.sums.len()
            ));
        }
        if self.scatter.len() != tri_len(d) {
            return bad(format!("{} scatter values for width {d}", self.scatter.len()));
        }
        if self.sums.iter().any(|v| !v.is_finite()) || self.scatter.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("SLDA sums".into()));
        }
        let mut names: Vec<&str> = self.classes.iter().map(String::as_str).collect();
        names.sort_unstable();
        if names.iter().any(|n| n.is_empty()) || names.windows(2).any(|w| w[0] == w[1]) {
            return bad("class names must be distinct and non-empty".into());
        }
        Ok(())
    }

    /// The sums of a board's stored statistics (`classes[i]` names `state`'s class `i`).
    pub fn of_state(state: &SldaState, classes: &[String]) -> Result<Self> {
        Self::delta(None, state, classes)
    }

    /// What the samples absorbed between `before` and `after` (the same board's statistics before and after a
    /// task; `None`: before the first) added: `Δn_c`, `Δs_c = n'_c μ'_c − n_c μ_c`, `ΔS = t'Σ' − tΣ`, `Δt`.
    /// Classes are `after`'s, `classes[i]` naming its class `i` (a board's registry only grows: `before`'s class
    /// `i` is `after`'s). Classes the task did not touch come out with zero counts and sums. Errors when the
    /// statistics do not fit each other.
    pub fn delta(before: Option<&SldaState>, after: &SldaState, classes: &[String]) -> Result<Self> {
        after.validate()?;
        let d = after.dim as usize;
        if classes.len() != after.counts.len() {
            return Err(shape_err("SLDA sums: class names vs counts", after.counts.len(), classes.len()));
        }
        let mut out = Self::empty(d);
        out.classes = classes.to_vec();
        out.samples = after.updates;
        out.counts = after.counts.clone();
        out.sums = vec![0.0; classes.len() * d];
        for (c, &n) in after.counts.iter().enumerate() {
            for j in 0..d {
                out.sums[c * d + j] = n as f64 * after.means[c * d + j];
            }
        }
        let mut scatter: Vec<f64> = upper(&after.sigma, d).map(|v| v * after.updates as f64).collect();
        if let Some(b) = before {
            b.validate()?;
            if b.dim != after.dim || b.counts.len() > after.counts.len() || b.updates > after.updates {
                return Err(Error::Config("SLDA sums: the statistics before the task do not precede these".into()));
            }
            out.samples -= b.updates;
            for (c, &n) in b.counts.iter().enumerate() {
                out.counts[c] = out.counts[c]
                    .checked_sub(n)
                    .ok_or_else(|| Error::Config(format!("SLDA sums: class {} lost samples", classes[c])))?;
                for j in 0..d {
                    out.sums[c * d + j] -= n as f64 * b.means[c * d + j];
                }
            }
            scatter.iter_mut().zip(upper(&b.sigma, d)).for_each(|(s, v)| *s -= v * b.updates as f64);
        }
        out.scatter = scatter.into_iter().map(|v| v as f32).collect();
        out.validate()?;
        Ok(out)
    }

    /// Add `other` (its classes matched by name; a class only `other` has is appended after this one's, in
    /// `other`'s order). Errors on another feature width.
    pub fn add(&mut self, other: &Self) -> Result<()> {
        other.validate()?;
        if other.dim != self.dim {
            return Err(shape_err("SLDA sums: feature width", self.dim as usize, other.dim as usize));
        }
        let d = self.dim as usize;
        for (k, name) in other.classes.iter().enumerate() {
            let c = match self.classes.iter().position(|x| x == name) {
                Some(c) => c,
                None => {
                    self.classes.push(name.clone());
                    self.counts.push(0);
                    self.sums.extend(std::iter::repeat_n(0.0, d));
                    self.classes.len() - 1
                }
            };
            self.counts[c] += other.counts[k];
            for j in 0..d {
                self.sums[c * d + j] += other.sums[k * d + j];
            }
        }
        // Summed in f64, stored in f32: the pooled scatter of many boards stays within f32's relative precision.
        self.scatter.iter_mut().zip(&other.scatter).for_each(|(s, &v)| *s = (f64::from(*s) + f64::from(v)) as f32);
        self.samples += other.samples;
        Ok(())
    }

    /// The statistics in the board's form, classes in `order` (each must be here): `μ_c = s_c / n_c` (0 for a
    /// class without samples), `Σ = S / t` (0 before any sample).
    pub fn means_and_covariance(&self, order: &[String]) -> Result<(ClassMeans, SharedCovariance)> {
        self.validate()?;
        let d = self.dim as usize;
        let mut means = ClassMeans::new(order.len(), d);
        for (r, name) in order.iter().enumerate() {
            let c = self
                .classes
                .iter()
                .position(|x| x == name)
                .ok_or_else(|| Error::UnknownClass(format!("{name} has no SLDA statistics")))?;
            let n = self.counts[c];
            means.count[r] = n;
            if n > 0 {
                for j in 0..d {
                    means.mean[[r, j]] = self.sums[c * d + j] / n as f64;
                }
            }
        }
        let mut cov = SharedCovariance::new(d);
        cov.updates = self.samples;
        if self.samples > 0 {
            let t = self.samples as f64;
            let mut k = 0;
            for i in 0..d {
                for j in i..d {
                    let v = f64::from(self.scatter[k]) / t;
                    cov.sigma[[i, j]] = v;
                    cov.sigma[[j, i]] = v;
                    k += 1;
                }
            }
        }
        Ok((means, cov))
    }

    /// The SLDA head of these statistics, rows in `order`: `w_c = Λμ_c`, `b_c = −½ μ_cᵀΛμ_c`,
    /// `Λ = ((1−ε)Σ + εI)⁻¹` with the board's ε ([`SLDA_SHRINKAGE`], [`slda_head`]).
    pub fn head(&self, order: &[String]) -> Result<(Array2<f32>, Array1<f32>)> {
        let (means, cov) = self.means_and_covariance(order)?;
        slda_head(&means, &cov, SLDA_SHRINKAGE)
    }

    /// The statistics as a board stores them (no trained head kept), classes in `order`.
    pub fn to_state(&self, order: &[String]) -> Result<SldaState> {
        let (means, cov) = self.means_and_covariance(order)?;
        SldaStats { means, cov, train_head: None }.to_state()
    }
}

/// The upper triangle of a row-major `d × d` matrix, row by row.
fn upper(m: &[f64], d: usize) -> impl Iterator<Item = f64> + '_ {
    (0..d).flat_map(move |i| m[i * d + i..(i + 1) * d].iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A board's statistics after absorbing `z` with labels `y`, starting from `st` (the board's own code).
    fn absorb(st: Option<&SldaState>, classes: usize, z: &[[f32; 2]], y: &[usize]) -> SldaState {
        let mut stats = match st {
            Some(s) => SldaStats::from_state(s, 2).unwrap(),
            None => SldaStats { means: ClassMeans::new(classes, 2), cov: SharedCovariance::new(2), train_head: None },
        };
        stats.means.grow(classes).unwrap();
        let zs = Array2::from_shape_vec((z.len(), 2), z.iter().flatten().copied().collect()).unwrap();
        let dev = stats.means.absorb(&zs.view(), y).unwrap();
        stats.cov.add_deviations(&dev.view()).unwrap();
        stats.to_state().unwrap()
    }

    #[test]
    fn task_deltas_add_back_to_the_whole_and_boards_pool_by_class_name() {
        // Board A: task 1 (cat, dog), task 2 adds eel and more cats.
        let a1 = absorb(None, 2, &[[1.0, 0.0], [3.0, 1.0], [0.0, 2.0], [1.0, 4.0]], &[0, 0, 1, 1]);
        let a2 = absorb(Some(&a1), 3, &[[2.0, 2.0], [5.0, 5.0], [7.0, 4.0]], &[0, 2, 2]);
        let (ca1, ca2) = (names(&["cat", "dog"]), names(&["cat", "dog", "eel"]));
        let d1 = SldaSums::delta(None, &a1, &ca1).unwrap();
        let d2 = SldaSums::delta(Some(&a1), &a2, &ca2).unwrap();
        assert_eq!(d2.counts, [1, 0, 2]);
        assert_eq!(d2.samples, 3);
        let mut total = d1.clone();
        total.add(&d2).unwrap();
        let whole = SldaSums::of_state(&a2, &ca2).unwrap();
        assert_eq!(total.counts, whole.counts);
        for (x, y) in total.sums.iter().zip(&whole.sums) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        for (x, y) in total.scatter.iter().zip(&whole.scatter) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // Board B knows dog and fox: pooled by name, dog's mean over both boards' samples.
        let b = absorb(None, 2, &[[9.0, 9.0], [0.0, 6.0]], &[1, 0]);
        let db = SldaSums::delta(None, &b, &names(&["fox", "dog"])).unwrap();
        total.add(&db).unwrap();
        assert_eq!(total.classes, names(&["cat", "dog", "eel", "fox"]));
        let order = names(&["cat", "dog", "eel", "fox"]);
        let (means, cov) = total.means_and_covariance(&order).unwrap();
        assert_eq!(means.count, [3, 3, 2, 1]);
        // dog: (0,2), (1,4) from A and (9,9) from B.
        assert!((means.mean[[1, 0]] - 10.0 / 3.0).abs() < 1e-9 && (means.mean[[1, 1]] - 5.0).abs() < 1e-9);
        assert_eq!(cov.updates, 9);
        assert_eq!(cov.sigma[[0, 1]], cov.sigma[[1, 0]]);
        let (w, bias) = total.head(&order).unwrap();
        assert_eq!((w.dim(), bias.len()), ((4, 2), 4));
        // The board's own head from the same statistics is the same head.
        let (wa, ba) = SldaSums::of_state(&a2, &ca2).unwrap().head(&ca2).unwrap();
        let own = SldaStats::from_state(&a2, 2).unwrap();
        let (wb, bb) = slda_head(&own.means, &own.cov, SLDA_SHRINKAGE).unwrap();
        assert!(
            wa.iter().zip(&wb).all(|(x, y)| (x - y).abs() < 1e-4)
                && ba.iter().zip(&bb).all(|(x, y)| (x - y).abs() < 1e-4)
        );
    }

    #[test]
    fn inconsistent_sums_are_refused() {
        let a = absorb(None, 2, &[[1.0, 0.0], [0.0, 2.0]], &[0, 1]);
        let s = SldaSums::of_state(&a, &names(&["cat", "dog"])).unwrap();
        assert!(SldaSums::of_state(&a, &names(&["cat"])).is_err());
        let mut dup = s.clone();
        dup.classes[1] = "cat".into();
        assert!(dup.validate().is_err());
        let mut nan = s.clone();
        nan.sums[0] = f64::NAN;
        assert!(nan.validate().is_err());
        let mut short = s.clone();
        short.scatter.pop();
        assert!(short.validate().is_err());
        let mut wide = SldaSums::empty(3);
        assert!(wide.add(&s).is_err());
        assert!(s.means_and_covariance(&names(&["eel"])).is_err());
        // Statistics "before" that do not precede: refused.
        let later = absorb(Some(&a), 2, &[[1.0, 1.0]], &[0]);
        assert!(SldaSums::delta(Some(&later), &a, &names(&["cat", "dog"])).is_err());
    }
}
