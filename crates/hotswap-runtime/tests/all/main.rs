//! Integration tests of the node: real `dlopen` of real module crates from `modules/`.
//!
//! One test binary (files named by area); fixtures are built once by `support::module`.

mod support;

mod bad_module;
mod code_server;
mod process;
mod seed000;
mod seed002;
mod seed004;
mod soak;
