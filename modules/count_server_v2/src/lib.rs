//! Seed 002 CountServer, version 2. See `modules/common/count_server.rs`.
const VSN: &str = "2";
const STEP: u64 = 2;
const MAKE_EVEN: bool = false;
/// The tick this version speaks.
pub type Tick = OldTick;
fn decode_tick(b: &[u8]) -> Result<Tick, hotswap::codec::DecodeError> {
    hotswap::codec::decode(b)
}
/// No older forms are read.
fn extra_accepts() -> hotswap::schema::Accepts {
    hotswap::schema::Accepts::new()
}
include!("../../common/count_server.rs");
hotswap::module! { name: "count_server", version: "2", gen_server: CountServer }
