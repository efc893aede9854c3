//! Samples from folders, the way field users collect them: a camera tool saves photos per class into
//! `inbox/<class-name>/`; a learn request (button, protocol or CLI) learns them; afterwards they live in
//! `processed/<class-name>/`. Files that cannot be used go to `rejected/` with a line in `rejected/rejected.log`.
//! Nothing is ever deleted.
//!
//! ```text
//! <root>/inbox/cat/IMG_0001.jpg     waiting (a name starting with '.' or ending in .tmp / .part / ~ is still
//!                                   being written and is left alone)
//! <root>/processed/cat/IMG_0001.jpg learned and committed
//! <root>/rejected/cat/notes.txt     not a readable PNG/JPEG (or not in a class folder, or too large)
//! <root>/rejected/rejected.log      one line per rejected file: what and why
//! ```
//!
//! **Exactly once.** A photo is moved to `processed/` only after the state that learned it was committed, and the
//! committed state lists the photos of its task ([`InboxLedger`]): a photo found still in the inbox after a
//! restart that the committed ledger lists (same class, name, length and CRC-32C) was learned before the power
//! went; it is moved without being learned again ([`Inbox::reconcile`]). Moves are renames (atomic) followed by
//! an fsync of both folders.
//!
//! Images are decoded with the `image` crate (PNG and JPEG, pure Rust), converted to grey or RGB for the model's
//! channel count, resized to its input size (triangle filter; untouched when the size already matches) and
//! normalised as `(p/255 − mean)/std` like the training data ([`Preprocess`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::error::{Error, Result};
use crate::protocol::Image;
use crate::store::{CRC32C, InboxLedger, LedgerFile};

/// Folder of waiting photos, under the root.
pub const INBOX: &str = "inbox";
/// Folder of learned photos, under the root.
pub const PROCESSED: &str = "processed";
/// Folder of rejected files, under the root.
pub const REJECTED: &str = "rejected";
/// The rejection report, in [`REJECTED`].
pub const REJECTED_LOG: &str = "rejected.log";
/// Files larger than this are rejected unread.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// Largest image side accepted, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Most bytes a decoded picture may take (the `image` crate's allocation limit): 36 MiB, a 12-megapixel RGB photo
/// (4032 × 3024 × 3 bytes). A file whose header claims a larger picture is refused before its pixels are
/// allocated: a few hundred bytes of JPEG claiming 8000 × 8000 RGB made the decoder allocate 192 MB, more than
/// the smallest Jetson's whole workspace budget then (128 MiB, boards/jetson-nano-4gb.toml; found by the
/// `photo_decode` fuzz target, docs/fuzzing.md).
pub const MAX_DECODED_BYTES: u64 = 36 << 20;

/// One waiting photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxFile {
    /// Its class folder's name (the class name), or `None` for a file directly in `inbox/`.
    pub class: Option<String>,
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
}

/// A photo read from the inbox: its identity for the ledger and its model input.
#[derive(Debug, Clone)]
pub struct LoadedPhoto {
    /// Where it is.
    pub file: InboxFile,
    /// Class, name, length and CRC.
    pub id: LedgerFile,
    /// Model input (`Preprocess::len` values).
    pub input: Vec<f32>,
}

/// How pictures become model inputs (the preprocessing spec that travels with a model, `models/README.md`,
/// "Preprocessing specs"; [`Preprocess::from_spec`]): transparency composited onto `background`, the picture
/// stretched to `resize` (bilinear, 8 bits per channel), centre-cropped to `height × width`, each value
/// `(p · scale − mean[c]) / std[c]`, written in the model's layout and channel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// 1 (grey) or 3 (colour).
    pub channels: usize,
    /// Input height.
    pub height: u32,
    /// Input width.
    pub width: u32,
    /// Multiplies the 8-bit pixel value before the mean is subtracted (`1/255` for `p/255`).
    pub scale: f32,
    /// Per channel (in the model's channel order), subtracted after `scale`; a grey model uses the first.
    pub mean: [f32; 3],
    /// Per channel, divided by.
    pub std: [f32; 3],
    /// Grey level (0–255) a transparent pixel is composited onto: 0, the black of MNIST's background, unless
    /// set otherwise (a model trained on photos on white takes 255).
    pub background: u8,
    /// Size (height, width) the picture is stretched to before the centre crop; `(height, width)`: no crop.
    pub resize: (u32, u32),
    /// Colour channels in B, G, R order (Caffe models) instead of R, G, B.
    pub bgr: bool,
    /// Values laid out `H × W × C` (NHWC) instead of channel-major planes (NCHW).
    pub channels_last: bool,
}

fn img_err(source: &str, reason: impl std::fmt::Display) -> Error {
    Error::Image { source_name: source.to_string(), reason: reason.to_string() }
}

/// A side of a model input or resize: 1 to [`MAX_SIDE`].
pub(crate) fn side(v: usize) -> Option<u32> {
    u32::try_from(v).ok().filter(|&s| s > 0 && s <= MAX_SIDE)
}

impl Preprocess {
    /// The model input's image layout (what [`crate::augment`] jitters).
    pub fn shape(&self) -> crate::augment::ImageShape {
        crate::augment::ImageShape {
            channels: self.channels,
            height: self.height as usize,
            width: self.width as usize,
            channels_last: self.channels_last,
        }
    }

    /// For a model whose per-sample input shape is `[C, H, W]` (C = 1 or 3), `[H, W]`, or flat `[N]` with N a
    /// square (a flattened grey image), normalised as `(p/255 − mean) / std` on every channel, RGB, NCHW, no
    /// crop, transparency onto black: what a model without a spec gets (`firmware daemon --norm`).
    pub fn for_input_shape(shape: &[usize], mean: f32, std: f32) -> Result<Self> {
        if !(std.is_finite() && std > 0.0 && mean.is_finite()) {
            return Err(Error::Config(format!("normalisation mean {mean} / std {std}")));
        }
        let (channels, h, w) = match *shape {
            [c, h, w] if c == 1 || c == 3 => (c, h, w),
            [h, w] => (1, h, w),
            [n] => {
                let s = (n as f64).sqrt().round() as usize;
                if s * s != n {
                    return Err(Error::Config(format!("model input of {n} values is not a square grey image")));
                }
                (1, s, s)
            }
            _ => return Err(Error::Config(format!("model input shape {shape:?} is not an image ([C, H, W])"))),
        };
        let (Some(height), Some(width)) = (side(h), side(w)) else {
            return Err(Error::Config(format!("model input shape {shape:?}: bad image size")));
        };
        Ok(Self {
            channels,
            height,
            width,
            scale: 1.0 / 255.0,
            mean: [mean; 3],
            std: [std; 3],
            background: 0,
            resize: (height, width),
            bgr: false,
            channels_last: false,
        })
    }

    /// The per-sample input shape the model must have for this preprocessing: `[C, H, W]`, or `[H, W, C]` when
    /// channels come last.
    pub fn input_shape(&self) -> [usize; 3] {
        let (c, h, w) = (self.channels, self.height as usize, self.width as usize);
        if self.channels_last { [h, w, c] } else { [c, h, w] }
    }

    /// Values per model input.
    pub fn len(&self) -> usize {
        self.channels * self.height as usize * self.width as usize
    }

    /// True for a zero-sized input (never, for a checked shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode a PNG or JPEG file's bytes (`source` names it in errors) into a model input, as a viewer shows
    /// the photo: the format is read from the content (not the file name), the EXIF orientation is applied, a
    /// transparent pixel is composited onto [`Preprocess::background`], any bit depth, palette or colour model
    /// (grey, RGB, CMYK) is converted. A JPEG without its end-of-image marker (a file cut short) is refused rather
    /// than learned with its missing part made up; so is a picture whose side exceeds [`MAX_SIDE`] or whose pixels
    /// would take more than [`MAX_DECODED_BYTES`].
    pub fn decode(&self, bytes: &[u8], source: &str) -> Result<Vec<f32>> {
        let mut reader =
            ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| img_err(source, e))?;
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_DECODED_BYTES);
        reader.limits(limits);
        let format = reader.format().ok_or_else(|| img_err(source, "not a PNG or JPEG image"))?;
        if format == image::ImageFormat::Jpeg && !ends_with_jpeg_eoi(bytes) {
            return Err(img_err(source, "truncated JPEG: no end-of-image marker (FF D9) at the end of the file"));
        }
        let mut decoder = reader.into_decoder().map_err(|e| img_err(source, e))?;
        let total = decoder.total_bytes();
        if total > MAX_DECODED_BYTES {
            return Err(img_err(
                source,
                format!("its pixels take {total} bytes, over the limit of {MAX_DECODED_BYTES} bytes"),
            ));
        }
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut img = DynamicImage::from_decoder(decoder).map_err(|e| img_err(source, e))?;
        img.apply_orientation(orientation);
        Ok(self.tensor(self.composited(img)))
    }

    /// `img` with its alpha channel (if any) composited onto the background: `c·a + bg·(1 − a)`.
    fn composited(&self, img: DynamicImage) -> DynamicImage {
        if !img.color().has_alpha() {
            return img;
        }
        // 8 bits per channel, rounded: `(p·a + bg·(255 − a) + 127) / 255`.
        let rgba = img.into_rgba8();
        let bg = u16::from(self.background);
        let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let p = rgba.get_pixel(x, y).0;
            let a = u16::from(p[3]);
            image::Rgb(std::array::from_fn(|c| ((u16::from(p[c]) * a + bg * (255 - a) + 127) / 255) as u8))
        });
        DynamicImage::ImageRgb8(rgb)
    }

    /// A raw image sent over the link (grey or RGB bytes) into a model input.
    pub fn from_raw(&self, image: &Image) -> Result<Vec<f32>> {
        let (w, h) = (u32::from(image.width), u32::from(image.height));
        let expected = usize::from(image.width) * usize::from(image.height) * usize::from(image.channels);
        if w == 0 || h == 0 || image.pixels.len() != expected {
            return Err(img_err(
                "link",
                format!(
                    "{}×{}×{} needs {expected} pixel bytes, got {}",
                    image.width,
                    image.height,
                    image.channels,
                    image.pixels.len()
                ),
            ));
        }
        let img = match image.channels {
            1 => image::GrayImage::from_raw(w, h, image.pixels.clone()).map(DynamicImage::ImageLuma8),
            3 => image::RgbImage::from_raw(w, h, image.pixels.clone()).map(DynamicImage::ImageRgb8),
            c => return Err(img_err("link", format!("{c} channels (1 or 3 supported)"))),
        };
        let img = img.ok_or_else(|| img_err("link", "pixel buffer does not match its size"))?;
        Ok(self.tensor(img))
    }

    fn tensor(&self, img: DynamicImage) -> Vec<f32> {
        let (h, w) = (self.height as usize, self.width as usize);
        let (rh, rw) = self.resize;
        let (top, left) = (rh.saturating_sub(self.height) / 2, rw.saturating_sub(self.width) / 2);
        let filter = image::imageops::FilterType::Triangle;
        let mut out = vec![0.0f32; self.len()];
        let shape = self.shape();
        if self.channels == 1 {
            let mut g = img.into_luma8();
            if g.dimensions() != (rw, rh) {
                g = image::imageops::resize(&g, rw, rh, filter);
            }
            for y in 0..h {
                for x in 0..w {
                    let p = f32::from(g.get_pixel(left + x as u32, top + y as u32).0[0]);
                    out[shape.index(0, y, x)] = (p * self.scale - self.mean[0]) / self.std[0];
                }
            }
        } else {
            let mut rgb = img.into_rgb8();
            if rgb.dimensions() != (rw, rh) {
                rgb = image::imageops::resize(&rgb, rw, rh, filter);
            }
            for y in 0..h {
                for x in 0..w {
                    let px = rgb.get_pixel(left + x as u32, top + y as u32).0;
                    for c in 0..3 {
                        let p = f32::from(px[if self.bgr { 2 - c } else { c }]);
                        out[shape.index(c, y, x)] = (p * self.scale - self.mean[c]) / self.std[c];
                    }
                }
            }
        }
        out
    }
}

/// True when the JPEG bytes end with the end-of-image marker `FF D9`, after any trailing zero or whitespace
/// padding some writers add. A file cut short (an interrupted copy) lacks it; the decoder would otherwise fill the
/// missing rows with grey.
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n')).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// True for a file name the camera tool may still be writing (or a hidden file): left alone.
pub fn is_in_progress(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") || name.ends_with('~')
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context: what, source }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(format!("syncing {}", dir.display())))
}

/// The three folders under one root: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Inbox {
    root: PathBuf,
}

impl Inbox {
    /// The folders under `root` (created if missing).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for d in [INBOX, PROCESSED, REJECTED] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        Ok(Self { root })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waiting files, sorted by class then name (files still being written are skipped). Unreadable folder
    /// entries are skipped with a warning.
    pub fn pending(&self) -> Result<Vec<InboxFile>> {
        let inbox = self.root.join(INBOX);
        let mut out = Vec::new();
        let entries = fs::read_dir(&inbox).map_err(io_err(format!("reading {}", inbox.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_in_progress(&name) {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_file() {
                out.push(InboxFile { class: None, name, path });
            } else if kind.is_dir() {
                let Ok(files) = fs::read_dir(&path) else {
                    tracing::warn!(folder = %path.display(), "inbox class folder unreadable");
                    continue;
                };
                for f in files.flatten() {
                    let fname = f.file_name().to_string_lossy().into_owned();
                    if is_in_progress(&fname) || !f.file_type().is_ok_and(|t| t.is_file()) {
                        continue;
                    }
                    out.push(InboxFile { class: Some(name.clone()), name: fname, path: f.path() });
                }
            }
        }
        out.sort_by(|a, b| (&a.class, &a.name).cmp(&(&b.class, &b.name)));
        Ok(out)
    }

    /// Read and identify one waiting file and turn it into a model input. Any problem with the file itself (too
    /// large, not PNG/JPEG, no class folder, a class name that is not valid UTF-8) is [`Error::Image`]; the caller
    /// rejects it. An I/O error is [`Error::Io`].
    pub fn load(&self, file: &InboxFile, pre: &Preprocess) -> Result<LoadedPhoto> {
        let source = file.path.display().to_string();
        let Some(class) = &file.class else {
            return Err(img_err(&source, "not in a class folder (put it in inbox/<class-name>/)"));
        };
        if class.contains(char::REPLACEMENT_CHARACTER) || file.name.contains(char::REPLACEMENT_CHARACTER) {
            return Err(img_err(&source, "folder or file name is not valid UTF-8"));
        }
        let meta = fs::metadata(&file.path).map_err(io_err(format!("reading {source}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(img_err(&source, format!("{} bytes, over the limit of {MAX_FILE_BYTES}", meta.len())));
        }
        let bytes = fs::read(&file.path).map_err(io_err(format!("reading {source}")))?;
        let input = pre.decode(&bytes, &source)?;
        let id = LedgerFile {
            class: class.clone(),
            name: file.name.clone(),
            len: bytes.len() as u64,
            crc: CRC32C.checksum(&bytes),
        };
        Ok(LoadedPhoto { file: file.clone(), id, input })
    }

    /// A free destination for `file` under `folder` (`<folder>/<class>/<name>`, or `name-1`, `name-2`, … when
    /// taken), with its folder created.
    fn destination(&self, folder: &str, file: &InboxFile) -> Result<PathBuf> {
        let dir = match &file.class {
            Some(c) => self.root.join(folder).join(c),
            None => self.root.join(folder),
        };
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut dst = dir.join(&file.name);
        let mut n = 1;
        while dst.exists() {
            dst = dir.join(format!("{}-{n}", file.name));
            n += 1;
        }
        Ok(dst)
    }

    fn move_to(&self, folder: &str, file: &InboxFile) -> Result<PathBuf> {
        let dst = self.destination(folder, file)?;
        fs::rename(&file.path, &dst).map_err(io_err(format!("moving {} to {}", file.path.display(), dst.display())))?;
        Ok(dst)
    }

    /// Make the moves so far durable: fsync the inbox, processed and rejected folders touched.
    fn sync(&self, files: &[&InboxFile], folder: &str) -> Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for f in files {
            for d in [f.path.parent().map(Path::to_path_buf), self.destination_dir(folder, f)] {
                if let Some(d) = d
                    && !dirs.contains(&d)
                {
                    dirs.push(d);
                }
            }
        }
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    fn destination_dir(&self, folder: &str, file: &InboxFile) -> Option<PathBuf> {
        Some(match &file.class {
            Some(c) => self.root.join(folder).join(c),
            None => self.root.join(folder),
        })
    }

    /// Move learned (committed) files to `processed/`, durably. Returns their new paths.
    pub fn mark_processed(&self, files: &[&InboxFile]) -> Result<Vec<PathBuf>> {
        let moved = files.iter().map(|f| self.move_to(PROCESSED, f)).collect::<Result<Vec<_>>>()?;
        self.sync(files, PROCESSED)?;
        Ok(moved)
    }

    /// Set an unusable file aside in `rejected/` and append `reason` to the rejection report. Returns its new
    /// path.
    pub fn reject(&self, file: &InboxFile, reason: &str) -> Result<PathBuf> {
        let dst = self.move_to(REJECTED, file)?;
        let log = self.root.join(REJECTED).join(REJECTED_LOG);
        let line =
            format!("{}: {}\n", dst.strip_prefix(&self.root).unwrap_or(&dst).display(), reason.replace('\n', " "));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(io_err(format!("writing {}", log.display())))?;
        self.sync(&[file], REJECTED)?;
        tracing::warn!(file = %file.path.display(), moved_to = %dst.display(), reason, "inbox file rejected");
        Ok(dst)
    }

    /// After a restart: move every waiting file that `ledger` lists (same class, name, length, CRC) to
    /// `processed/`: the committed state already learned it. Returns how many were moved.
    pub fn reconcile(&self, ledger: &InboxLedger) -> Result<usize> {
        if ledger.files.is_empty() {
            return Ok(0);
        }
        let mut done = Vec::new();
        for f in self.pending()? {
            let Some(class) = &f.class else { continue };
            let Some(entry) = ledger.files.iter().find(|e| &e.class == class && e.name == f.name) else { continue };
            let Ok(bytes) = fs::read(&f.path) else { continue };
            if bytes.len() as u64 == entry.len && CRC32C.checksum(&bytes) == entry.crc {
                done.push(f);
            }
        }
        let refs: Vec<&InboxFile> = done.iter().collect();
        self.mark_processed(&refs)?;
        if !done.is_empty() {
            tracing::info!(files = done.len(), "inbox: photos learned before the restart moved to processed/");
        }
        Ok(done.len())
    }
}

mod spec;
pub use spec::{SPEC_FORMAT, SPEC_METADATA_KEY, sidecar_path};

#[cfg(test)]
mod tests;
