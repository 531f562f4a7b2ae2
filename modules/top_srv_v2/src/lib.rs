//! gen_server `top_srv` of the `hotswap top` tests, version 2: a counter whose
//! calls can be held until a file exists. See `modules/common/top_srv.rs`.
const VSN: &str = "2";
include!("../../common/top_srv.rs");
hotswap::module! { name: "top_srv", version: "2", gen_server: State }
