//! Supervisor fixture: a gen_server child that logs `init`/`terminate`, tells a process
//! when it starts, and crashes or stops on request. See `modules/common/sup_worker.rs`.

#[path = "../../common/sup_types.rs"]
pub mod types;

include!("../../common/sup_worker.rs");

hotswap::module! { name: "sup_worker", version: "1", gen_server: Worker }
