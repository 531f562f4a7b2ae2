//! Seed 002 module `counter`, version 1: counts +1 per tick. See `modules/common/counter.rs`.

const INCREMENT: u64 = 1;
const VSN: &str = "1";
include!("../../common/counter.rs");

hotswap::module! {
    name: "counter",
    version: "1",
    exports: [count],
}
