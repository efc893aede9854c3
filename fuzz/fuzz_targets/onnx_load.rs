//! Fuzz the ONNX loader: any bytes → `OnnxModel::from_bytes` and the split into a frozen prefix (tract) and
//! native trainable layers must return a value or a typed error, never panic. A model that loads must run a
//! small batch (or refuse it with an error).
//!
//! The loader calls tract behind `catch_unwind` (a panic inside tract becomes `Error::Tract`), but libfuzzer-sys
//! installs a panic hook that aborts on *every* panic, caught or not. `init` replaces it with one that only
//! reports the panic: a panic the loader converts is not a crash, and one that escapes still is (libfuzzer-sys
//! aborts when a panic unwinds out of the target, and the input is saved as a crash artifact).
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};

use edgelearn_onnx::{Cut, OnnxModel};
use libfuzzer_sys::fuzz_target;

/// Panics reported so far (the first few are printed; tract's message says where it panicked).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fuzz_target!(
    init: std::panic::set_hook(Box::new(|info| {
        if PANICS.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("onnx_load: panic (a crash only if the run aborts next): {info}");
        }
    })),
    |data: &[u8]| {
        let Ok(model) = OnnxModel::from_bytes(data) else { return };
        // Keep each run cheap: inputs beyond 64 Ki values per sample are legal but slow to push through.
        if model.input_shape().iter().product::<usize>() > 1 << 16 {
            return;
        }
        for cut in [Cut::LastTrainable(1), Cut::LastTrainable(2), Cut::Input] {
            if let Ok(mut dm) = model.split(&cut) {
                let x = ndarray::Array2::<f32>::zeros((2, dm.input_len()));
                let _ = dm.forward_all(&x.view());
                let _ = dm.to_onnx_bytes();
            }
        }
    }
);
