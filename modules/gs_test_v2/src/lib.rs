//! gen_server behaviour fixture, version 2. See `modules/common/gs_test.rs`.
const VSN: &str = "2";
const FAILING_CODE_CHANGE: bool = true;
include!("../../common/gs_test.rs");
hotswap::module! { name: "gs_test", version: "2", gen_server: State }
