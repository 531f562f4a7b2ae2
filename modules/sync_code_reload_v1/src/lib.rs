//! Seed 001 `sync_code_reload`, version 1. See `modules/common/sync_code_reload.rs`.
const VSN: &str = "1";
const CODE_CHANGE_RECORDS: bool = false;
include!("../../common/sync_code_reload.rs");
hotswap::module! { name: "sync_code_reload", version: "1", gen_server: State }
