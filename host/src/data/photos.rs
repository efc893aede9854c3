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

use crate::data::Dataset;
use crate::data::backbone::DatasetMemo;
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
    if !model.is_file() {
        return Err(Error::Invalid(format!("{} is missing; run `bash scripts/fetch-data.sh`", model.display())));
    }
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

/// Magic of a feature cache file.
const CACHE_MAGIC: &[u8; 8] = b"ELFEAT01";

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

/// Encode a feature matrix: magic, rows and columns (u64 LE), the values (f32 LE), CRC-32C of all before.
fn encode(x: &Array2<f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 + 4 * x.len() + 4);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&(x.nrows() as u64).to_le_bytes());
    out.extend_from_slice(&(x.ncols() as u64).to_le_bytes());
    x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    let crc = CRC32C.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode [`encode`]'s bytes, `None` for anything else (wrong magic, length or CRC, another shape).
fn decode(bytes: &[u8], rows: usize) -> Option<Array2<f32>> {
    let body = bytes.get(..bytes.len().checked_sub(4)?)?;
    let crc = u32::from_le_bytes(bytes.get(body.len()..)?.try_into().ok()?);
    if CRC32C.checksum(body) != crc || body.get(..8)? != CACHE_MAGIC {
        return None;
    }
    let r = usize::try_from(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?)).ok()?;
    let c = usize::try_from(u64::from_le_bytes(body.get(16..24)?.try_into().ok()?)).ok()?;
    let data = body.get(24..)?;
    if r != rows || data.len() != r.checked_mul(c)?.checked_mul(4)? {
        return None;
    }
    let values = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Array2::from_shape_vec((r, c), values).ok()
}

/// [`photo_features`] of `files` through `model` cut at `cut`, read from `cache_dir` when a file there holds
/// them (same [`cache_key`]), otherwise computed and written there (durably; a failed write only logs).
pub fn cached_features(cache_dir: &Path, model: &Path, cut: &str, files: &[PhotoFile]) -> Result<Array2<f32>> {
    let key = cache_key(model, cut, files)?;
    let stem = model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().to_string());
    let path = cache_dir.join(format!("features-{stem}-{}-{key:08x}.bin", files.len()));
    if let Ok(bytes) = std::fs::read(&path) {
        match decode(&bytes, files.len()) {
            Some(x) => {
                tracing::info!(cache = %path.display(), photos = files.len(), "backbone features read from the cache");
                return Ok(x);
            }
            None => tracing::warn!(cache = %path.display(), "feature cache unreadable: computing the features again"),
        }
    }
    let (prefix, pre) = open_backbone(model, cut)?;
    let t0 = std::time::Instant::now();
    let x = photo_features(&prefix, &pre, files)?;
    tracing::info!(
        photos = files.len(),
        secs = t0.elapsed().as_secs_f64(),
        threads = rayon::current_num_threads(),
        "backbone features computed"
    );
    if let Err(e) = firmware::store::write_durable(&path, &encode(&x)) {
        tracing::warn!(cache = %path.display(), error = %e, "could not write the feature cache");
    }
    Ok(x)
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

    /// The cache codec round-trips and refuses a flipped bit, a cut file and another photo count.
    #[test]
    fn cache_files_round_trip_and_refuse_damage() {
        let x = Array2::from_shape_fn((3, 5), |(i, j)| i as f32 - 0.5 * j as f32);
        let bytes = encode(&x);
        assert_eq!(decode(&bytes, 3), Some(x));
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped, 3), None);
        assert_eq!(decode(&bytes[..bytes.len() - 3], 3), None);
        assert_eq!(decode(&bytes, 4), None);
        assert_eq!(decode(&[], 3), None);
    }
}
