//! Seed 001 `sync_code_reload`, version 2. See `modules/common/sync_code_reload.rs`.
const VSN: &str = "2";
const CODE_CHANGE_RECORDS: bool = true;
include!("../../common/sync_code_reload.rs");
hotswap::module! { name: "sync_code_reload", version: "2", gen_server: State }
