//! Fixture: a module `counter` built for a future hotswap ABI (999), as a module built with
//! another SDK would be. The node must refuse it before running any of its code: not even its
//! ELF constructor, which aborts the process if the library is ever opened.

use core::ffi::c_void;
use hotswap_abi as abi;

unsafe extern "C" fn init(_: *const abi::HostApi, _: u64, _: *mut c_void, _: abi::WriteFn) -> u32 {
    std::process::abort() // must never run: the node checks the ABI version first
}
unsafe extern "C" fn poll(_: *mut abi::FutureObj, _: *mut c_void, _: abi::WriteFn) -> u32 {
    std::process::abort()
}
unsafe extern "C" fn drop_future(_: *mut abi::FutureObj, _: *mut c_void, _: abi::WriteFn) -> u32 {
    std::process::abort()
}

/// A descriptor that claims ABI 999.
#[no_mangle]
pub static HOTSWAP_MODULE_DESCRIPTOR: abi::ModuleDescriptor = abi::ModuleDescriptor {
    magic: abi::MAGIC,
    abi_version: 999,
    size: core::mem::size_of::<abi::ModuleDescriptor>() as u32,
    name: abi::Bytes::new(b"counter"),
    version: abi::Bytes::new(b"9"),
    build_id: abi::Bytes::new(b"future-build"),
    sdk_version: abi::Bytes::new(b"9.0.0"),
    codec: abi::Bytes::new(b"msgpack-named/1"),
    panic_unwind: 1,
    exports: core::ptr::null(),
    exports_len: 0,
    functions: core::ptr::null(),
    functions_len: 0,
    init,
    poll,
    drop_future,
    server: core::ptr::null(),
    describe: None,
};

#[cfg(not(test))]
extern "C" fn abort_if_opened() {
    std::process::abort() // must never run: the node reads the ABI version from the file
}

/// An ELF constructor: `dlopen` runs it before returning. (Not in `cargo test`'s harness
/// for this crate, which is an executable that would run it at start.)
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static ABORT_IF_OPENED: extern "C" fn() = abort_if_opened;
