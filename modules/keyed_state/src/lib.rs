//! Fixture `keyed_state`: a gen_server whose state holds maps keyed by integers, tuples
//! and enums (nested), a binary and a MessagePack extension value, for `hotswap
//! get-state`, which must render every MessagePack value. A cast `Bump(k)` adds one to
//! `counts[k]`, so a test can see the state change.

use std::collections::BTreeMap;
use std::fmt;

use hotswap::gen_server::{CallResult, Caller, CastResult, GenServer, Init};
use hotswap::Ctx;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes encoded as a MessagePack binary (what `serde_bytes` does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(b.to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A MessagePack extension value: `(type, data)` (rmp-serde's `_ExtStruct` convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "_ExtStruct")]
pub struct Ext(pub (i8, Bytes));

/// An enum used as a map key: a unit variant encodes as its name, the others as a map
/// of one entry (a compound key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    /// A unit variant.
    Free,
    /// A newtype variant.
    Taken(u32),
    /// A tuple variant.
    Pair(u8, u8),
}

/// The state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyed {
    /// Integer keys (the case of the issue: `BTreeMap<u32, u64>`).
    pub counts: BTreeMap<u32, u64>,
    /// Tuple keys.
    pub pairs: BTreeMap<(u32, String), bool>,
    /// Enum keys.
    pub slots: BTreeMap<Slot, String>,
    /// Integer keys over tuple keys, nested.
    pub nested: BTreeMap<u16, BTreeMap<(i8, i8), Vec<u32>>>,
    /// A binary.
    pub blob: Bytes,
    /// An extension value.
    pub ext: Ext,
}

/// Casts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Cast {
    /// Add one to `counts[k]`.
    Bump(u32),
}

impl GenServer for Keyed {
    type Arg = ();
    type Call = ();
    type Reply = u64;
    type Cast = Cast;
    type Info = ();

    async fn init(_ctx: Ctx, _: ()) -> Init<Self> {
        Init::Ok(Keyed {
            counts: [(0, 10), (2, 30), (10, 100)].into(),
            pairs: [((1, "a".to_string()), true), ((2, "b".to_string()), false)].into(),
            slots: [
                (Slot::Free, "free".to_string()),
                (Slot::Taken(7), "seven".to_string()),
                (Slot::Pair(1, 2), "pair".to_string()),
            ]
            .into(),
            nested: [(
                5,
                [((0, -1), vec![1, 2]), ((3, 4), vec![])]
                    .into_iter()
                    .collect(),
            )]
            .into(),
            blob: Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
            ext: Ext((7, Bytes(vec![1, 2, 3]))),
        })
    }

    async fn handle_call(&mut self, _ctx: Ctx, _: (), _from: Caller) -> CallResult<u64> {
        CallResult::Reply(self.counts.values().sum())
    }

    async fn handle_cast(&mut self, _ctx: Ctx, c: Cast) -> CastResult {
        match c {
            Cast::Bump(k) => *self.counts.entry(k).or_default() += 1,
        }
        CastResult::NoReply
    }
}

hotswap::module! { name: "keyed_state", version: "1", gen_server: Keyed }
