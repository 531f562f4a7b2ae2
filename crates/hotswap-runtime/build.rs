//! Exports the thread-local guard's interposers from every executable this package links
//! (tests, benches), so that a loaded module's std binds to them. Executables of other
//! packages that embed the runtime call `hotswap_runtime::guard_link_args()` in their own
//! build script (see `crates/hotswap-cli/build.rs`).
fn main() {
    for sym in [
        "pthread_key_create",
        "__cxa_thread_atexit_impl",
        "pthread_create",
    ] {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol={sym}");
        println!("cargo:rustc-link-arg-benches=-Wl,--export-dynamic-symbol={sym}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
