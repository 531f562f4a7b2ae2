//! Compatibility-check benchmark fixture, version 2. See `modules/common/compat_bench.rs`.
const VSN: &str = "2";
const V2: bool = true;
include!("../../common/compat_bench.rs");
hotswap::module! { name: "compat_bench", version: "2", gen_server: Ledger }
