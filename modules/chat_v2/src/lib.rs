//! Chat server, version 2: the state type changes (rooms are sets with a publication
//! count; each member has a record with its room and frames published). `code_change`
//! converts version 1's state and back. See `modules/common/chat.rs`.
use std::collections::{BTreeMap, BTreeSet};

const VSN: u8 = 2;

/// A room.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Room {
    /// Member connections.
    pub members: BTreeSet<u64>,
    /// Publications in this room.
    pub published: u64,
}

/// A member connection.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default, Clone, Copy)]
pub struct Member {
    /// Its room.
    pub room: u32,
    /// Frames it published.
    pub frames: u64,
}

/// Version 2's state.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Chat {
    /// The listen address.
    pub addr: String,
    /// Room id → room.
    pub rooms: BTreeMap<u32, Room>,
    /// Connection → member record.
    pub conns: BTreeMap<u64, Member>,
    /// Publications handled.
    pub published: u64,
}

/// Either version's state.
#[derive(serde::Deserialize)]
pub struct ChatState {
    addr: String,
    conns: BTreeMap<u64, AnyMember>,
    #[serde(default)]
    published: u64,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum AnyMember {
    Room(u32),
    Record { room: u32, frames: u64 },
}

impl Chat {
    fn new(addr: String) -> Chat {
        Chat {
            addr,
            ..Default::default()
        }
    }
    fn from_any(s: ChatState) -> Chat {
        let mut c = Chat::new(s.addr);
        c.published = s.published;
        for (conn, m) in s.conns {
            let (room, frames) = match m {
                AnyMember::Room(r) => (r, 0),
                AnyMember::Record { room, frames } => (room, frames),
            };
            c.joined(conn, room);
            if let Some(m) = c.conns.get_mut(&conn) {
                m.frames = frames;
            }
        }
        c
    }
    fn addr(&self) -> &str {
        &self.addr
    }
    fn connections(&self) -> usize {
        self.conns.len()
    }
    fn published(&self) -> u64 {
        self.published
    }
    fn joined(&mut self, conn: u64, room: u32) {
        self.left(conn);
        self.conns.insert(conn, Member { room, frames: 0 });
        self.rooms.entry(room).or_default().members.insert(conn);
    }
    fn left(&mut self, conn: u64) {
        if let Some(m) = self.conns.remove(&conn) {
            if let Some(r) = self.rooms.get_mut(&m.room) {
                r.members.remove(&conn);
                if r.members.is_empty() {
                    self.rooms.remove(&m.room);
                }
            }
        }
    }
    fn room_of(&self, conn: u64) -> Vec<u64> {
        self.conns
            .get(&conn)
            .and_then(|m| self.rooms.get(&m.room))
            .map(|r| r.members.iter().copied().collect())
            .unwrap_or_default()
    }
    fn count_publication(&mut self, conn: u64) {
        self.published += 1;
        if let Some(m) = self.conns.get_mut(&conn) {
            m.frames += 1;
            if let Some(r) = self.rooms.get_mut(&m.room) {
                r.published += 1;
            }
        }
    }
}

include!("../../common/chat.rs");
hotswap::module! { name: "chat", version: "2", gen_server: Chat }
