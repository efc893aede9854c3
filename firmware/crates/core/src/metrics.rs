//! Continual-learning metrics over the accuracy matrix `A[i, j]` = accuracy on task `j` after learning task `i`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Accuracy matrix of a run over `T` tasks plus the accuracies of the untrained model (for FWT).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccuracyMatrix {
    /// `rows[i][j]`: accuracy (0..1) on task `j` after learning task `i`; rows are filled as tasks are learned.
    pub rows: Vec<Vec<f64>>,
    /// Accuracy of the randomly initialised model on each task (`b̄_j`), if measured.
    pub random_init: Vec<f64>,
}

/// Summary metrics of an accuracy matrix.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Mean of the last row.
    pub acc: f64,
    /// Backward transfer (negative = forgetting).
    pub bwt: f64,
    /// Forward transfer against the randomly initialised model (`None` without random-init accuracies).
    pub fwt: Option<f64>,
    /// Mean forgetting.
    pub forgetting: f64,
}

impl AccuracyMatrix {
    /// An empty matrix for `tasks` tasks.
    pub fn new(tasks: usize) -> Self {
        Self { rows: Vec::with_capacity(tasks), random_init: Vec::new() }
    }

    /// Number of tasks learned so far.
    pub fn tasks(&self) -> usize {
        self.rows.len()
    }

    /// Append the row measured after learning the next task. The row must cover every task of the stream
    /// and every row must have the same length.
    pub fn push_row(&mut self, row: Vec<f64>) -> Result<()> {
        if let Some(first) = self.rows.first()
            && first.len() != row.len()
        {
            return Err(Error::Shape {
                context: "accuracy matrix row".into(),
                expected: first.len().to_string(),
                got: row.len().to_string(),
            });
        }
        if row.iter().any(|a| !a.is_finite()) {
            return Err(Error::NonFinite("accuracy row".into()));
        }
        self.rows.push(row);
        Ok(())
    }

    fn check_square(&self) -> Result<usize> {
        let t = self.rows.len();
        if t == 0 {
            return Err(Error::Empty("accuracy matrix".into()));
        }
        if self.rows.iter().any(|r| r.len() < t) {
            return Err(Error::Config("accuracy matrix has fewer columns than learned tasks".into()));
        }
        Ok(t)
    }

    /// ACC = (1/T) Σⱼ A[T, j] over the tasks learned so far.
    pub fn acc(&self) -> Result<f64> {
        let t = self.check_square()?;
        Ok(self.rows[t - 1][..t].iter().sum::<f64>() / t as f64)
    }

    /// BWT = (1/(T−1)) Σ_{j<T} (A[T, j] − A[j, j]); 0 for a single task.
    pub fn bwt(&self) -> Result<f64> {
        let t = self.check_square()?;
        if t < 2 {
            return Ok(0.0);
        }
        let last = &self.rows[t - 1];
        Ok((0..t - 1).map(|j| last[j] - self.rows[j][j]).sum::<f64>() / (t - 1) as f64)
    }

    /// FWT = (1/(T−1)) Σ_{j≥1} (A[j−1, j] − b̄ⱼ), with b̄ the random-init accuracies.
    pub fn fwt(&self) -> Result<Option<f64>> {
        let t = self.check_square()?;
        if t < 2 || self.random_init.len() < t {
            return Ok(None);
        }
        Ok(Some((1..t).map(|j| self.rows[j - 1][j] - self.random_init[j]).sum::<f64>() / (t - 1) as f64))
    }

    /// Forgetting = (1/(T−1)) Σ_{j<T} (max_{i<T} A[i, j] − A[T, j]); 0 for a single task.
    pub fn forgetting(&self) -> Result<f64> {
        let t = self.check_square()?;
        if t < 2 {
            return Ok(0.0);
        }
        let last = &self.rows[t - 1];
        let f = (0..t - 1)
            .map(|j| {
                let best = (0..t - 1).map(|i| self.rows[i][j]).fold(f64::NEG_INFINITY, f64::max);
                best - last[j]
            })
            .sum::<f64>();
        Ok(f / (t - 1) as f64)
    }

    /// All metrics at once.
    pub fn summary(&self) -> Result<Summary> {
        Ok(Summary { acc: self.acc()?, bwt: self.bwt()?, fwt: self.fwt()?, forgetting: self.forgetting()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> AccuracyMatrix {
        let mut a = AccuracyMatrix::new(3);
        a.random_init = vec![0.1, 0.2, 0.3];
        a.push_row(vec![0.9, 0.4, 0.5]).unwrap();
        a.push_row(vec![0.8, 0.95, 0.6]).unwrap();
        a.push_row(vec![0.7, 0.85, 0.99]).unwrap();
        a
    }

    #[test]
    fn metrics_match_hand_computation() {
        let a = m();
        assert!((a.acc().unwrap() - (0.7 + 0.85 + 0.99) / 3.0).abs() < 1e-12);
        assert!((a.bwt().unwrap() - ((0.7 - 0.9) + (0.85 - 0.95)) / 2.0).abs() < 1e-12);
        assert!((a.fwt().unwrap().unwrap() - ((0.4 - 0.2) + (0.6 - 0.3)) / 2.0).abs() < 1e-12);
        assert!((a.forgetting().unwrap() - ((0.9 - 0.7) + (0.95 - 0.85)) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn single_task_and_errors() {
        let mut a = AccuracyMatrix::new(2);
        assert!(a.acc().is_err());
        a.push_row(vec![0.5, 0.1]).unwrap();
        assert_eq!(a.bwt().unwrap(), 0.0);
        assert!(a.push_row(vec![0.5]).is_err());
        assert!(a.push_row(vec![f64::NAN, 0.1]).is_err());
    }

    #[test]
    fn json_round_trip() {
        let a = m();
        let s = serde_json::to_string(&a).unwrap();
        let b: AccuracyMatrix = serde_json::from_str(&s).unwrap();
        assert_eq!(a, b);
    }
}
