//! Compatibility-check benchmark fixture, version 1. See `modules/common/compat_bench.rs`.
const VSN: &str = "1";
const V2: bool = false;
include!("../../common/compat_bench.rs");
hotswap::module! { name: "compat_bench", version: "1", gen_server: Ledger }
