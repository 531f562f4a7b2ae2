//! Dry-run fixture, version 2 (states above 100 do not decode). See
//! `modules/common/dry_run.rs`.
const LIMIT: Option<u64> = Some(100);
include!("../../common/dry_run.rs");
hotswap::module! { name: "dry_run", version: "2", gen_server: Bounded }
