//! Photos into the learner's sample buffer, the board's one way: each photo with the jittered copies its board
//! profile adds to a class with few photos ([`crate::augment::expand`]), through the frozen backbone, then into
//! the buffer — the photo as a sample, its copies as copies ([`Learner::add_copy`]: learned, not counted as
//! samples learned). The daemon's inbox and the host's `device-learn` field run both come through here.

use ndarray::{Array2, ArrayView2};
use rand::Rng;

use crate::augment::{AugmentPolicy, ImageShape, Jitter, expand_chunked};
use crate::error::{Error, Result, shape_err};
use crate::learner::Learner;
use crate::method::Method;
use crate::onnx::DeviceModel;

/// Rows the frozen backbone runs at a time during intake (bounds the prefix's activations).
pub const INTAKE_BATCH: usize = 64;

/// Photos turned into the learner's features: each photo's features followed by those of its jittered copies.
#[derive(Debug, Clone)]
pub struct Intake {
    /// One row per photo or copy, through the frozen backbone.
    pub features: Array2<f32>,
    /// The photo each row comes from (rows of one photo are consecutive, photo first).
    pub source: Vec<usize>,
}

/// The features of photos `x` (`(n, shape.len())` model inputs, `classes[i]` the class name of photo `i`) and of
/// the jittered copies the board's `policy` adds to a class with few photos, at most `room` rows in all (the
/// sample buffer's free room): [`crate::augment::expand_chunked`], each chunk of [`INTAKE_BATCH`] rows through
/// the frozen backbone before the next is made.
#[allow(clippy::too_many_arguments)]
pub fn photo_features(
    base: &DeviceModel,
    x: ArrayView2<'_, f32>,
    classes: &[&str],
    shape: ImageShape,
    policy: &AugmentPolicy,
    room: usize,
    rng: &mut impl Rng,
) -> Result<Intake> {
    if classes.len() != x.nrows() {
        return Err(shape_err("intake: class names per photo", x.nrows(), classes.len()));
    }
    // Batch-local labels: the copies per photo depend on how many photos of its class the batch holds.
    let mut local: Vec<&str> = Vec::new();
    let labels: Vec<u32> = classes
        .iter()
        .map(|c| {
            let at = local.iter().position(|l| l == c).unwrap_or_else(|| {
                local.push(c);
                local.len() - 1
            });
            at as u32
        })
        .collect();
    // One chunk of full-size copies at a time through the backbone (the same rows and features as all at once).
    let (mut parts, mut source) = (Vec::new(), Vec::new());
    expand_chunked(x, &labels, shape, policy, &Jitter::default(), room, rng, INTAKE_BATCH, |e| {
        parts.push(base.features_batched(&e.x.view(), INTAKE_BATCH)?);
        source.extend(e.source);
        Ok(())
    })?;
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let features = if views.is_empty() {
        Array2::zeros((0, base.trainable.input_len()))
    } else {
        ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| shape_err("intake features", source.len(), e))?
    };
    Ok(Intake { features, source })
}

/// Buffer an [`Intake`] of photos named `classes`: each photo as a sample, its copies as copies
/// ([`Learner::add_copy`]). A photo the learner refuses for its class ([`Error::Config`],
/// [`Error::TooManyClasses`], [`Error::OverBudget`]: a bad name, a class over the board's limits) is handed to
/// `refused` with its error, and the rest go on; any other error stops. Returns the indices of the photos buffered.
pub fn buffer_intake<M: Method, const CAP: usize>(
    learner: &mut Learner<M, CAP>,
    intake: &Intake,
    classes: &[&str],
    mut refused: impl FnMut(usize, Error) -> Result<()>,
) -> Result<Vec<usize>> {
    let mut rows = intake.features.rows().into_iter().zip(&intake.source).peekable();
    let mut used = Vec::with_capacity(classes.len());
    for (i, class) in classes.iter().enumerate() {
        let mut mine = Vec::new();
        while let Some((f, _)) = rows.next_if(|(_, src)| **src == i) {
            mine.push(f.to_vec());
        }
        let Some((photo, copies)) = mine.split_first() else { continue };
        match learner.add_sample(class, photo) {
            Ok(id) => {
                for c in copies {
                    learner.add_copy(id, c)?;
                }
                used.push(i);
            }
            Err(e @ (Error::Config(_) | Error::TooManyClasses { .. } | Error::OverBudget { .. })) => refused(i, e)?,
            Err(e) => return Err(e),
        }
    }
    Ok(used)
}

/// Buffer the photos `x` (`(n, shape.len())` model inputs, `classes[i]` the class name of photo `i`) with their
/// copies, within the buffer's room (the caller keeps the photos themselves within it): [`photo_features`] then
/// [`buffer_intake`]. Returns the indices of the photos buffered.
#[allow(clippy::too_many_arguments)]
pub fn take_photos<M: Method, const CAP: usize>(
    learner: &mut Learner<M, CAP>,
    base: &DeviceModel,
    x: ArrayView2<'_, f32>,
    classes: &[&str],
    shape: ImageShape,
    policy: &AugmentPolicy,
    rng: &mut impl Rng,
    refused: impl FnMut(usize, Error) -> Result<()>,
) -> Result<Vec<usize>> {
    let room = CAP.saturating_sub(learner.buffer().len());
    let intake = photo_features(base, x, classes, shape, policy, room, rng)?;
    buffer_intake(learner, &intake, classes, refused)
}

#[cfg(test)]
mod tests;
