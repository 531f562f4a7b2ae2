//! What an exported function finishes with.

use crate::types::ExitReason;
use hotswap_abi::{OUTCOME_CONTINUE, OUTCOME_EXIT, OUTCOME_VALUE};

/// The result of an exported function.
///
/// * As a process body: `Value` is a normal exit, `Exit` exits with a reason, and
///   `Continue` is a fully-qualified tail call: the node drops the finished future and
///   starts `module:function(arg)` on the **current** version of `module`. This is how a
///   process moves to new code (the `code_switch` → `m:loop()` pattern).
/// * As the target of [`crate::Ctx::apply`]: `Value` is the return value.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An encoded return value.
    Value(Vec<u8>),
    /// Exit with this reason.
    Exit(ExitReason),
    /// Tail-call `module:function(arg)` on the current version.
    Continue {
        /// Module name.
        module: String,
        /// Exported function name.
        function: String,
        /// Encoded argument.
        arg: Vec<u8>,
    },
}

impl Outcome {
    /// A return value, encoded with the SDK codec.
    pub fn value<T: serde::Serialize + ?Sized>(v: &T) -> Outcome {
        Outcome::Value(crate::codec::encode(v))
    }

    /// Encode for the boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Outcome::Value(v) => {
                out.push(OUTCOME_VALUE);
                out.extend_from_slice(v);
            }
            Outcome::Exit(r) => {
                out.push(OUTCOME_EXIT);
                r.encode_into(&mut out);
            }
            Outcome::Continue {
                module,
                function,
                arg,
            } => {
                out.push(OUTCOME_CONTINUE);
                for s in [module.as_bytes(), function.as_bytes()] {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
                out.extend_from_slice(arg);
            }
        }
        out
    }

    /// Decode what [`Outcome::encode`] wrote; `None` if malformed.
    /// Encode for the boundary, reusing a value's buffer (no second allocation).
    pub fn into_encoded(self) -> Vec<u8> {
        match self {
            Outcome::Value(mut v) => {
                v.insert(0, OUTCOME_VALUE);
                v
            }
            other => other.encode(),
        }
    }

    /// Decode an owned buffer, reusing it for a value.
    pub fn decode_vec(mut bytes: Vec<u8>) -> Option<Outcome> {
        if bytes.first() == Some(&OUTCOME_VALUE) {
            bytes.remove(0);
            return Some(Outcome::Value(bytes));
        }
        Outcome::decode(&bytes)
    }

    /// Decode what [`Outcome::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Option<Outcome> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            OUTCOME_VALUE => Some(Outcome::Value(rest.to_vec())),
            OUTCOME_EXIT => Some(Outcome::Exit(ExitReason::decode(rest))),
            OUTCOME_CONTINUE => {
                let (module, rest) = take_str(rest)?;
                let (function, rest) = take_str(rest)?;
                Some(Outcome::Continue {
                    module,
                    function,
                    arg: rest.to_vec(),
                })
            }
            _ => None,
        }
    }
}

fn take_str(b: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4 + len)?;
    Some((String::from_utf8(s.to_vec()).ok()?, &b[4 + len..]))
}

/// A typed return value for functions called with [`crate::Ctx::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<T>(pub T);

/// Anything an exported function may return.
pub trait IntoOutcome {
    /// Convert into an [`Outcome`].
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        // Encoded (MessagePack nil), so that `apply::<_, ()>` decodes it.
        Outcome::value(&())
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl IntoOutcome for ExitReason {
    fn into_outcome(self) -> Outcome {
        Outcome::Exit(self)
    }
}

impl<T: serde::Serialize> IntoOutcome for Value<T> {
    fn into_outcome(self) -> Outcome {
        Outcome::value(&self.0)
    }
}

impl<T: IntoOutcome> IntoOutcome for Result<T, ExitReason> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(),
            Err(r) => Outcome::Exit(r),
        }
    }
}
