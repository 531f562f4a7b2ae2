//! Dry-run fixture, version 1 (no limit). See `modules/common/dry_run.rs`.
const LIMIT: Option<u64> = None;
include!("../../common/dry_run.rs");
hotswap::module! { name: "dry_run", version: "1", gen_server: Bounded }
