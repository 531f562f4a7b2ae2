//! Chat server, version 1: rooms as lists of members. See `modules/common/chat.rs`.
use std::collections::BTreeMap;

const VSN: u8 = 1;
const MAX_ROOM: Option<u32> = None;

/// Version 1's state.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Chat {
    /// The listen address.
    pub addr: String,
    /// Room → member connections.
    pub rooms: BTreeMap<u32, Vec<u64>>,
    /// Connection → its room.
    pub conns: BTreeMap<u64, u32>,
    /// Publications handled.
    pub published: u64,
}

impl Chat {
    fn joined(&mut self, conn: u64, room: u32) {
        self.left(conn);
        self.conns.insert(conn, room);
        self.rooms.entry(room).or_default().push(conn);
    }
    fn left(&mut self, conn: u64) {
        if let Some(r) = self.conns.remove(&conn) {
            if let Some(m) = self.rooms.get_mut(&r) {
                m.retain(|c| *c != conn);
                if m.is_empty() {
                    self.rooms.remove(&r);
                }
            }
        }
    }
    fn room_of(&self, conn: u64) -> Vec<u64> {
        self.conns
            .get(&conn)
            .and_then(|r| self.rooms.get(r))
            .cloned()
            .unwrap_or_default()
    }
    fn count_publication(&mut self, _conn: u64) {
        self.published += 1;
    }
    /// Version 1 keeps no per-member count: a downgrade drops it.
    fn restore_frames(&mut self, _conn: u64, _frames: u64) {}
}

include!("../../common/chat.rs");
hotswap::module! { name: "chat", version: "1", gen_server: Chat }
