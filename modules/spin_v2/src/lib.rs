//! Fixture module `spin`, version 2. See `modules/common/spin.rs`.
const VSN: &str = "2";
include!("../../common/spin.rs");
hotswap::module! {
    name: "spin",
    version: "2",
    exports: [apply_busy, drop_spin],
    functions: [busy],
    gen_server: State,
    supervisor: SpinSup,
}
