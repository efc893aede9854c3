//! Which engine runs a frozen prefix: tract (always built in, the default) or onnxruntime (the `onnxruntime`
//! feature, the crate `ort` loading onnxruntime's shared library at run time).
//!
//! tract plans every prefix and stays the reference: it checks the graph, finds the feature shape and is what
//! the board runs unless told otherwise. With [`Engine::OnnxRuntime`] the same prefix (the file's own nodes up to
//! the cut, [`crate::PrefixGraph`]) is also handed to onnxruntime, and the prefix's runs go there: one session per
//! compute thread ([`edgelearn_core::threads`]), each single-threaded, fed the same fixed-size chunks as tract's
//! plan, so the features do not depend on the thread count (tested). On EfficientNet-Lite0 tract is ~3× slower
//! than onnxruntime (docs/benchmarks.md, issue 31): depthwise and 1×1 convolution kernels.
//!
//! The library comes from the path in `ORT_DYLIB_PATH` (the onnxruntime wheel's
//! `onnxruntime/capi/libonnxruntime.so.*`, or NVIDIA's Jetson build); nothing is downloaded at build time. Built
//! without the feature, asking for onnxruntime is a typed error ([`Error::Config`]), the stand-in of burn's and
//! candle's switched-off backends.

use std::str::FromStr;

use edgelearn_core::error::{Error, Result};

/// The engine that runs a frozen prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract (pure Rust, always available).
    #[default]
    Tract,
    /// onnxruntime through `ort` (feature `onnxruntime`; the library from `ORT_DYLIB_PATH`).
    OnnxRuntime,
}

impl Engine {
    /// Whether this build can run the engine.
    pub fn available(self) -> bool {
        match self {
            Engine::Tract => true,
            Engine::OnnxRuntime => cfg!(feature = "onnxruntime"),
        }
    }

    /// The engine's name (`tract`, `onnxruntime`), as [`Engine::from_str`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::OnnxRuntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tract" => Ok(Engine::Tract),
            "onnxruntime" | "ort" => Ok(Engine::OnnxRuntime),
            other => Err(Error::Config(format!("unknown prefix engine '{other}' (tract or onnxruntime)"))),
        }
    }
}

#[cfg(feature = "onnxruntime")]
pub(crate) use with_ort::OrtPrefix;
#[cfg(not(feature = "onnxruntime"))]
pub(crate) use without_ort::OrtPrefix;

#[cfg(feature = "onnxruntime")]
mod with_ort {
    use std::sync::{Mutex, OnceLock};

    use ort::environment::Environment;
    use ort::session::Session;
    use ort::session::builder::GraphOptimizationLevel;
    use ort::value::TensorRef;

    use super::{Error, Result};

    fn ort_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
        move |e| Error::Tract(format!("onnxruntime, {what}: {e}"))
    }

    /// The process's onnxruntime environment, made once from the library at `ORT_DYLIB_PATH`.
    fn environment() -> Result<&'static Environment> {
        static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
        let made = ENV.get_or_init(|| {
            let path = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).ok_or_else(|| {
                "ORT_DYLIB_PATH is not set: point it at onnxruntime's shared library (libonnxruntime.so.*)".to_string()
            })?;
            // ort asks the library for its C API version and panics when the library is older: guarded.
            let built = std::panic::catch_unwind(|| {
                ort::init_from(&path)
                    .map_err(|e| format!("loading {}: {e}", path.to_string_lossy()))?
                    .with_name("edgelearn")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| format!("onnxruntime environment: {e}"))
            });
            built.unwrap_or_else(|_| Err(format!("{}: not a usable onnxruntime library", path.to_string_lossy())))
        });
        made.as_ref().map_err(|e| Error::Config(e.clone()))
    }

    /// A frozen prefix in onnxruntime: `sessions` single-threaded sessions of the same graph.
    pub(crate) struct OrtPrefix {
        sessions: Vec<Mutex<Session>>,
        input: String,
    }

    impl OrtPrefix {
        /// Sessions for the ONNX bytes `model` (input `input`, the cut as its only output), all graph
        /// optimisations on, one intra-op thread each.
        pub(crate) fn new(model: &[u8], input: &str, sessions: usize) -> Result<Self> {
            let env = environment()?;
            let sessions = (0..sessions.max(1))
                .map(|_| {
                    let mut b = Session::builder(env)
                        .map_err(ort_err("session builder"))?
                        .with_optimization_level(GraphOptimizationLevel::Level3)
                        .map_err(ort_err("optimisation level"))?
                        .with_intra_threads(1)
                        .map_err(ort_err("threads"))?;
                    b.commit_from_memory(model).map(Mutex::new).map_err(ort_err("loading the prefix"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Self { sessions, input: input.to_string() })
        }

        /// One run on `data` of `shape`: the flat output and its shape.
        pub(crate) fn run(&self, shape: &[usize], data: &[f32]) -> Result<(Vec<f32>, Vec<usize>)> {
            // A free session if there is one (one per compute thread), else wait for the first.
            let mut guard = self.sessions.iter().find_map(|s| s.try_lock().ok());
            if guard.is_none() {
                guard = self.sessions.first().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
            }
            let session = guard.as_deref_mut().ok_or_else(|| Error::Config("no onnxruntime session".into()))?;
            let tensor = TensorRef::from_array_view((shape.to_vec(), data)).map_err(ort_err("input tensor"))?;
            let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(ort_err("running"))?;
            let out = &outputs[0];
            let (shape, values) = out.try_extract_tensor::<f32>().map_err(ort_err("output"))?;
            let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
            Ok((values.to_vec(), shape))
        }
    }
}

#[cfg(not(feature = "onnxruntime"))]
mod without_ort {
    use super::{Error, Result};

    /// Stand-in when the `onnxruntime` feature is off: never built.
    pub(crate) struct OrtPrefix {
        _never: std::convert::Infallible,
    }

    impl OrtPrefix {
        pub(crate) fn new(_model: &[u8], _input: &str, _sessions: usize) -> Result<Self> {
            Err(Error::Config("this build has no onnxruntime engine (build with --features onnxruntime)".into()))
        }

        pub(crate) fn run(&self, _shape: &[usize], _data: &[f32]) -> Result<(Vec<f32>, Vec<usize>)> {
            match self._never {}
        }
    }
}
