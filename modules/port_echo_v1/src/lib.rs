//! Port echo server, version 1. See `modules/common/port_echo.rs`.
const VSN: u8 = 1;
/// Version 1's state: connections and the frames each echoed.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Echo {
    /// The listener.
    pub listener: u64,
    /// Its address.
    pub addr: String,
    /// Connection port id → frames echoed.
    pub conns: std::collections::BTreeMap<u64, u64>,
    /// `code_change`s applied.
    pub migrations: u32,
}
include!("../../common/port_echo.rs");
hotswap::module! { name: "port_echo", version: "1", gen_server: Echo }

impl ConnCount for u64 {
    fn frames(&self) -> u64 {
        *self
    }
    fn bump(&mut self, _bytes: usize) {
        *self += 1;
    }
    fn from_any(c: AnyConn) -> Self {
        match c {
            AnyConn::Count(n) | AnyConn::Record { frames: n, .. } => n,
        }
    }
}
