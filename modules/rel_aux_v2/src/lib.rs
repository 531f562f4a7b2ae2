//! Release-upgrade gen_server `rel_aux`, version 2: state `{id, total, upgraded_from}` (the count renamed). See
//! `modules/common/rel_srv.rs`.
const VSN: &str = "2";
include!("../../common/rel_srv.rs");
include!("../../common/rel_srv_v2_state.rs");
hotswap::module! { name: "rel_aux", version: "2", gen_server: State }
