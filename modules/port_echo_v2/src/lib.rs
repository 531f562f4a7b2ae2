//! Port echo server, version 2: the state type changes (per-connection records instead
//! of a count). See `modules/common/port_echo.rs`.
const VSN: u8 = 2;
/// One connection's record.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default, Clone)]
pub struct Conn {
    /// Frames echoed.
    pub frames: u64,
    /// Bytes echoed.
    pub bytes: u64,
}
/// Version 2's state.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Echo {
    /// The listener.
    pub listener: u64,
    /// Its address.
    pub addr: String,
    /// Connection port id → its record.
    pub conns: std::collections::BTreeMap<u64, Conn>,
    /// `code_change`s applied.
    pub migrations: u32,
}
include!("../../common/port_echo.rs");
hotswap::module! { name: "port_echo", version: "2", gen_server: Echo }

impl ConnCount for Conn {
    fn frames(&self) -> u64 {
        self.frames
    }
    fn bump(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }
    fn from_any(c: AnyConn) -> Self {
        match c {
            AnyConn::Count(frames) => Conn { frames, bytes: 0 },
            AnyConn::Record { frames, bytes } => Conn { frames, bytes },
        }
    }
}
