//! Checked conversions of what C callers pass: pointers (NULL becomes
//! `MASKDCPT_STATUS_NULL_POINTER` naming the argument), strings and enum values (an unknown
//! value becomes `MASKDCPT_STATUS_INVALID_ARGUMENT`); handles are freed through pointer-nulling
//! helpers.

use std::ffi::{CStr, c_char};
use std::path::PathBuf;
use std::ptr::NonNull;

use crate::status::{Failure, FfiResult};

/// A C enum whose values arrive as plain `uint32_t` (any value is possible, so they are
/// checked before becoming the Rust enum).
pub(crate) trait CEnum: Copy + 'static {
    /// The C type name, for messages.
    const NAME: &'static str;
    /// Every variant.
    const ALL: &'static [Self];
    /// The variant's value.
    fn code(self) -> u32;

    /// The variant with value `code`, if any.
    fn from_code(code: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.code() == code)
    }
}

/// Implements [`CEnum`] for a `#[repr(u32)]` enum with the listed variants.
macro_rules! c_enum {
    ($name:ident: $($variant:ident),+ $(,)?) => {
        impl $crate::args::CEnum for $name {
            const NAME: &'static str = stringify!($name);
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn code(self) -> u32 {
                self as u32
            }
        }
    };
}
pub(crate) use c_enum;

/// The enum variant for `value`, which the caller passed as `name`.
pub(crate) fn enum_arg<E: CEnum>(value: u32, name: &str) -> FfiResult<E> {
    E::from_code(value).ok_or_else(|| Failure::invalid(format!("`{name}` is {value}, not a {} value", E::NAME)))
}

/// The value behind `p`, which the caller passed as argument `name`.
///
/// # Safety
/// `p` is NULL or points to a valid `T` that outlives the call.
pub(crate) unsafe fn arg<'a, T>(p: *const T, name: &str) -> FfiResult<&'a T> {
    // SAFETY: non-NULL pointers are valid per the function contract.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// The NUL-terminated string behind `p`, which the caller passed as argument `name`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a CStr> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the function contract.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// An output argument, checked for NULL up front and written only once the call succeeds.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Checks the output pointer `p`, which the caller passed as argument `name`.
    pub(crate) fn new(p: *mut T, name: &str) -> FfiResult<Self> {
        NonNull::new(p).map(Out).ok_or_else(|| Failure::null(name))
    }

    /// Stores `value` without reading or dropping what was there.
    ///
    /// # Safety
    /// The pointer given to [`Out::new`] is valid for writing a `T`.
    pub(crate) unsafe fn write(self, value: T) {
        // SAFETY: valid for writes per the function contract.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// Frees the boxed handle `*handle` and sets `*handle` to NULL; NULL or `*handle == NULL` do
/// nothing, so a second call through the same pointer is harmless.
///
/// # Safety
/// `handle` is NULL or points to NULL or to a pointer from `Box::into_raw` not yet freed.
pub(crate) unsafe fn free_and_null<T>(handle: *mut *mut T) {
    // SAFETY: per the function contract.
    let Some(slot) = (unsafe { handle.as_mut() }) else { return };
    let raw = std::mem::replace(slot, std::ptr::null_mut());
    if !raw.is_null() {
        // SAFETY: `raw` came from `Box::into_raw` and is freed once (the slot is now NULL).
        drop(unsafe { Box::from_raw(raw) });
    }
}

/// The file-system path spelled by `path`'s bytes.
pub(crate) fn to_path(path: &CStr) -> FfiResult<PathBuf> {
    #[cfg(unix)]
    let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path.to_bytes()));
    #[cfg(not(unix))]
    let path = PathBuf::from(path.to_str().map_err(|_| Failure::invalid("`path` is not valid UTF-8"))?);
    Ok(path)
}
