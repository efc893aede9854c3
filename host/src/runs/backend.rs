//! Run-time choice of the compute backend for host commands (`--backend auto|cpu|cuda`, `--method
//! gpm+became@cpu|cuda`).
//!
//! The product's CPU path is the native learner ([`firmware::method::Became`]); the backend path
//! ([`BackendBecame`], the same GPM + BECAME update with parameters, bases and Fisher resident on a
//! [`firmware::backend::Backend`]) is what runs on a GPU. [`became_on`] builds the latter for an explicit backend;
//! [`for_simulation`] maps `simulate --backend` onto a method: `cpu` keeps the native learner, `cuda` runs
//! GPM + BECAME on the GPU (a typed error when CUDA is not compiled in or not usable here), and `auto` takes the GPU
//! when [`firmware::backend::select`] finds one and otherwise stays on the CPU with a log line.

use firmware::backend::{BackendBecame, BackendKind, Selected, select};
use firmware::method::Method;

use crate::error::Result;
use crate::runs::presets::Preset;

/// The suffix that names a backend in a method name: `gpm+became@cuda`.
pub const BACKEND_SEPARATOR: char = '@';

/// GPM + BECAME with the preset's settings, run by [`BackendBecame`] on the backend `kind` selects.
///
/// `kind = cuda` fails with [`firmware::Error::BackendUnavailable`] when CUDA is not compiled in (feature `cuda`)
/// or the machine has no usable GPU; `auto` falls back to the CPU backend. The model must be the bias-free MLP the
/// backend update supports (checked when the first task starts).
pub fn became_on(kind: BackendKind, preset: &Preset) -> Result<Box<dyn Method>> {
    let (train, gpm) = (preset.train.clone(), preset.gpm_config());
    Ok(match select(kind)? {
        Selected::Cpu(b) => Box::new(BackendBecame::new(b, train, gpm)),
        Selected::Cuda(b) => Box::new(BackendBecame::new(b, train, gpm)),
    })
}

/// The method `simulate --backend kind` runs for `method`: `None` keeps the native (CPU) method the registry
/// builds; `Some` is GPM + BECAME on the GPU.
///
/// Only `gpm+became` has a backend path; with `kind = cuda` any other method is refused (typed error) rather than
/// silently run on the CPU. `auto` without a usable GPU logs the fallback and returns `None`.
pub fn for_simulation(kind: BackendKind, method: &str, preset: &Preset) -> Result<Option<Box<dyn Method>>> {
    if kind == BackendKind::Cpu {
        return Ok(None);
    }
    if method != "gpm+became" {
        if kind == BackendKind::Cuda {
            return Err(crate::error::Error::Invalid(format!(
                "--backend cuda: method '{method}' has no CUDA path (only gpm+became does); use --backend auto or cpu"
            )));
        }
        return Ok(None);
    }
    match select(kind)? {
        Selected::Cuda(b) => {
            tracing::info!(method, backend = "cuda", "running on the GPU");
            Ok(Some(Box::new(BackendBecame::new(b, preset.train.clone(), preset.gpm_config()))))
        }
        Selected::Cpu(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_keeps_the_native_method_and_cuda_is_typed_when_absent() {
        let preset = Preset::named("split-mnist", None).unwrap();
        assert!(for_simulation(BackendKind::Cpu, "gpm+became", &preset).unwrap().is_none());
        assert!(for_simulation(BackendKind::Auto, "finetune", &preset).unwrap().is_none());
        assert!(for_simulation(BackendKind::Cuda, "finetune", &preset).is_err());
        let on_cpu = became_on(BackendKind::Cpu, &preset).unwrap();
        assert_eq!(on_cpu.name(), "gpm+became@cpu");
        if firmware::backend::cuda_status().is_err() {
            // No CUDA here (not compiled in, or no driver/GPU): auto is the native CPU path, cuda a typed error.
            assert!(for_simulation(BackendKind::Auto, "gpm+became", &preset).unwrap().is_none());
            let e = became_on(BackendKind::Cuda, &preset).err().unwrap();
            assert!(matches!(e, crate::error::Error::Firmware(firmware::Error::BackendUnavailable { .. })), "{e}");
        }
    }
}
