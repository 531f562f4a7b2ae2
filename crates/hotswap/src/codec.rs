//! The message and state encoding: MessagePack with named fields (`rmp-serde`).
//!
//! Named fields keep data readable across module versions: a field added or removed in a
//! later version (with `#[serde(default)]` or as an `Option`) still decodes.

use std::fmt;

/// Identifier of this encoding, recorded in every module descriptor.
pub const CODEC_ID: &str = "msgpack-named/1";

/// Encode a value. Encoding a plain serde value cannot fail for the types the SDK supports;
/// a type whose `Serialize` impl reports an error panics with that error.
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    match rmp_serde::to_vec_named(value) {
        Ok(v) => v,
        Err(e) => panic!("cannot encode {}: {e}", std::any::type_name::<T>()),
    }
}

/// Decode a value, naming the expected type in the error.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError {
        expected: std::any::type_name::<T>(),
        detail: e.to_string(),
    })
}

/// A message or state that does not decode as the expected type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The Rust type that was expected.
    pub expected: &'static str,
    /// What the decoder said.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn not_user(m: &crate::Message) -> Self {
        DecodeError {
            expected: "a user message",
            detail: format!("got {m:?}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode as {}: {}", self.expected, self.detail)
    }
}

impl std::error::Error for DecodeError {}
