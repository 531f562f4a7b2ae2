//! Export the runtime's thread-local guard from the `hotswap` binary (see
//! `hotswap_runtime::guard_link_args`), so purged module versions can be unmapped safely.
fn main() {
    for sym in [
        "pthread_key_create",
        "__cxa_thread_atexit_impl",
        "pthread_create",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={sym}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
