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

/// Encode a value into a buffer on the stack when it fits (most messages do), else on the
/// heap, and hand the bytes to `f`: the send paths use it to avoid an allocation per
/// message.
pub fn with_encoded<T: serde::Serialize + ?Sized, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 128];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if rmp_serde::encode::write_named(&mut cur, value).is_ok() {
        let n = cur.position() as usize;
        return f(&buf[..n]);
    }
    f(&encode(value))
}

/// Append the encoding of a value to `out` (no intermediate buffer).
pub fn encode_into<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if let Err(e) = rmp_serde::encode::write_named(out, value) {
        panic!("cannot encode {}: {e}", std::any::type_name::<T>());
    }
}

/// Decode a value, naming the expected type in the error.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError {
        expected: std::any::type_name::<T>(),
        detail: e.to_string(),
    })
}

/// Decode `New`, or else the older form `Old` converted with `From`: the easy way for a
/// module to keep accepting messages (or state) that an earlier version produced (the
/// backward-compatible clause of seed 002).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// enum Tick { Increment(u64) }             // this version
/// #[derive(Serialize, Deserialize)]
/// enum OldTick { Increment }               // what version 1 sent
/// impl From<OldTick> for Tick {
///     fn from(_: OldTick) -> Tick { Tick::Increment(2) }
/// }
/// let old = hotswap::codec::encode(&OldTick::Increment);
/// let t: Tick = hotswap::codec::decode_compat::<Tick, OldTick>(&old).unwrap();
/// assert_eq!(t, Tick::Increment(2));
/// ```
pub fn decode_compat<New, Old>(bytes: &[u8]) -> Result<New, DecodeError>
where
    New: serde::de::DeserializeOwned + From<Old>,
    Old: serde::de::DeserializeOwned,
{
    match decode::<New>(bytes) {
        Ok(v) => Ok(v),
        Err(new_err) => match decode::<Old>(bytes) {
            Ok(o) => Ok(New::from(o)),
            Err(old_err) => Err(DecodeError {
                expected: new_err.expected,
                detail: format!(
                    "{} (nor as the older form {}: {})",
                    new_err.detail, old_err.expected, old_err.detail
                ),
            }),
        },
    }
}

/// A short readable rendering of encoded data (for error messages): `Increment`,
/// `{"Increment": 2}`, `[1, 2]`; at most about 200 characters.
pub fn describe(bytes: &[u8]) -> String {
    match rmp_serde::from_slice::<Shown>(bytes) {
        Ok(Shown(mut s)) => {
            if s.len() > 200 {
                let mut cut = 200;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            s
        }
        Err(_) => format!("<{} bytes that are not MessagePack>", bytes.len()),
    }
}

/// Any value, rendered as text while it is deserialized.
struct Shown(String);

impl<'de> serde::Deserialize<'de> for Shown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShowVisitor)
    }
}

struct ShowVisitor;

impl<'de> serde::de::Visitor<'de> for ShowVisitor {
    type Value = Shown;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Shown, E> {
        Ok(Shown(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Shown, E> {
        Ok(Shown(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Shown, E> {
        Ok(Shown(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Shown, E> {
        Ok(Shown(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Shown, E> {
        Ok(Shown(v.to_string()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Shown, E> {
        Ok(Shown(format!("<<{} bytes>>", v.len())))
    }
    fn visit_unit<E>(self) -> Result<Shown, E> {
        Ok(Shown("()".into()))
    }
    fn visit_none<E>(self) -> Result<Shown, E> {
        Ok(Shown("None".into()))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shown, D::Error> {
        d.deserialize_any(ShowVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Shown, A::Error> {
        let mut parts = Vec::new();
        while let Some(Shown(s)) = a.next_element()? {
            parts.push(s);
        }
        Ok(Shown(format!("[{}]", parts.join(", "))))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Shown, A::Error> {
        let mut parts = Vec::new();
        while let Some((Shown(k), Shown(v))) = a.next_entry()? {
            parts.push(format!("{k}: {v}"));
        }
        Ok(Shown(format!("{{{}}}", parts.join(", "))))
    }
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
    /// Not a user message: `detail` says what it was.
    pub(crate) fn not_user(detail: String) -> Self {
        DecodeError {
            expected: "a user message",
            detail,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode as {}: {}", self.expected, self.detail)
    }
}

impl std::error::Error for DecodeError {}
