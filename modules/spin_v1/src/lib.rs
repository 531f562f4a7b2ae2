//! Fixture module `spin`, version 1. See `modules/common/spin.rs`.
const VSN: &str = "1";
include!("../../common/spin.rs");
hotswap::module! {
    name: "spin",
    version: "1",
    exports: [apply_busy, drop_spin],
    functions: [busy],
    gen_server: State,
    supervisor: SpinSup,
}
