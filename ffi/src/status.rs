//! Status codes, the thread-local last-error message and the panic boundary every fallible
//! entry point runs in.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use maskdcpt_core::Error;

use crate::args::{CEnum, c_enum};

/// Result of every fallible call. On anything but `MASKDCPT_STATUS_OK`,
/// `maskdcpt_last_error_message()` says what went wrong and no output was written.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_status {
    /// Success.
    Ok = 0,
    /// An argument is out of range or inconsistent (sizes, strides, enum values, options).
    InvalidArgument = 1,
    /// A required pointer argument is NULL.
    NullPointer = 2,
    /// A file could not be opened or read.
    Io = 3,
    /// The model bytes are not a valid or supported checkpoint.
    BadModel = 4,
    /// The request is valid but not available in this build, on this backend or for this model.
    Unsupported = 5,
    /// The run needs more memory than is available.
    OutOfMemory = 6,
    /// A GPU driver or runtime call failed.
    Device = 7,
    /// A bug in the library (a caught panic); the message has details.
    Internal = 8,
    /// A struct from a different version of the header was passed (`struct_size` mismatch).
    AbiMismatch = 9,
}

c_enum!(maskdcpt_status: Ok, InvalidArgument, NullPointer, Io, BadModel, Unsupported, OutOfMemory, Device, Internal, AbiMismatch);

impl maskdcpt_status {
    /// A short description, NUL-terminated.
    fn description(self) -> &'static str {
        match self {
            maskdcpt_status::Ok => "success\0",
            maskdcpt_status::InvalidArgument => "invalid argument\0",
            maskdcpt_status::NullPointer => "null pointer argument\0",
            maskdcpt_status::Io => "input/output error\0",
            maskdcpt_status::BadModel => "invalid or unsupported model\0",
            maskdcpt_status::Unsupported => "not supported\0",
            maskdcpt_status::OutOfMemory => "out of memory\0",
            maskdcpt_status::Device => "device error\0",
            maskdcpt_status::Internal => "internal error\0",
            maskdcpt_status::AbiMismatch => "header and library versions differ\0",
        }
    }
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    status: maskdcpt_status,
    message: String,
}

impl Failure {
    /// A failure with `status` and `message`.
    pub(crate) fn new(status: maskdcpt_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    /// `MASKDCPT_STATUS_NULL_POINTER` naming the argument.
    pub(crate) fn null(argument: &str) -> Self {
        Failure::new(maskdcpt_status::NullPointer, format!("`{argument}` is NULL"))
    }

    /// `MASKDCPT_STATUS_INVALID_ARGUMENT` with `message`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(maskdcpt_status::InvalidArgument, message)
    }

    /// `MASKDCPT_STATUS_UNSUPPORTED` with `message`.
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Failure::new(maskdcpt_status::Unsupported, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } => maskdcpt_status::Io,
            Error::CorruptWeights { .. }
            | Error::ForbiddenGlobal { .. }
            | Error::NoStateDict(_)
            | Error::UnknownArchitecture(_)
            | Error::MissingKey { .. }
            | Error::UnexpectedKey { .. }
            | Error::ShapeMismatch { .. }
            | Error::NonFinite { .. }
            | Error::UnsupportedDtype { .. } => maskdcpt_status::BadModel,
            Error::InvalidImage(_) | Error::InvalidArgument(_) => maskdcpt_status::InvalidArgument,
            Error::OutOfMemory { .. } => maskdcpt_status::OutOfMemory,
            Error::Unsupported(_) => maskdcpt_status::Unsupported,
            Error::Cuda(_) => maskdcpt_status::Device,
        };
        Failure::new(status, e.to_string())
    }
}

/// Result type of entry-point bodies.
pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    /// The message of the last failed call on this thread (empty after a success).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Stores `message` as this thread's last error (interior NULs become spaces).
fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// The text of a caught panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// Runs the body of a fallible entry point: clears the last error, runs `body` catching any
/// panic, and turns a failure into its status plus this thread's last-error message.
pub(crate) fn entry(body: impl FnOnce() -> FfiResult) -> maskdcpt_status {
    set_last_error("");
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return maskdcpt_status::Ok,
        Ok(Err(failure)) => failure,
        Err(payload) => Failure::new(
            maskdcpt_status::Internal,
            format!("internal error (a bug in libmaskdcpt, please report it): {}", panic_message(&*payload)),
        ),
    };
    set_last_error(&failure.message);
    failure.status
}

/// Runs the body of an infallible entry point, returning `fallback` if it panics.
pub(crate) fn guarded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The message of the last failed call made on this thread, or "" if the last call succeeded.
/// Valid until the next libmaskdcpt call on this thread; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn maskdcpt_last_error_message() -> *const c_char {
    guarded(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// A static description of `status` (any value; unknown codes give "unknown status").
/// Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn maskdcpt_status_string(status: u32) -> *const c_char {
    guarded(c"unknown status".as_ptr(), || {
        let text = maskdcpt_status::from_code(status).map_or("unknown status\0", maskdcpt_status::description);
        text.as_ptr().cast()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_distinct_code_and_description() {
        for (i, &status) in maskdcpt_status::ALL.iter().enumerate() {
            assert_eq!(status as u32, i as u32);
            assert_eq!(maskdcpt_status::from_code(i as u32), Some(status));
            assert!(status.description().ends_with('\0'));
        }
        assert_eq!(maskdcpt_status::from_code(maskdcpt_status::ALL.len() as u32), None);
    }

    #[test]
    fn a_panic_becomes_an_internal_status_with_its_message() {
        let status = entry(|| panic!("boom"));
        assert_eq!(status, maskdcpt_status::Internal);
        let message = LAST_ERROR.with(|e| e.borrow().to_string_lossy().into_owned());
        assert!(message.contains("boom"), "{message}");
        assert_eq!(entry(|| Ok(())), maskdcpt_status::Ok);
        assert!(LAST_ERROR.with(|e| e.borrow().is_empty()));
    }
}
