use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};

const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

fn norm(p: u8) -> f32 {
    (f32::from(p) / 255.0 - MEAN) / STD
}

/// A fresh scratch folder under the target dir.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgelearn-inbox-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn mnist_pre() -> Preprocess {
    Preprocess::for_input_shape(&[1, 28, 28], MEAN, STD).unwrap()
}

/// A 28×28 grey image with a gradient, as PNG bytes.
fn gradient_png() -> (image::GrayImage, Vec<u8>) {
    let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]));
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    (img, bytes)
}

fn encode(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    bytes
}

fn put(root: &Path, class: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = if class.is_empty() { root.join(INBOX) } else { root.join(INBOX).join(class) };
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn preprocess_shapes() {
    let p = Preprocess::for_input_shape(&[3, 32, 24], 0.5, 0.25).unwrap();
    assert_eq!((p.channels, p.height, p.width, p.len()), (3, 32, 24, 3 * 32 * 24));
    let p = Preprocess::for_input_shape(&[784], MEAN, STD).unwrap();
    assert_eq!((p.channels, p.height, p.width), (1, 28, 28));
    assert!(!p.is_empty());
    assert_eq!(Preprocess::for_input_shape(&[10, 12], 0.0, 1.0).unwrap().len(), 120);
    for bad in [&[2usize, 28, 28][..], &[783], &[1, 0, 28], &[1, 2, 3, 4], &[1, 9000, 4]] {
        assert!(matches!(Preprocess::for_input_shape(bad, 0.0, 1.0), Err(Error::Config(_))), "{bad:?}");
    }
    assert!(matches!(Preprocess::for_input_shape(&[1, 28, 28], 0.0, 0.0), Err(Error::Config(_))));
    assert!(matches!(Preprocess::for_input_shape(&[1, 28, 28], f32::NAN, 1.0), Err(Error::Config(_))));
}

#[test]
fn png_of_the_input_size_is_normalised_pixel_for_pixel() {
    let (img, bytes) = gradient_png();
    let v = mnist_pre().decode(&bytes, "g.png").unwrap();
    assert_eq!(v.len(), 784);
    for (i, (&got, &p)) in v.iter().zip(img.as_raw()).enumerate() {
        assert!((got - norm(p)).abs() < 1e-6, "pixel {i}: {got} vs {}", norm(p));
    }
}

#[test]
fn larger_rgb_png_is_resized_and_made_grey() {
    // 84×56 RGB, left half white, right half black: 28×28 grey, left columns ≈ white, right ≈ black.
    let img = image::RgbImage::from_fn(84, 56, |x, _| if x < 42 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
    let bytes = encode(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
    let v = mnist_pre().decode(&bytes, "rgb.png").unwrap();
    assert_eq!(v.len(), 784);
    for row in v.chunks(28) {
        assert!((row[0] - norm(255)).abs() < 1e-3, "{}", row[0]);
        assert!((row[12] - norm(255)).abs() < 1e-3);
        assert!((row[15] - norm(0)).abs() < 1e-3);
        assert!((row[27] - norm(0)).abs() < 1e-3);
    }
}

#[test]
fn jpeg_decodes_to_the_same_picture_within_compression_error() {
    let (img, png) = gradient_png();
    let jpeg = encode(&DynamicImage::ImageLuma8(img), image::ImageFormat::Jpeg);
    assert_ne!(png, jpeg);
    let pre = mnist_pre();
    let a = pre.decode(&png, "g.png").unwrap();
    let b = pre.decode(&jpeg, "g.jpg").unwrap();
    let mean_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    // Normalised units: 1/255/0.3081 ≈ 0.0127 per grey level; JPEG at default quality is within a few levels.
    assert!(mean_abs < 0.1, "mean abs difference {mean_abs}");
}

#[test]
fn rgb_model_inputs_are_channel_major_planes() {
    let pre = Preprocess::for_input_shape(&[3, 4, 4], 0.0, 1.0).unwrap();
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([255, 0, 51]));
    let v = pre.decode(&encode(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png), "red.png").unwrap();
    assert_eq!(v.len(), 48);
    assert!(v[..16].iter().all(|&x| (x - 1.0).abs() < 1e-6));
    assert!(v[16..32].iter().all(|&x| x.abs() < 1e-6));
    assert!(v[32..].iter().all(|&x| (x - 0.2).abs() < 1e-6));
}

#[test]
fn raw_link_images_match_file_images_and_bad_ones_are_image_errors() {
    let (img, png) = gradient_png();
    let pre = mnist_pre();
    let raw = Image { width: 28, height: 28, channels: 1, pixels: img.as_raw().clone() };
    assert_eq!(pre.from_raw(&raw).unwrap(), pre.decode(&png, "g.png").unwrap());
    let rgb = Image { width: 2, height: 2, channels: 3, pixels: vec![10; 12] };
    assert_eq!(pre.from_raw(&rgb).unwrap().len(), 784);
    for bad in [
        Image { width: 28, height: 28, channels: 1, pixels: vec![0; 783] },
        Image { width: 0, height: 28, channels: 1, pixels: vec![] },
        Image { width: 2, height: 2, channels: 2, pixels: vec![0; 8] },
        Image { width: 2, height: 2, channels: 4, pixels: vec![0; 16] },
    ] {
        assert!(matches!(pre.from_raw(&bad), Err(Error::Image { .. })), "{bad:?}");
    }
}

#[test]
fn bytes_that_are_no_image_are_image_errors() {
    let pre = mnist_pre();
    let (_, png) = gradient_png();
    for (name, bytes) in [
        ("empty", vec![]),
        ("text", b"hello, this is not a picture".to_vec()),
        ("truncated png", png[..png.len() / 2].to_vec()),
        ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
    ] {
        match pre.decode(&bytes, name) {
            Err(Error::Image { source_name, .. }) => assert_eq!(source_name, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Found by the `photo_decode` fuzz target (docs/fuzzing.md): a JPEG of a 28×28 picture whose frame header
/// (SOF0) claims 8000 × 8000 RGB. The decoder allocated the whole 192 MB picture before reading any pixel data;
/// now the header's size is refused against `MAX_DECODED_BYTES` first, with an image error.
#[test]
fn a_jpeg_header_claiming_more_than_the_decode_limit_is_refused_before_allocating() {
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(28, 28, |x, y| image::Rgb([x as u8 * 9, y as u8, 7])));
    let mut bytes = encode(&img, image::ImageFormat::Jpeg);
    assert!(mnist_pre().decode(&bytes, "small.jpg").is_ok());
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline JPEG has SOF0");
    // 8000 × 8000 × 3 bytes = 183 MiB, over MAX_DECODED_BYTES.
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x1f, 0x40, 0x1f, 0x40]);
    match mnist_pre().decode(&bytes, "huge.jpg") {
        Err(Error::Image { source_name, reason }) => {
            assert_eq!(source_name, "huge.jpg");
            assert!(reason.contains("limit"), "{reason}");
        }
        Ok(x) => panic!("expected an image error, got a tensor of {} values", x.len()),
        Err(e) => panic!("expected an image error, got {e}"),
    }
}

#[test]
fn pending_lists_class_folders_sorted_and_leaves_files_in_progress_alone() {
    let root = scratch("pending");
    let inbox = Inbox::open(&root).unwrap();
    for d in [INBOX, PROCESSED, REJECTED] {
        assert!(root.join(d).is_dir());
    }
    let (_, png) = gradient_png();
    put(&root, "zebra", "b.png", &png);
    put(&root, "zebra", "a.png", &png);
    put(&root, "ant", "x.png", &png);
    put(&root, "ant", "x.png.part", &png);
    put(&root, "ant", ".hidden.png", &png);
    put(&root, "ant", "y.tmp", &png);
    put(&root, "ant", "z~", &png);
    put(&root, "", "loose.png", &png);
    fs::create_dir_all(root.join(INBOX).join(".staging")).unwrap();
    put(&root, ".staging", "s.png", &png);
    let got: Vec<(Option<String>, String)> = inbox.pending().unwrap().into_iter().map(|f| (f.class, f.name)).collect();
    assert_eq!(
        got,
        vec![
            (None, "loose.png".to_string()),
            (Some("ant".into()), "x.png".into()),
            (Some("zebra".into()), "a.png".into()),
            (Some("zebra".into()), "b.png".into()),
        ]
    );
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn load_identifies_the_file_and_rejects_unusable_ones() {
    let root = scratch("load");
    let inbox = Inbox::open(&root).unwrap();
    let pre = mnist_pre();
    let (_, png) = gradient_png();
    put(&root, "7", "good.png", &png);
    put(&root, "7", "notes.txt", b"not an image");
    put(&root, "", "loose.png", &png);
    let big = put(&root, "7", "huge.png", b"");
    File::options().write(true).open(&big).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    let files = inbox.pending().unwrap();
    let by_name = |n: &str| files.iter().find(|f| f.name == n).unwrap();

    let good = inbox.load(by_name("good.png"), &pre).unwrap();
    assert_eq!(
        good.id,
        LedgerFile { class: "7".into(), name: "good.png".into(), len: png.len() as u64, crc: CRC32C.checksum(&png) }
    );
    assert_eq!(good.input, pre.decode(&png, "x").unwrap());
    for bad in ["notes.txt", "loose.png", "huge.png"] {
        assert!(matches!(inbox.load(by_name(bad), &pre), Err(Error::Image { .. })), "{bad}");
    }
    // A file that vanished between listing and loading is an I/O error (not rejected: there is nothing to move).
    fs::remove_file(by_name("good.png").path.clone()).unwrap();
    assert!(matches!(inbox.load(by_name("good.png"), &pre), Err(Error::Io { .. })));
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn rejected_files_are_set_aside_with_a_reason_never_lost() {
    let root = scratch("reject");
    let inbox = Inbox::open(&root).unwrap();
    let original = b"definitely not a png".to_vec();
    put(&root, "cat", "IMG_1.png", &original);
    let f = inbox.pending().unwrap().remove(0);
    let dst = inbox.reject(&f, "not a PNG or JPEG image\nsecond line").unwrap();
    assert_eq!(dst, root.join(REJECTED).join("cat").join("IMG_1.png"));
    assert_eq!(fs::read(&dst).unwrap(), original, "content kept");
    assert!(!f.path.exists());
    assert!(inbox.pending().unwrap().is_empty());
    // The same name again: kept next to the first, not over it.
    put(&root, "cat", "IMG_1.png", b"another bad one");
    let f = inbox.pending().unwrap().remove(0);
    let dst2 = inbox.reject(&f, "bad again").unwrap();
    assert_eq!(dst2, root.join(REJECTED).join("cat").join("IMG_1.png-1"));
    assert_eq!(fs::read(&dst).unwrap(), original);
    let log = fs::read_to_string(root.join(REJECTED).join(REJECTED_LOG)).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("IMG_1.png") && lines[0].contains("not a PNG or JPEG image second line"), "{log}");
    assert!(lines[1].contains("IMG_1.png-1") && lines[1].ends_with("bad again"), "{log}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn processed_moves_and_reconcile_moves_only_what_the_ledger_learned() {
    let root = scratch("reconcile");
    let inbox = Inbox::open(&root).unwrap();
    let pre = mnist_pre();
    let (_, png) = gradient_png();
    let other = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::from_pixel(28, 28, image::Luma([200]))),
        image::ImageFormat::Png,
    );
    put(&root, "4", "a.png", &png);
    put(&root, "4", "b.png", &png);
    put(&root, "5", "c.png", &other);
    let files = inbox.pending().unwrap();
    let loaded: Vec<LoadedPhoto> = files.iter().map(|f| inbox.load(f, &pre).unwrap()).collect();

    // Learned and committed a.png and c.png, then "the power went" before they were moved.
    let ledger = InboxLedger { samples_learned: 2, files: vec![loaded[0].id.clone(), loaded[2].id.clone()] };
    // A new file with a learned name but other content was not learned: it stays.
    fs::write(root.join(INBOX).join("5").join("c.png"), &png).unwrap();
    assert_eq!(inbox.reconcile(&ledger).unwrap(), 1);
    assert!(root.join(PROCESSED).join("4").join("a.png").is_file());
    let left: Vec<String> = inbox.pending().unwrap().into_iter().map(|f| f.name).collect();
    assert_eq!(left, ["b.png", "c.png"]);
    // Reconciling again moves nothing: idempotent.
    assert_eq!(inbox.reconcile(&ledger).unwrap(), 0);
    assert_eq!(inbox.reconcile(&InboxLedger::default()).unwrap(), 0);

    let pending = inbox.pending().unwrap();
    let refs: Vec<&InboxFile> = pending.iter().collect();
    let moved = inbox.mark_processed(&refs).unwrap();
    assert_eq!(moved, vec![root.join(PROCESSED).join("4").join("b.png"), root.join(PROCESSED).join("5").join("c.png")]);
    assert!(inbox.pending().unwrap().is_empty());
    assert_eq!(fs::read(&moved[1]).unwrap(), png);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn in_progress_names() {
    for n in [".x.png", "a.tmp", "a.png.part", "a.png~"] {
        assert!(is_in_progress(n), "{n}");
    }
    for n in ["a.png", "IMG_0001.JPG", "tmp.png"] {
        assert!(!is_in_progress(n), "{n}");
    }
}

/// The photo files of `firmware/testdata/photos` (made by `scripts/make-photo-fixtures.py` with Pillow): a
/// 40 × 30 dark picture (grey 20) with a bright (230) 10 × 10 block in its top-left corner as a viewer shows it.
fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/photos").join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (checked-in test file)", p.display()))
}

/// Photos as users have them (issue 31 item 5) decode to the picture a viewer shows: grey + alpha (the transparent
/// half composited onto the black background, though its hidden colour is white), palette, 16-bit grey, CMYK and
/// progressive JPEG, a JPEG whose EXIF orientation turns it, a 1 × 1 picture (stretched), and a PNG named `.jpg`.
#[test]
fn photos_in_every_format_users_have_decode_to_what_a_viewer_shows() {
    let pre = Preprocess::for_input_shape(&[1, 30, 40], 0.0, 1.0).unwrap();
    let at = |x: &[f32], r: usize, c: usize| x[r * 40 + c];
    for name in ["palette.png", "grey16.png", "cmyk.jpg", "progressive.jpg", "exif-rotated.jpg", "png-named.jpg"] {
        let x = pre.decode(&fixture(name), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(x.len(), 30 * 40);
        // Inside the block, away from its edge (JPEG rings at edges), and in the dark field.
        for (r, c) in [(2, 2), (5, 5), (7, 3)] {
            assert!((at(&x, r, c) - 230.0 / 255.0).abs() < 0.08, "{name}: block at ({r}, {c}) = {}", at(&x, r, c));
        }
        for (r, c) in [(20, 30), (25, 5), (3, 35), (15, 20)] {
            assert!((at(&x, r, c) - 20.0 / 255.0).abs() < 0.08, "{name}: field at ({r}, {c}) = {}", at(&x, r, c));
        }
    }
    let x = pre.decode(&fixture("grey-alpha.png"), "grey-alpha.png").unwrap();
    assert!((at(&x, 5, 5) - 230.0 / 255.0).abs() < 0.01 && (at(&x, 20, 10) - 20.0 / 255.0).abs() < 0.01);
    assert!((20..40).all(|c| at(&x, 15, c).abs() < 1e-6), "the transparent half is the background: {:?}", &x[600..640]);
    let white = Preprocess { background: 255, ..pre.clone() };
    let x = white.decode(&fixture("grey-alpha.png"), "grey-alpha.png").unwrap();
    assert!((20..40).all(|c| (at(&x, 15, c) - 1.0).abs() < 1e-6));
    let x = pre.decode(&fixture("one-pixel.png"), "one-pixel.png").unwrap();
    assert!(x.iter().all(|v| (v - 200.0 / 255.0).abs() < 1e-6));
}

/// A JPEG cut short, an empty file, text named `.jpg` and a 20 000 × 20 000 picture are image errors with a
/// reason; in an inbox each is moved to `rejected/` with that reason in the log, its bytes kept, while the good
/// photos beside them load.
#[test]
fn unusable_photos_are_rejected_with_their_reason_and_good_ones_load() {
    let pre = mnist_pre();
    for (name, says) in [
        ("truncated.jpg", "truncated JPEG"),
        ("empty.jpg", "not a PNG or JPEG"),
        ("not-an-image.jpg", "not a PNG or JPEG"),
        ("huge-20000.png", "limit"),
    ] {
        match pre.decode(&fixture(name), name) {
            Err(Error::Image { source_name, reason }) => {
                assert_eq!(source_name, name);
                assert!(reason.contains(says), "{name}: {reason}");
            }
            other => panic!("{name}: expected an image error, got {:?}", other.map(|x| x.len())),
        }
    }
    let root = scratch("formats");
    let inbox = Inbox::open(&root).unwrap();
    let names = ["truncated.jpg", "empty.jpg", "not-an-image.jpg", "huge-20000.png", "cmyk.jpg", "exif-rotated.jpg"];
    for name in names {
        put(&root, "cup", name, &fixture(name));
    }
    let (mut loaded, mut rejected) = (Vec::new(), Vec::new());
    for f in inbox.pending().unwrap() {
        match inbox.load(&f, &pre) {
            Ok(p) => loaded.push(p.id.name.clone()),
            Err(e @ Error::Image { .. }) => {
                let dst = inbox.reject(&f, &e.to_string()).unwrap();
                assert_eq!(fs::read(&dst).unwrap(), fixture(dst.file_name().unwrap().to_str().unwrap()));
                rejected.push(f.path.file_name().unwrap().to_string_lossy().to_string());
            }
            Err(e) => panic!("{e}"),
        }
    }
    loaded.sort();
    rejected.sort();
    assert_eq!(loaded, ["cmyk.jpg", "exif-rotated.jpg"]);
    assert_eq!(rejected, ["empty.jpg", "huge-20000.png", "not-an-image.jpg", "truncated.jpg"]);
    let log = fs::read_to_string(root.join(REJECTED).join(REJECTED_LOG)).unwrap();
    assert!(log.contains("truncated.jpg") && log.contains("truncated JPEG"), "{log}");
    let _ = fs::remove_dir_all(&root);
}

fn shipped_spec(name: &str) -> Preprocess {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name);
    Preprocess::from_spec(&fs::read_to_string(&p).unwrap(), name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The specs in `models/` parse to what their models were trained with; the MNIST CNN's is what the daemon used
/// before specs (`for_input_shape` with MNIST's mean and std).
#[test]
fn the_shipped_specs_parse() {
    let mnist = shipped_spec("mnist-cnn-0123.preprocess.json");
    assert_eq!(mnist, Preprocess::for_input_shape(&[1, 28, 28], MEAN, STD).unwrap());
    let nsfw = shipped_spec("open_nsfw.preprocess.json");
    assert_eq!((nsfw.input_shape(), nsfw.bgr, nsfw.resize, nsfw.background), ([224, 224, 3], true, (256, 256), 255));
    assert_eq!((nsfw.scale, nsfw.mean, nsfw.std), (1.0, [104.0, 117.0, 123.0], [1.0; 3]));
    let lite0 = shipped_spec("efficientnet-lite0.preprocess.json");
    assert_eq!((lite0.input_shape(), lite0.bgr, lite0.mean, lite0.std), ([3, 224, 224], false, [127.0; 3], [128.0; 3]));
}

/// NHWC, BGR and the centre crop put each pixel where the model expects it: a 4 × 4 picture whose pixel (y, x)
/// has R = 10y + x, G = 100, B = 200, through a spec with no resize and a 2 × 2 crop.
#[test]
fn a_spec_lays_out_crops_and_orders_channels() {
    let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([(10 * y + x) as u8, 100, 200]));
    let bytes = encode(&DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
    let spec = r#"{"format": "edgelearn-preprocess/1", "layout": "NHWC", "height": 2, "width": 2, "channels": "BGR",
        "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 2], "alpha": "white", "crop": "center",
        "resize": {"height": 4, "width": 4, "fit": "stretch", "filter": "triangle"}, "notes": "test"}"#;
    let pre = Preprocess::from_spec(spec, "t").unwrap();
    let x = pre.decode(&bytes, "t.png").unwrap();
    // Rows 1–2, columns 1–2 of the picture; per pixel B, G, R / 2.
    assert_eq!(x, [200.0, 100.0, 5.5, 200.0, 100.0, 6.0, 200.0, 100.0, 10.5, 200.0, 100.0, 11.0]);
    let planar = Preprocess { channels_last: false, bgr: false, ..pre };
    let x = planar.decode(&bytes, "t.png").unwrap();
    assert_eq!(x, [11.0, 12.0, 21.0, 22.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0]);
}

/// Every value the reader does not implement, and every out-of-range number, is a config error naming its
/// field; nothing is guessed.
#[test]
fn a_bad_spec_is_a_typed_error_naming_its_field() {
    let good =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/open_nsfw.preprocess.json")).unwrap();
    assert!(Preprocess::from_spec(&good, "ok").is_ok());
    for (from, to, field) in [
        ("\"edgelearn-preprocess/1\"", "\"edgelearn-preprocess/2\"", "format"),
        ("\"NHWC\"", "\"CHWN\"", "layout"),
        ("\"BGR\"", "\"YUV\"", "channels"),
        ("\"white\"", "\"grey\"", "alpha"),
        ("\"stretch\"", "\"letterbox\"", "resize.fit"),
        ("\"triangle\"", "\"lanczos\"", "resize.filter"),
        ("\"crop\": \"center\"", "\"crop\": \"random\"", "crop"),
        ("\"scale\": 1.0", "\"scale\": -1.0", "scale"),
        ("[104.0, 117.0, 123.0]", "[104.0, 117.0]", "mean"),
        ("\"std\": [1.0, 1.0, 1.0]", "\"std\": [1.0, 0.0, 1.0]", "std"),
        ("\"height\": 256", "\"height\": 100", "resize"),
        ("\"height\": 224", "\"height\": 0", "height/width"),
        ("\"format\"", "\"formt\"", "JSON"),
    ] {
        assert!(good.contains(from), "{from}");
        match Preprocess::from_spec(&good.replacen(from, to, 1), "bad.json") {
            Err(Error::Config(m)) => assert!(m.contains(field) && m.contains("bad.json"), "{to}: {m}"),
            other => panic!("{to}: expected a config error, got {other:?}"),
        }
    }
}

/// The spec embedded in a model file wins over the one beside it; with neither there is none.
#[test]
fn a_spec_is_discovered_in_the_file_then_beside_it() {
    let dir = scratch("spec");
    let model = dir.join("m.onnx");
    assert_eq!(sidecar_path(&model), dir.join("m.preprocess.json"));
    assert!(Preprocess::discover(&model, None).unwrap().is_none());
    let mnist =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-cnn-0123.preprocess.json"))
            .unwrap();
    let nsfw =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/open_nsfw.preprocess.json")).unwrap();
    fs::write(dir.join("m.preprocess.json"), &mnist).unwrap();
    let (pre, origin) = Preprocess::discover(&model, None).unwrap().unwrap();
    assert_eq!((pre.channels, origin.ends_with("m.preprocess.json")), (1, true));
    let (pre, origin) = Preprocess::discover(&model, Some(&nsfw)).unwrap().unwrap();
    assert_eq!((pre.channels_last, origin.contains(SPEC_METADATA_KEY)), (true, true));
    fs::write(dir.join("m.preprocess.json"), "{").unwrap();
    assert!(matches!(Preprocess::discover(&model, None), Err(Error::Config(_))));
    let _ = fs::remove_dir_all(&dir);
}
