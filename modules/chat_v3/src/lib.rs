//! Chat server, version 3: version 2's state, but room ids are limited to 0..=255 (say, to
//! fit a one-byte wire field). Its `code_change` therefore fails on a server holding a
//! larger room id: the demo's release 3.0.0, which the release handler's check refuses.
//! See `modules/common/chat.rs`.

const VSN: u8 = 3;
const MAX_ROOM: Option<u32> = Some(255);

include!("../../common/chat_rooms.rs");
include!("../../common/chat.rs");
hotswap::module! { name: "chat", version: "3", gen_server: Chat }
