//! Fixture module `misbehave`: everything a module should not do, to show that the node
//! survives it.

use hotswap::Ctx;
use std::time::{Duration, Instant};

/// Panics on its first poll with the given message.
async fn panic_now(_ctx: Ctx, msg: String) {
    panic!("{msg}");
}

/// Waits for a string message, then panics with it.
async fn panic_on_message(ctx: Ctx, _: ()) {
    let msg: String = ctx.receive().await;
    panic!("{msg}");
}

/// Tries to start an OS thread (modules must not): the node refuses it.
async fn spawn_thread(ctx: Ctx, _: ()) {
    let t = std::thread::Builder::new().spawn(|| 42);
    match t {
        Ok(h) => {
            let _ = h.join();
            ctx.log(hotswap::Level::Error, "thread creation was allowed");
        }
        Err(e) => panic!("could not start a thread: {e}"),
    }
}

/// Tells `to` it is busy, then spins for `ms` milliseconds inside one poll (a call in
/// flight that native code cannot be pre-empted out of), then idles.
async fn busy(ctx: Ctx, (to, ms): (hotswap::Pid, u64)) {
    ctx.send(to, &"busy");
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
    let _: String = ctx.receive().await;
}

/// Calls the synchronous function `module:function(ms)` (which answers a `String`) and
/// sends what it returned to the process registered as `spin_watch`.
async fn call_function(ctx: Ctx, (module, function, ms): (String, String, u64)) {
    let r = ctx.function::<u64, String>(&module, &function).call(&ms);
    let _ = ctx.send_named("spin_watch", &format!("{r:?}"));
}

/// Waits for any message, then exits normally.
async fn idle(ctx: Ctx, _: ()) {
    let _ = ctx.recv().await;
}

hotswap::module! {
    name: "misbehave",
    version: "1",
    exports: [panic_now, panic_on_message, spawn_thread, busy, idle, call_function],
}
