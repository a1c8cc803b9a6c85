//! `maskdcpt_model`: a loaded, validated checkpoint. Immutable, so one model may be used from
//! any number of threads at once.

use std::ffi::{CStr, CString, c_char};

use maskdcpt_core::model::Model;
use maskdcpt_core::spec::{Architecture, Family, restormer};
use maskdcpt_core::weights::LoadOptions;

use crate::args::{Out, arg, c_str, free_and_null, to_path};
use crate::status::{Failure, FfiResult, entry, guarded, maskdcpt_status};

/// A loaded model (opaque). Thread-safe: it never changes after loading.
pub struct maskdcpt_model {
    pub(crate) model: Model,
    /// The head's class names as C strings (empty without a head), alive as long as the model.
    class_names: Vec<CString>,
}

/// Architecture family of a model.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_family {
    /// MaskDCPT `NAFNetBaseline` (reflect padding to a multiple of 16, LayerNorm eps 1e-5).
    Maskdcpt = 0,
    /// Upstream megvii NAFNet (zero padding to a multiple of 2^levels, LayerNorm eps 1e-6).
    Nafnet = 1,
    /// MaskDCPT `Restormer` (reflect padding to a multiple of 8; the CPU engine runs it).
    Restormer = 2,
    /// MaskDCPT `PromptIR` (reflect padding to a multiple of 8; the CPU engine runs it).
    Promptir = 3,
    /// MaskDCPT `SwinIR` (reflect padding to a multiple of its window, 8 as released; the CPU
    /// engine runs it; `width` is its token channels, `levels` 0).
    Swinir = 4,
}

/// What a model is, filled by `maskdcpt_model_get_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct maskdcpt_model_info {
    /// Architecture family.
    pub family: maskdcpt_family,
    /// Channels at full resolution.
    pub width: usize,
    /// Down-sampling levels.
    pub levels: usize,
    /// Blocks (NAFBlocks, or a Restormer's transformer blocks) in all encoders, the
    /// bottleneck, all decoders and the refinement.
    pub blocks: usize,
    /// Number of parameters.
    pub param_count: u64,
    /// Images are padded internally to a multiple of this many pixels.
    pub size_multiple: usize,
    /// Whether the model carries the degradation-classification head (`maskdcpt_classify`).
    pub has_classifier: bool,
    /// Number of degradation classes (0 without the head).
    pub class_count: usize,
}

/// The message for classification calls on a model without the head.
pub(crate) const NO_CLASSIFIER: &str = "this model has no degradation-classification head (the embedded default \
     model and files written by `trainer export --with-classifier` have one)";

/// Load options for an optional `param_key` argument.
///
/// # Safety
/// `param_key` is NULL or a NUL-terminated string.
unsafe fn load_options(param_key: *const c_char) -> FfiResult<LoadOptions> {
    if param_key.is_null() {
        return Ok(LoadOptions::default());
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    let key = unsafe { CStr::from_ptr(param_key) }
        .to_str()
        .map_err(|_| Failure::invalid("`param_key` is not valid UTF-8"))?;
    Ok(LoadOptions { param_key: Some(key.to_owned()) })
}

/// Hands a new model to the caller through `out`.
///
/// # Safety
/// `out` was checked by [`Out::new`] from a valid pointer.
unsafe fn give(out: Out<*mut maskdcpt_model>, model: Model) {
    let names = model.head().map(|h| h.class_names.clone()).unwrap_or_default();
    // Names come from our own metadata split at commas; an interior NUL would be a corrupt file.
    let class_names = names.into_iter().map(|n| CString::new(n.replace('\0', " ")).unwrap_or_default()).collect();
    // SAFETY: per the contract.
    unsafe { out.write(Box::into_raw(Box::new(maskdcpt_model { model, class_names }))) }
}

/// Loads and validates a checkpoint file (`.pth` or `.safetensors`; architecture inferred from
/// the keys). `param_key` picks the entry of a BasicSR `.pth` (NULL: `params_ema`, then
/// `params`; for a SwinIR `params`, then `params_ema`, as the fork's 5-task test configs read
/// them). On success `*out` receives a model to free with `maskdcpt_model_free`.
///
/// # Safety
/// `path` is a NUL-terminated string, `param_key` NULL or one, `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_load_file(
    path: *const c_char,
    param_key: *const c_char,
    out: *mut *mut maskdcpt_model,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (all blocks): the pointers are valid per the contract.
        let path = to_path(unsafe { c_str(path, "path") }?)?;
        let out = Out::new(out, "out")?;
        let options = unsafe { load_options(param_key) }?;
        let model = Model::load(&path, &options)?;
        unsafe { give(out, model) };
        Ok(())
    })
}

/// Loads and validates a checkpoint held in memory (`len` bytes at `data`; the bytes are copied,
/// so they may be freed afterwards). `param_key` as in `maskdcpt_model_load_file`.
///
/// # Safety
/// `data` points to `len` readable bytes, `param_key` is NULL or a NUL-terminated string,
/// `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_load_memory(
    data: *const u8,
    len: usize,
    param_key: *const c_char,
    out: *mut *mut maskdcpt_model,
) -> maskdcpt_status {
    entry(|| {
        if data.is_null() {
            return Err(Failure::null("data"));
        }
        if len == 0 {
            return Err(Failure::invalid("`len` is 0: the model buffer is empty"));
        }
        if isize::try_from(len).is_err() {
            return Err(Failure::invalid(format!("`len` {len} is too large")));
        }
        let out = Out::new(out, "out")?;
        // SAFETY (all blocks): the pointers are valid per the contract; `len` was checked.
        let options = unsafe { load_options(param_key) }?;
        let model = Model::from_bytes(unsafe { std::slice::from_raw_parts(data, len) }, &options)?;
        unsafe { give(out, model) };
        Ok(())
    })
}

/// Loads the model embedded in the library: a small NAFNet trained with this project's
/// trainer on the 19 synthetic degradation classes (see docs/model-card.md for its data and
/// measured quality). On success `*out` receives a model to free with `maskdcpt_model_free`.
///
/// # Safety
/// `out` is a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_load_default(out: *mut *mut maskdcpt_model) -> maskdcpt_status {
    entry(|| {
        let out = Out::new(out, "out")?;
        let model = Model::load_default()?;
        // SAFETY: `out` was checked above.
        unsafe { give(out, model) };
        Ok(())
    })
}

/// Writes what `model` is to `*out`.
///
/// # Safety
/// `model` is a live model, `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_get_info(
    model: *const maskdcpt_model,
    out: *mut maskdcpt_model_info,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (both blocks): the pointers are valid per the contract.
        let model = unsafe { arg(model, "model") }?;
        let architecture = model.model.architecture();
        let out = Out::new(out, "out")?;
        let (family, width, levels, blocks) = match architecture {
            Architecture::Nafnet(spec) => (
                match spec.family {
                    Family::MaskDcpt => maskdcpt_family::Maskdcpt,
                    Family::Nafnet => maskdcpt_family::Nafnet,
                },
                spec.width,
                spec.levels(),
                spec.enc_blocks.iter().chain(&spec.dec_blocks).sum::<usize>() + spec.middle_blocks,
            ),
            Architecture::Restormer(spec) => {
                let stages = spec.encoder_stages().into_iter().chain(spec.decoder_stages());
                let family =
                    if spec.prompts.is_some() { maskdcpt_family::Promptir } else { maskdcpt_family::Restormer };
                // PromptIR's prompt stages hold one block each.
                let prompt_blocks = spec.prompts.map_or(0, |p| p.len());
                (family, spec.dim, restormer::LEVELS - 1, stages.map(|s| s.blocks).sum::<usize>() + prompt_blocks)
            }
            Architecture::Swinir(spec) => (maskdcpt_family::Swinir, spec.embed_dim, 0, spec.depths.iter().sum()),
        };
        let info = maskdcpt_model_info {
            family,
            width,
            levels,
            blocks,
            param_count: architecture.param_count() as u64,
            size_multiple: architecture.size_multiple(),
            has_classifier: model.model.head().is_some(),
            class_count: model.class_names.len(),
        };
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Writes the name of degradation class `index` (e.g. `"low_light"`; valid until the model is
/// freed) to `*out`. Fails with `MASKDCPT_STATUS_UNSUPPORTED` when the model has no
/// classification head and `MASKDCPT_STATUS_INVALID_ARGUMENT` when `index` ≥ `class_count`.
///
/// # Safety
/// `model` is a live model, `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_class_name(
    model: *const maskdcpt_model,
    index: usize,
    out: *mut *const c_char,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY: the pointer is valid per the contract.
        let model = unsafe { arg(model, "model") }?;
        let out = Out::new(out, "out")?;
        if model.class_names.is_empty() {
            return Err(Failure::unsupported(format!("class {index}: {NO_CLASSIFIER}")));
        }
        let name = model.class_names.get(index).ok_or_else(|| {
            Failure::invalid(format!("class {index} does not exist: the model has {} classes", model.class_names.len()))
        })?;
        // SAFETY: `out` was checked above.
        unsafe { out.write(name.as_ptr()) };
        Ok(())
    })
}

/// Frees `*model` and sets `*model` to NULL. NULL or `*model == NULL` do nothing, so calling
/// it twice through the same pointer is safe. Engines built from the model stay usable.
///
/// # Safety
/// `model` is NULL or points to NULL or to a model not yet freed, and no other thread uses it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_model_free(model: *mut *mut maskdcpt_model) {
    // SAFETY: per the contract.
    guarded((), || unsafe { free_and_null(model) })
}
