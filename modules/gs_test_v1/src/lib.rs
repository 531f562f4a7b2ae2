//! gen_server behaviour fixture, version 1. See `modules/common/gs_test.rs`.
const VSN: &str = "1";
const FAILING_CODE_CHANGE: bool = false;
include!("../../common/gs_test.rs");
hotswap::module! { name: "gs_test", version: "1", gen_server: State }
