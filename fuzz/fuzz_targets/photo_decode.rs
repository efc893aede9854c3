//! Fuzz the inbox's photo path: any bytes → `Preprocess::decode` (the `image` crate's PNG/JPEG decoders under the
//! inbox's limits, grey or RGB conversion, resize, normalisation) must give the model's input tensor or an
//! `Error::Image`, never panic, never allocate past the limits. A tensor has exactly the model's input length and
//! only finite values.
//!
//! The bytes go through the MNIST model's preprocessing (`[1, 28, 28]`, the shipped model's mean and std); inputs
//! of odd length also through an RGB model's (`[3, 32, 24]`), the conversion and resize the grey path skips, and a
//! Caffe-style spec's (NHWC, BGR, per-channel means, stretched to 40 × 36 then centre-cropped to 32 × 24, alpha
//! onto white).
#![no_main]

use std::sync::OnceLock;

use firmware::Error;
use firmware::inbox::Preprocess;
use libfuzzer_sys::fuzz_target;

fn pre() -> &'static [Preprocess; 3] {
    static PRE: OnceLock<[Preprocess; 3]> = OnceLock::new();
    PRE.get_or_init(|| {
        [
            Preprocess::for_input_shape(&[1, 28, 28], 0.1307, 0.3081).expect("MNIST input"),
            Preprocess::for_input_shape(&[3, 32, 24], 0.5, 0.25).expect("RGB input"),
            Preprocess {
                scale: 1.0,
                mean: [104.0, 117.0, 123.0],
                std: [1.0; 3],
                background: 255,
                resize: (40, 36),
                bgr: true,
                channels_last: true,
                ..Preprocess::for_input_shape(&[3, 32, 24], 0.0, 1.0).expect("RGB input")
            },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let pres = pre();
    let chosen = if data.len() % 2 == 1 { &pres[..] } else { &pres[..1] };
    for pre in chosen {
        match pre.decode(data, "fuzz") {
            Ok(x) => {
                assert_eq!(x.len(), pre.len());
                assert!(x.iter().all(|v| v.is_finite()));
            }
            Err(Error::Image { .. }) => {}
            Err(e) => panic!("not an image error: {e}"),
        }
    }
});
