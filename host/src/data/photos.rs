//! Folders of colour photos as a data set, through a frozen ImageNet backbone: the camera path's streams
//! (issue 31).
//!
//! Each class is a folder of PNG or JPEG files of any size. Every file is decoded exactly as the board decodes a
//! photo in its inbox ([`firmware::inbox::Preprocess::decode`], with the preprocessing spec that travels with the
//! backbone: transparency onto white, stretched to 224 × 224, `(x − 127) / 128`, NCHW, RGB for EfficientNet-Lite0)
//! and passed through the backbone's frozen prefix in tract, cut at its pooled features. The trainable part of a
//! stream then sees one feature vector per photo.
//!
//! The test split is fixed per class and independent of the seed: the `test_per_class` files whose relative
//! paths have the smallest CRC-32C (a hash, so neither the alphabet nor a sub-folder decides which).
//!
//! Features are cached on disk ([`cached_features`]) under a key of the backbone file's and the photos' bytes, so
//! a second run (another seed, another method, the demo after the tests) reads them instead of running the
//! backbone again; a cache file that is truncated, corrupt or of other photos is recomputed, never trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use firmware::inbox::Preprocess;
use firmware::onnx::{FrozenPrefix, OnnxModel};
use firmware::store::CRC32C;
use ndarray::Array2;

use crate::data::backbone::DatasetMemo;
use crate::data::{Dataset, cache};
use crate::error::{Error, Result};

/// The eight tuxpaint stamp categories of `tux8` (Debian `tuxpaint-stamps-default`, every one with at least 34
/// PNGs), in class order: tasks take them two at a time.
pub const TUX8_CLASSES: [&str; 8] =
    ["animals", "symbols", "town", "food", "seasonal", "plants", "vehicles", "household"];
/// Test photos per `tux8` class (the smallest class, household, keeps 20 for training).
pub const TUX8_TEST_PER_CLASS: usize = 14;
/// The folder `scripts/fetch-data.sh` installs the stamps into, under the data folder.
pub const TUX8_FOLDER: &str = "tuxpaint-stamps";
/// The tensor EfficientNet-Lite0 is cut at: its global-average-pooled 1280-d features.
pub const LITE0_FEATURES: &str = "features";

/// The Lite0 file `scripts/fetch-data.sh` builds, under the data folder.
pub fn lite0_path(data_dir: &Path) -> PathBuf {
    data_dir.join("efficientnet-lite0/efficientnet-lite0.onnx")
}

/// One labelled photo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoFile {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the data set's root (what the split hashes and the cache key names).
    pub rel: String,
    /// Class index (position of its folder in the class list).
    pub class: usize,
}

/// The PNG and JPEG files under `root/<class>/` (recursively) for every class, each class's files sorted by
/// relative path. An error when a class folder is missing or holds no photo.
pub fn list_classes(root: &Path, classes: &[&str]) -> Result<Vec<Vec<PhotoFile>>> {
    let mut out = Vec::with_capacity(classes.len());
    for (class, name) in classes.iter().enumerate() {
        let dir = root.join(name);
        let mut files = Vec::new();
        walk(&dir, &mut files)?;
        let mut photos: Vec<PhotoFile> = files
            .into_iter()
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
            })
            .map(|path| {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                PhotoFile { path, rel, class }
            })
            .collect();
        if photos.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no PNG or JPEG photo (run `bash scripts/fetch-data.sh`)",
                dir.display()
            )));
        }
        photos.sort_by(|a, b| a.rel.cmp(&b.rel));
        out.push(photos);
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Invalid(format!(
            "{}: {e} (the camera streams' photos come from `bash scripts/fetch-data.sh`)",
            dir.display()
        ))
    })?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// One class's files cut into (train, test): the `test` files whose relative paths hash lowest (CRC-32C) are the
/// test split; both keep the relative-path order. An error when the class has no training file left.
pub fn split_fixed(files: &[PhotoFile], test: usize) -> Result<(Vec<PhotoFile>, Vec<PhotoFile>)> {
    if files.len() <= test {
        return Err(Error::Invalid(format!(
            "class of {} photos cannot give {test} test photos and keep one for training",
            files.len()
        )));
    }
    let mut by_hash: Vec<(u32, usize)> =
        files.iter().enumerate().map(|(i, f)| (CRC32C.checksum(f.rel.as_bytes()), i)).collect();
    by_hash.sort_unstable();
    let mut is_test = vec![false; files.len()];
    by_hash.iter().take(test).for_each(|&(_, i)| is_test[i] = true);
    let (mut tr, mut te) = (Vec::new(), Vec::new());
    for (f, t) in files.iter().zip(is_test) {
        if t { te.push(f.clone()) } else { tr.push(f.clone()) }
    }
    Ok((tr, te))
}

/// The backbone at `model` cut at `cut`, and the preprocessing spec that travels with it (embedded in the file or
/// beside it; an error without one: a photo needs one).
pub fn open_backbone(model: &Path, cut: &str) -> Result<(FrozenPrefix, Preprocess)> {
    crate::data::require_fetched(model)?;
    let file = OnnxModel::open(model)?;
    let embedded = file.input_spec();
    let (pre, _) = Preprocess::discover(model, embedded.as_deref())?
        .ok_or_else(|| Error::Invalid(format!("{}: no preprocessing spec for its photos", model.display())))?;
    Ok((file.prefix(cut)?, pre))
}

/// Features of `files` through `prefix`, each decoded by `pre` (the board's decoder), in parallel chunks
/// ([`crate::data::backbone::features_in_chunks`]); rows keep the files' order.
pub fn photo_features(prefix: &FrozenPrefix, pre: &Preprocess, files: &[PhotoFile]) -> Result<Array2<f32>> {
    crate::data::backbone::features_in_chunks(prefix, files, |f| {
        let bytes = std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?;
        Ok(pre.decode(&bytes, &f.rel)?)
    })
}

/// The cache key of `files` through the backbone file `model` cut at `cut`: CRC-32C over the backbone's bytes,
/// the cut, and every file's relative path and bytes, in order.
pub fn cache_key(model: &Path, cut: &str, files: &[PhotoFile]) -> Result<u32> {
    let mut digest = CRC32C.digest();
    digest.update(&std::fs::read(model).map_err(|e| Error::io(model, e))?);
    digest.update(cut.as_bytes());
    for f in files {
        digest.update(f.rel.as_bytes());
        digest.update(&std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?);
    }
    Ok(digest.finalize())
}

/// [`photo_features`] of `files` through `model` cut at `cut`, read from `cache_dir` when a file there holds
/// them (same [`cache_key`], [`cache::cached`]), otherwise computed and written there.
pub fn cached_features(cache_dir: &Path, model: &Path, cut: &str, files: &[PhotoFile]) -> Result<Array2<f32>> {
    let key = cache_key(model, cut, files)?;
    cache::cached(cache_dir, &file_stem(model), files.len(), key, || {
        let (prefix, pre) = open_backbone(model, cut)?;
        photo_features(&prefix, &pre, files)
    })
}

/// A model file's name without its extension (what cache files are named after).
fn file_stem(model: &Path) -> String {
    model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().to_string())
}

/// A photo data set: the classes' folders under `root`, each cut by [`split_fixed`], through Lite0 under
/// `data_dir` ([`cached_features`] in `data_dir/cache`): 1280-d feature vectors as `1 × 1 × 1280` "images".
/// Computed once per process for each (root, classes, test split); concurrent callers wait for the first.
pub fn photo_dataset(data_dir: &Path, root: &Path, name: &str, classes: &[&str], test: usize) -> Result<Arc<Dataset>> {
    static MEMO: DatasetMemo<(PathBuf, String, usize)> = DatasetMemo::new();
    MEMO.get((root.to_path_buf(), classes.join(","), test), || build_dataset(data_dir, root, name, classes, test))
}

fn build_dataset(data_dir: &Path, root: &Path, name: &str, classes: &[&str], test: usize) -> Result<Dataset> {
    let (mut train, mut tests) = (Vec::new(), Vec::new());
    for files in list_classes(root, classes)? {
        let (tr, te) = split_fixed(&files, test)?;
        train.extend(tr);
        tests.extend(te);
    }
    let model = lite0_path(data_dir);
    let cache = data_dir.join("cache");
    let train_x = cached_features(&cache, &model, LITE0_FEATURES, &train)?;
    let test_x = cached_features(&cache, &model, LITE0_FEATURES, &tests)?;
    Ok(Dataset {
        name: format!("{name}-lite0"),
        channels: 1,
        rows: 1,
        cols: train_x.ncols(),
        num_classes: classes.len(),
        train_y: train.iter().map(|f| f.class).collect(),
        train_x,
        test_y: tests.iter().map(|f| f.class).collect(),
        test_x,
    })
}

/// A grey data set (MNIST, Fashion-MNIST; `norm` the normalisation its pixels carry) as a camera board sees it:
/// each image back to its 8-bit pixels and sent as a raw grey picture, made the model's input by the board's own
/// [`Preprocess::from_raw`] with the spec travelling with Lite0 (grey copied into R, G and B, stretched bilinearly
/// to 224 × 224, `(x − 127) / 128`), through Lite0 under `data_dir` cut at its pooled features: every training and
/// test image as a 1280-d feature vector (`1 × 1 × 1280` "images", the same labels). Cached on disk
/// ([`cache::cached`], key: the backbone's bytes, the cut and the pixels) and once per process for each data set.
pub fn grey_dataset(data_dir: &Path, ds: &Dataset, norm: (f32, f32)) -> Result<Arc<Dataset>> {
    static MEMO: DatasetMemo<(PathBuf, String)> = DatasetMemo::new();
    MEMO.get((data_dir.to_path_buf(), ds.name.clone()), || grey_through_lite0(data_dir, ds, norm))
}

/// 8-bit pixels of normalised rows (`(p/255 − mean)/std`, rounded back).
pub fn grey_pixels(x: &ndarray::ArrayView2<'_, f32>, norm: (f32, f32)) -> Vec<u8> {
    let (mean, std) = norm;
    x.iter().map(|v| ((v * std + mean) * 255.0).round().clamp(0.0, 255.0) as u8).collect()
}

/// Features through `prefix` of grey `width × height` images (`pixels`, one image after another), each sent as
/// a raw grey picture and made the model's input by the board's [`Preprocess::from_raw`]; rows keep the images'
/// order ([`crate::data::backbone::features_in_chunks`]).
pub fn grey_features(
    prefix: &FrozenPrefix,
    pre: &Preprocess,
    pixels: &[u8],
    width: u16,
    height: u16,
) -> Result<Array2<f32>> {
    let per = usize::from(width) * usize::from(height);
    if per == 0 || !pixels.len().is_multiple_of(per) {
        return Err(Error::Invalid(format!("{} pixel bytes are not whole {width}×{height} images", pixels.len())));
    }
    let images: Vec<&[u8]> = pixels.chunks_exact(per).collect();
    crate::data::backbone::features_in_chunks(prefix, &images, |img| {
        let image = firmware::protocol::Image { width, height, channels: 1, pixels: img.to_vec() };
        Ok(pre.from_raw(&image)?)
    })
}

fn grey_through_lite0(data_dir: &Path, ds: &Dataset, norm: (f32, f32)) -> Result<Dataset> {
    if ds.channels != 1 {
        return Err(Error::Invalid(format!("{}: the grey camera adapter takes grey images", ds.name)));
    }
    let (width, height) = match (u16::try_from(ds.cols), u16::try_from(ds.rows)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(Error::Invalid(format!("{}: images of {}×{} pixels", ds.name, ds.rows, ds.cols))),
    };
    let model = lite0_path(data_dir);
    crate::data::require_fetched(&model)?;
    let model_bytes = std::fs::read(&model).map_err(|e| Error::io(&model, e))?;
    let backbone = std::sync::OnceLock::new();
    let features = |x: &Array2<f32>, part: &str| -> Result<Array2<f32>> {
        let pixels = grey_pixels(&x.view(), norm);
        let mut digest = CRC32C.digest();
        digest.update(&model_bytes);
        digest.update(LITE0_FEATURES.as_bytes());
        digest.update(&(ds.rows as u64).to_le_bytes());
        digest.update(&(ds.cols as u64).to_le_bytes());
        digest.update(&pixels);
        let stem = format!("{}-{}-{part}", file_stem(&model), ds.name);
        cache::cached(&data_dir.join("cache"), &stem, x.nrows(), digest.finalize(), || {
            if backbone.get().is_none() {
                let _ = backbone.set(open_backbone(&model, LITE0_FEATURES)?);
            }
            let (prefix, pre) = backbone.get().ok_or_else(|| Error::Invalid("Lite0 did not open".into()))?;
            grey_features(prefix, pre, &pixels, width, height)
        })
    };
    let train_x = features(&ds.train_x, "train")?;
    let test_x = features(&ds.test_x, "test")?;
    Ok(Dataset {
        name: format!("{}-lite0", ds.name),
        channels: 1,
        rows: 1,
        cols: train_x.ncols(),
        num_classes: ds.num_classes,
        train_x,
        train_y: ds.train_y.clone(),
        test_x,
        test_y: ds.test_y.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<PhotoFile> {
        names.iter().map(|n| PhotoFile { path: PathBuf::from(n), rel: n.to_string(), class: 0 }).collect()
    }

    /// The test split is the same whatever order the files come in, disjoint from training and of the asked size.
    #[test]
    fn the_fixed_split_depends_on_names_only() {
        let names: Vec<String> = (0..30).map(|i| format!("c/sub{}/f{i}.png", i % 3)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = files(&refs);
        let mut b = a.clone();
        b.reverse();
        let (tr_a, te_a) = split_fixed(&a, 7).unwrap();
        let (_, mut te_b) = split_fixed(&b, 7).unwrap();
        te_b.reverse();
        let sorted = |v: &[PhotoFile]| {
            let mut r: Vec<String> = v.iter().map(|f| f.rel.clone()).collect();
            r.sort();
            r
        };
        assert_eq!(sorted(&te_a), sorted(&te_b));
        assert_eq!((tr_a.len(), te_a.len()), (23, 7));
        assert!(tr_a.iter().all(|f| !te_a.contains(f)));
        assert!(split_fixed(&a[..7], 7).is_err(), "no training photo left");
    }

    /// The real `tux8` photos (installed by `scripts/fetch-data.sh`; a clear failure when missing): every class
    /// keeps its 14 test photos, the features are Lite0's 1280 finite values, and a second read comes from the
    /// cache bit for bit.
    #[test]
    fn tux8_photos_pass_through_lite0_and_the_cache() {
        let data_dir = crate::data::data_dir();
        let root = data_dir.join(TUX8_FOLDER);
        let ds = photo_dataset(&data_dir, &root, "tux8", &TUX8_CLASSES, TUX8_TEST_PER_CLASS).unwrap();
        assert_eq!((ds.num_classes, ds.cols, ds.train_x.nrows() + ds.test_x.nrows()), (8, 1280, 713));
        for c in 0..8 {
            assert_eq!(ds.test_y.iter().filter(|&&y| y == c).count(), TUX8_TEST_PER_CLASS);
            assert!(ds.train_y.iter().filter(|&&y| y == c).count() >= 20, "class {c}");
        }
        assert!(ds.train_x.iter().chain(ds.test_x.iter()).all(|v| v.is_finite()));
        let mut tests = Vec::new();
        for files in list_classes(&root, &TUX8_CLASSES).unwrap() {
            tests.extend(split_fixed(&files, TUX8_TEST_PER_CLASS).unwrap().1);
        }
        let again = cached_features(&data_dir.join("cache"), &lite0_path(&data_dir), LITE0_FEATURES, &tests).unwrap();
        assert!(again.iter().zip(ds.test_x.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// MNIST as the camera board sees it: the normalised rows give back the IDX file's bytes exactly, and each
    /// image's Lite0 features are the board's own path (`from_raw`, then the prefix), whatever the chunking.
    #[test]
    fn grey_images_reach_lite0_as_the_boards_raw_pictures() {
        let data_dir = crate::data::data_dir();
        let ds = crate::data::load_mnist(&data_dir.join("mnist")).unwrap();
        let raw = crate::data::idx::read_idx(
            &crate::data::idx::resolve_idx(&data_dir.join("mnist/t10k-images-idx3-ubyte")).unwrap(),
        )
        .unwrap();
        let pixels = grey_pixels(&ds.test_x.view(), crate::data::MNIST_NORM);
        assert_eq!(pixels, raw.data, "normalised and back must be the file's bytes");
        let (prefix, pre) = open_backbone(&lite0_path(&data_dir), LITE0_FEATURES).unwrap();
        let three = &pixels[..3 * 784];
        let f = grey_features(&prefix, &pre, three, 28, 28).unwrap();
        assert_eq!(f.dim(), (3, 1280));
        let image = firmware::protocol::Image { width: 28, height: 28, channels: 1, pixels: three[784..1568].to_vec() };
        let x = pre.from_raw(&image).unwrap();
        let alone = prefix.run(&Array2::from_shape_vec((1, x.len()), x).unwrap().view()).unwrap();
        assert!(alone.row(0).iter().zip(f.row(1)).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(grey_features(&prefix, &pre, &three[..100], 28, 28).is_err(), "a cut image is refused");
    }
}
