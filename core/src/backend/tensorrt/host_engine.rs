//! The TensorRT backend behind the [`Engine`] trait: the host pads and crops by the family
//! rule (like the CPU engine), the shim copies the padded planar image to the GPU, runs the
//! engine on its own stream and copies the result back. One engine serves the configured
//! shape range, or (without one) an engine is built per padded size on its first image and
//! kept; with a cache folder, later processes load it instead of building. Never run here:
//! no host this project is tested on has TensorRT.

use std::sync::Mutex;

use super::engine::{BuildOptions, TrtRuntime, build_serialized, compute_capability, library_version};
use super::network::TrtPrecision;
use super::profile::{Profile, ShapeRange, Size};
use crate::backend::{Engine, EngineOptions, MemoryEstimate, TensorRtOptions};
use crate::error::{Error, Result};
use crate::image::{Image, check_size, from_planar_cropped, round_up, to_padded_planar};
use crate::model::Model;
use crate::spec::PadMode;

/// Runtimes by the padded size range they accept.
struct Runtimes {
    entries: Vec<(Profile, TrtRuntime)>,
}

/// A TensorRT engine restoring host images.
pub struct TensorRtEngine {
    model: Model,
    build: TensorRtOptions,
    size_multiple: usize,
    pad_mode: PadMode,
    runtimes: Mutex<Runtimes>,
}

impl TensorRtEngine {
    /// Checks that TensorRT and a CUDA device are present and the options make sense and, when
    /// a shape range is given, builds (or loads from the cache) its engine now.
    pub fn new(model: &Model, options: &EngineOptions, trt: &TensorRtOptions) -> Result<Self> {
        model.nafnet("the TensorRT backend")?;
        library_version()?;
        compute_capability()?;
        if options.tiling.is_some() {
            return Err(Error::Unsupported("tiling runs on the CPU backend only; TensorRT takes whole images".into()));
        }
        let engine = TensorRtEngine {
            model: model.clone(),
            build: trt.clone(),
            size_multiple: model.architecture().size_multiple(),
            pad_mode: model.architecture().pad_mode(),
            runtimes: Mutex::new(Runtimes { entries: Vec::new() }),
        };
        if let Some(shapes) = trt.shapes {
            let built = engine.build(shapes)?;
            engine.runtimes.lock().unwrap_or_else(|e| e.into_inner()).entries.push(built);
        }
        Ok(engine)
    }

    fn build(&self, shapes: ShapeRange) -> Result<(Profile, TrtRuntime)> {
        let profile = Profile::new(&shapes, self.size_multiple)?;
        let options = BuildOptions {
            precision: if self.build.fp16 { TrtPrecision::F16 } else { TrtPrecision::F32 },
            shapes,
            workspace: self.build.workspace,
            cache_dir: self.build.cache_dir.clone(),
        };
        let serialized = build_serialized(&self.model, &options)?;
        Ok((profile, TrtRuntime::new(&serialized)?))
    }

    /// The runtime accepting a `padded` size: the engine's range, or (without one) the
    /// engine built (or loaded from the cache) for that size, building it now if needed.
    fn runtime_for<'r>(&self, runtimes: &'r mut Runtimes, padded: Size) -> Result<&'r mut TrtRuntime> {
        let multiple = self.size_multiple;
        let index = match runtimes.entries.iter().position(|(profile, _)| profile.accepts(padded, multiple)) {
            Some(index) => index,
            None if self.build.shapes.is_some() => {
                let (Profile { min, max, .. }, _) = &runtimes.entries[0];
                return Err(Error::InvalidImage(format!(
                    "a {}×{} padded image is outside the TensorRT engine's range {}×{} … {}×{} (H×W): \
                     build the engine with a larger range",
                    padded.height, padded.width, min.height, min.width, max.height, max.width
                )));
            }
            None => {
                let built = self.build(ShapeRange { min: padded, opt: padded, max: padded })?;
                runtimes.entries.push(built);
                runtimes.entries.len() - 1
            }
        };
        Ok(&mut runtimes.entries[index].1)
    }

    fn run(&self, planar: &[f32], height: usize, width: usize) -> Result<Vec<f32>> {
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = self.runtime_for(&mut runtimes, Size { height, width })?;
        let mut output = vec![0f32; planar.len()];
        runtime.run_host(height, width, planar, &mut output)?;
        Ok(output)
    }
}

impl Engine for TensorRtEngine {
    fn restore(&self, input: &Image) -> Result<Image> {
        input.check_finite()?;
        let (planar, h, w) = to_padded_planar(input, self.size_multiple, self.pad_mode);
        let output = self.run(&planar, h, w)?;
        Ok(from_planar_cropped(&output, h, w, input.width(), input.height()))
    }

    /// Builds (or loads) the TensorRT engine for the padded size when the engine has no fixed
    /// range; checks that the size is in the range when it has one.
    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        check_size(width, height)?;
        let padded = Size { height: round_up(height, self.size_multiple), width: round_up(width, self.size_multiple) };
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        self.runtime_for(&mut runtimes, padded).map(|_| ())
    }

    /// Host memory of one call (the padded input and output planes); GPU memory is TensorRT's.
    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate> {
        check_size(width, height)?;
        let padded = |n: usize| round_up(n, self.size_multiple);
        Ok(MemoryEstimate { weights: 0, activations: (2 * 3 * padded(width) * padded(height) * 4) as u64 })
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, EngineOptions, TensorRtOptions, build_engine};
    use crate::model::testing::{random_model, tiny_spec};

    /// Without TensorRT (every CI host) the engine is refused when it is built, naming the
    /// library, instead of failing on the first image.
    #[test]
    fn building_without_the_library_names_it() {
        if super::library_version().is_ok() {
            return; // a host with TensorRT
        }
        let options = EngineOptions { backend: Backend::TensorRt(TensorRtOptions::default()), ..Default::default() };
        let err = build_engine(&random_model(&tiny_spec(), 1), &options).err().expect("no TensorRT here").to_string();
        assert!(err.contains("TensorRT library not found"), "{err}");
    }
}
