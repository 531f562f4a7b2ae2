//! Seed 002 module `counter`, version 2: counts +2 per tick. See `modules/common/counter.rs`.

const INCREMENT: u64 = 2;
const VSN: &str = "2";
include!("../../common/counter.rs");

hotswap::module! {
    name: "counter",
    version: "2",
    exports: [count],
}
