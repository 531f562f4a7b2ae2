//! Upgrade counter, version 1. See `modules/common/upgrade_srv.rs`.
const VSN: &str = "1";
include!("../../common/upgrade_srv.rs");
hotswap::module! { name: "upgrade_srv", version: "1", gen_server: Counter }
