//! Fixture module `soak`: in one process it uses what pins or crashes an unloaded library
//! when the node is not careful (dylib-findings B3): a `thread_local!` with a destructor,
//! `std::thread::current()`, and `println!`.

use hotswap::{Ctx, Pid};
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(64));
}

/// Touch the thread-local, the current thread handle and stdout, then report to `to`.
async fn work(ctx: Ctx, to: Pid) {
    let len = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.push(1);
        s.len()
    });
    let name = std::thread::current().name().map(str::to_owned);
    println!("soak: worker {name:?}, scratch {len}");
    ctx.send(to, &"done");
}

hotswap::module! {
    name: "soak",
    version: "1",
    exports: [work],
}
