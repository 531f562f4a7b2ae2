//! # hotswap: the module SDK
//!
//! A hotswap module is an ordinary cargo crate built as a `cdylib` that a running node
//! loads, keeps in two versions (current and old), and purges, as Erlang's code server does.
//! The crate depends on this SDK and names its exports with [`module!`]:
//!
//! ```no_run
//! use hotswap::{Ctx, ExitReason, Outcome};
//!
//! async fn counter(ctx: Ctx, start: u64) -> Result<Outcome, ExitReason> {
//!     let mut n = start;
//!     loop {
//!         match ctx.receive::<String>().await.as_str() {
//!             "tick" => n += 1,
//!             // a fully-qualified tail call: continue on the *current* version
//!             "code_switch" => return Ok(ctx.continue_with("counter", "counter", &n)),
//!             _ => return Err(ExitReason::User("unexpected".into())),
//!         }
//!     }
//! }
//!
//! hotswap::module! {
//!     name: "counter",
//!     version: "1.0.0",
//!     exports: [counter],
//! }
//! # fn main() {}
//! ```
//!
//! Rules a module follows (the node checks what it can at load):
//! * build with `panic = "unwind"` (the default): every export catches panics, and a panic
//!   becomes the process's exit reason `{panic, Message}`;
//! * never spawn threads or run an async runtime: use processes, timers and messages;
//! * log with [`Ctx::log`], not stdout;
//! * anything that another version may read (messages, state) is encoded with [`codec`]
//!   (MessagePack with named fields), so added optional fields still decode;
//! * do not declare a `#[global_allocator]`: [`module!`] installs one that allocates from a
//!   heap the node keeps for this loaded version, which a purge frees as a whole once the
//!   version is unmapped (statics included). Nothing allocated by module code may outlive
//!   the version: everything the node keeps is copied out as bytes.

pub mod codec;
mod ctx;
pub mod gen_server;
mod heap;
mod host;
mod message;
pub mod net;
mod outcome;
mod panic;
#[doc(hidden)]
pub mod private;
pub mod schema;
pub mod supervisor;
pub mod sys;
mod types;

pub use ctx::{
    AnyMsg, AnyOf, Apply, ApplyError, Ctx, Level, Matcher, MessageKind, Nothing, RawBytes, Receive,
    SpawnError, TimedReceive, Typed,
};
pub use hotswap_macros::module;
pub use message::Message;
pub use outcome::{IntoOutcome, Outcome, Value};
pub use types::{ExitReason, Pid, Ref};

/// Re-export for the macro expansion.
#[doc(hidden)]
pub use hotswap_abi as abi;
