//! Export the runtime's thread-local guard from the compare binary.
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
