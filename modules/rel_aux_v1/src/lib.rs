//! Release-upgrade gen_server `rel_aux`, version 1: state `{id, count}`. See
//! `modules/common/rel_srv.rs`.
const VSN: &str = "1";
include!("../../common/rel_srv.rs");
include!("../../common/rel_srv_v1_state.rs");
hotswap::module! { name: "rel_aux", version: "1", gen_server: State }
