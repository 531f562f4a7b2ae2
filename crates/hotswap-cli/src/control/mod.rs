//! The control commands' client side: [`client`] sends a request over the node's control
//! socket and prints the answer; [`ports`] renders the port table.
//!
//! The wire protocol and the node's side (the control server) live in the runtime, in
//! [`hotswap_runtime::control`]; the items re-exported here are its protocol.

pub mod client;
pub mod ports;

pub use hotswap_runtime::control::{
    read_cookie, read_frame, write_frame, ErrorReply, Reply, Request, MAX_REPLY,
};
