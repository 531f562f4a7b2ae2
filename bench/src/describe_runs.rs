//! `describe_runs [N]`: describe `compat_bench`'s five types (its version 1 types: this crate
//! has no `v2` feature) N times in this process, the way a module's exported `describe`
//! does, and print the description's size. A fixed workload for counting instructions
//! (`valgrind --tool=callgrind target/release/describe_runs 1`): callgrind counts are
//! repeatable on a noisy machine, wall time is not.

#![allow(dead_code, missing_docs, unexpected_cfgs)]

const VSN: &str = "1";
const V2: bool = false;
include!("../../modules/common/compat_bench.rs");

unsafe extern "C" fn write(out: *mut std::ffi::c_void, ptr: *const u8, len: usize) {
    // SAFETY: `out` is the `Vec<u8>` passed below; `ptr`/`len` the encoded bytes.
    unsafe {
        (*(out as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(ptr, len));
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let mut bytes = Vec::new();
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut out: Vec<u8> = Vec::new();
        // SAFETY: `out` is a `Vec<u8>`, as `write` expects.
        let st = unsafe {
            hotswap::private::describe(&mut out as *mut Vec<u8> as *mut _, write, || {
                hotswap::schema::ModuleSchema {
                    module: "compat_bench".into(),
                    version: VSN.into(),
                    server: Some(hotswap::private::describe_server::<Ledger>(
                        hotswap::schema::describe::<Reply>(),
                    )),
                    exports: Vec::new(),
                }
            })
        };
        assert_eq!(st, hotswap::abi::STATUS_READY);
        bytes = out;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    // FNV-1a of the description: equal bytes before and after a change of the tracer.
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!(
        "describe of compat_bench's types: {} bytes (fnv {h:016x}), {us:.1} us per describe ({n} runs)",
        bytes.len()
    );
}
