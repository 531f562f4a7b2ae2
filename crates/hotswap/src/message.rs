//! What [`crate::Ctx::recv`] takes from a mailbox.

use crate::codec::{self, DecodeError};
use crate::net::port::PortMsg;
use crate::types::{ExitReason, Pid, Ref};

/// A message taken from a mailbox by [`crate::Ctx::recv`].
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// An ordinary message.
    User {
        /// The sending process (0 when sent from outside any process).
        from: Pid,
        /// The encoded payload; see [`Message::decode`].
        data: Vec<u8>,
    },
    /// A trapped exit signal `{'EXIT', From, Reason}`.
    Exit {
        /// The process the signal came from.
        from: Pid,
        /// Its reason.
        reason: ExitReason,
    },
    /// A monitor notification `{'DOWN', Ref, process, Pid, Reason}`.
    Down {
        /// The monitor reference.
        reference: Ref,
        /// The monitored process.
        pid: Pid,
        /// Why it exited (`noproc` if it did not exist).
        reason: ExitReason,
    },
    /// A `gen_server` call or cast, or a `sys` request, that reached a process which is
    /// not a gen_server (the caller of a call waits until its timeout, as in OTP).
    Request {
        /// `hotswap::abi::MSG_CALL`, `MSG_CAST` or `MSG_SYSTEM`.
        kind: u32,
        /// The sender.
        from: Pid,
        /// The call's tag (0 for a cast).
        tag: u64,
        /// The encoded request.
        data: Vec<u8>,
    },
    /// An event of a port (socket) this process owns; see [`crate::net`].
    Port(PortMsg),
}

impl Message {
    /// Decode a user message's payload as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        match self {
            Message::User { data, .. } => codec::decode(data),
            other => Err(DecodeError::not_user(format!("got {other:?}"))),
        }
    }
}
