//! Seed 000 module `seed000`, version 2. See `modules/common/seed000.rs`.

const VSN: &str = "2";
include!("../../common/seed000.rs");

hotswap::module! {
    name: "seed000",
    version: "2",
    exports: [do_loop, run_loop as "loop", version],
    functions: [whoami],
}
