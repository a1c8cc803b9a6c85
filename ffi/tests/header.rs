//! The committed header matches this crate: version macros equal Cargo.toml's version and the
//! library's run-time answers (the header's drift against cbindgen is checked by
//! scripts/test.sh).

use std::ffi::CStr;
use std::path::Path;

use maskdcpt::{maskdcpt_abi_version, maskdcpt_version};

/// The replacement text of `#define NAME ...` in the committed header.
fn define(name: &str) -> String {
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/maskdcpt.h")).unwrap();
    let prefix = format!("#define {name} ");
    let line = header.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {name}"));
    line.trim().to_owned()
}

#[test]
fn version_macros_equal_the_crate_version() {
    assert_eq!(define("MASKDCPT_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(define("MASKDCPT_VERSION_MINOR"), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(define("MASKDCPT_VERSION_PATCH"), env!("CARGO_PKG_VERSION_PATCH"));
    assert_eq!(define("MASKDCPT_VERSION_STRING"), format!("\"{}\"", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        define("MASKDCPT_VERSION_NUMBER"),
        "((MASKDCPT_VERSION_MAJOR << 16) | (MASKDCPT_VERSION_MINOR << 8) | MASKDCPT_VERSION_PATCH)"
    );
    let version = unsafe { CStr::from_ptr(maskdcpt_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn abi_macro_equals_the_library_abi() {
    assert_eq!(define("MASKDCPT_ABI_VERSION"), maskdcpt_abi_version().to_string());
}
