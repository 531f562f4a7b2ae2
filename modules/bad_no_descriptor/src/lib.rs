//! Fixture: a valid shared library that is not a hotswap module (no descriptor).

/// Some exported function.
#[no_mangle]
pub extern "C" fn hello() -> u32 {
    42
}
