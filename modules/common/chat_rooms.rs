// The state of chat versions 2 and 3 (`modules/chat_v2`, `modules/chat_v3`): rooms are sets
// with a publication count, and each member has a record with its room and the frames it
// published. Included before `chat.rs`.

use std::collections::{BTreeMap, BTreeSet};

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

/// The state.
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

impl Chat {
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
    /// Carry a member's frame count over from the state `code_change` converts.
    fn restore_frames(&mut self, conn: u64, frames: u64) {
        if let Some(m) = self.conns.get_mut(&conn) {
            m.frames = frames;
        }
    }
}
