//! Fixture module `aborty`. The tests build it with `-C panic=abort`; the node must refuse
//! it, because a panic in it could not be caught and would abort the whole node.

use hotswap::Ctx;

async fn run(_ctx: Ctx, _: ()) {}

hotswap::module! {
    name: "aborty",
    version: "1",
    exports: [run],
}
