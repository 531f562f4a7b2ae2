//! Behaviours on the host side: `gen_server` and `sys` ([`server`]), supervisors
//! ([`supervisor`]) and applications with the node's graceful stop ([`application`]).

pub mod application;
pub(crate) mod server;
pub mod supervisor;
