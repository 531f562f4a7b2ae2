//! Chat server, version 2: the state type changes (rooms are sets with a publication
//! count; each member has a record with its room and frames published; see
//! `modules/common/chat_rooms.rs`). `code_change` converts version 1's state and back.
//! See `modules/common/chat.rs`.

const VSN: u8 = 2;
const MAX_ROOM: Option<u32> = None;

include!("../../common/chat_rooms.rs");
include!("../../common/chat.rs");
hotswap::module! { name: "chat", version: "2", gen_server: Chat }
