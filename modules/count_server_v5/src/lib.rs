//! Seed 002 CountServer, version 5. See `modules/common/count_server.rs`.
const VSN: &str = "5";
const STEP: u64 = 2;
const MAKE_EVEN: bool = false;
/// The tick this version speaks.
pub type Tick = NewTick;
fn decode_tick(b: &[u8]) -> Result<Tick, hotswap::codec::DecodeError> {
    // The backward-compatible clause: the old `Increment` still counts (as +2).
    hotswap::codec::decode_compat::<NewTick, OldTick>(b)
}
/// What `decode_tick` reads besides `NewTick`: declared for the compatibility check.
fn extra_accepts() -> hotswap::schema::Accepts {
    hotswap::schema::Accepts::new().info::<OldTick>()
}
include!("../../common/count_server.rs");
hotswap::module! { name: "count_server", version: "5", gen_server: CountServer }
