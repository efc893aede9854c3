//! Writes the `seed-*` files of the fuzz targets added by issue 32 from real inputs:
//!
//! - `fleet_model`: fleet models the merger would publish (`FleetModel::from_merge` over the fleet fixture's
//!   updates, framed by `encode_model`) in each Fisher format, with and without SLDA statistics;
//! - `photo_decode`: MNIST test digits (the first of each label in `t10k`) written as PNG and JPEG by the `image`
//!   crate the inbox decodes with: grey, RGB, RGBA, 16-bit, and at twice the model's size (the resize path);
//! - `profile_parse`: is filled by `fuzz/seeds/seeds.sh` (copies of `boards/*.toml`), not here.
//!
//! Run through `bash fuzz/seeds/seeds.sh` (builds it with the fuzz build's flags).
//!
//! Usage: `write_seeds MNIST_DIR CORPUS_ROOT`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use firmware::data::idx::{read_idx, resolve_idx};
use firmware::fisher::FisherFormat;
use firmware::fleet::{FleetModel, FleetUpdate, encode_model, fixture, merge_updates};
use image::{DynamicImage, ImageFormat};

fn update(device: &str, generation: u64, classes: &[&str], seed: f32, format: FisherFormat) -> FleetUpdate {
    fixture::update("lab", "base-1", device, generation, classes, seed, format).expect("fixture update")
}

fn model(version: u64, updates: &[FleetUpdate]) -> Vec<u8> {
    let m = FleetModel::from_merge("lab", version, &merge_updates(updates).expect("merge"));
    encode_model(&m, 1 << 20).expect("encode model")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
    println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
}

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode image");
    out.into_inner()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mnist, root] = &args[..] else {
        eprintln!("usage: write_seeds MNIST_DIR CORPUS_ROOT");
        std::process::exit(2);
    };
    let root = PathBuf::from(root);

    // Fleet models.
    let dir = root.join("fleet_model");
    let (a, b) = (FisherFormat::F32, FisherFormat::F16);
    write(
        &dir,
        "seed-two-boards-f32",
        &model(3, &[update("a", 1, &["4", "5"], 0.1, a), update("b", 2, &["5", "6"], 0.7, a)]),
    );
    write(
        &dir,
        "seed-two-boards-f16",
        &model(2, &[update("a", 1, &["4", "5"], 0.1, b), update("c", 5, &["7"], -0.3, b)]),
    );
    let log8 = FisherFormat::Log8;
    write(&dir, "seed-one-board-log8", &model(1, &[update("a", 1, &["4", "5"], 0.1, log8)]));
    let mut plain = [update("a", 1, &["4", "5"], 0.1, a), update("b", 1, &["4", "5"], 0.2, a)];
    for u in &mut plain {
        u.slda = None;
    }
    write(&dir, "seed-no-slda", &model(4, &plain));
    write(
        &dir,
        "seed-without-board-a",
        &model(7, &[update("b", 2, &["5", "6"], 0.7, a), update("c", 3, &["8", "9"], 1.5, a)]),
    );

    // Photos: the first test image of each digit.
    let images = read_idx(&resolve_idx(&Path::new(mnist).join("t10k-images-idx3-ubyte")).expect("MNIST test images"))
        .expect("MNIST test images");
    let labels = read_idx(&resolve_idx(&Path::new(mnist).join("t10k-labels-idx1-ubyte")).expect("MNIST test labels"))
        .expect("MNIST test labels");
    let dir = root.join("photo_decode");
    for digit in 0..10u8 {
        let i = (0..labels.items()).find(|&i| labels.item(i) == Some(&[digit][..])).expect("every digit occurs");
        let px = images.item(i).expect("image").to_vec();
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_raw(28, 28, px).expect("28×28"));
        let name = |what: &str| format!("seed-mnist-{digit}-{what}");
        write(&dir, &name("grey.png"), &encoded(&grey, ImageFormat::Png));
        match digit {
            0 => write(&dir, &name("grey.jpg"), &encoded(&grey, ImageFormat::Jpeg)),
            1 => write(&dir, &name("rgb.png"), &encoded(&DynamicImage::ImageRgb8(grey.to_rgb8()), ImageFormat::Png)),
            2 => write(&dir, &name("rgb.jpg"), &encoded(&DynamicImage::ImageRgb8(grey.to_rgb8()), ImageFormat::Jpeg)),
            3 => write(&dir, &name("rgba.png"), &encoded(&DynamicImage::ImageRgba8(grey.to_rgba8()), ImageFormat::Png)),
            4 => write(
                &dir,
                &name("grey16.png"),
                &encoded(&DynamicImage::ImageLuma16(grey.to_luma16()), ImageFormat::Png),
            ),
            5 => {
                let big = grey.resize_exact(56, 56, image::imageops::FilterType::Triangle);
                write(&dir, &name("56x56.png"), &encoded(&big, ImageFormat::Png));
                write(&dir, &name("56x56.jpg"), &encoded(&big, ImageFormat::Jpeg));
            }
            _ => {}
        }
    }
}
