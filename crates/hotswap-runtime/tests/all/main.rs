//! Integration tests of the node: real `dlopen` of real module crates from `modules/`.
//!
//! One test binary (files named by area); fixtures are built once by `support::module`.

mod support;

mod application;
mod bad_module;
mod code_server;
mod compat;
mod gen_server;
mod gs;
mod ports;
mod process;
mod quiesce;
mod release;
mod sched;
mod seed000;
mod seed001;
mod seed002;
mod seed002_gen_server;
mod seed003;
mod seed004;
mod soak;
#[allow(dead_code)]
#[path = "../../../../modules/common/sup_types.rs"]
mod sup_types;
mod supervisor;
mod sys;
mod upgrade_load;
