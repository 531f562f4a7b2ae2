//! The host API table of the node this copy of the SDK runs in: installed once, by the
//! module's `init` (or by the node for its own native processes), read by every call into
//! the node.

use std::sync::atomic::{AtomicPtr, Ordering};

use hotswap_abi as abi;

static HOST: AtomicPtr<abi::HostApi> = AtomicPtr::new(std::ptr::null_mut());

/// The node's host API table.
pub(crate) fn host() -> &'static abi::HostApi {
    let p = HOST.load(Ordering::Acquire);
    assert!(
        !p.is_null(),
        "hotswap: no host API installed (module code must run inside a node)"
    );
    // SAFETY: the pointer was installed by `init`/`set_host` from a `&'static HostApi` that
    // lives in the node binary for the life of the process.
    unsafe { &*p }
}

/// Install the host table for this copy of the SDK (used by the node for its own native
/// processes; modules get it through `private::init`).
pub fn set_host(h: &'static abi::HostApi) {
    HOST.store(
        h as *const abi::HostApi as *mut abi::HostApi,
        Ordering::Release,
    );
}
