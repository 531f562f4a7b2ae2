//! Upgrade counter, version 2. See `modules/common/upgrade_srv.rs`.
const VSN: &str = "2";
include!("../../common/upgrade_srv.rs");
hotswap::module! { name: "upgrade_srv", version: "2", gen_server: Counter }
