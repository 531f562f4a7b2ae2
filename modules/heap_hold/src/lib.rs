//! Fixture: module `heap_hold`, whose statics hold memory that the module never frees: a
//! buffer of any size and a compiled `Regex`. A purge must return both (the version's heap
//! is freed once the library is unmapped).

use std::sync::{Mutex, OnceLock};

use hotswap::Ctx;

static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static RE: OnceLock<regex::Regex> = OnceLock::new();

/// Keep `mib` MiB in a static, every byte written (so every page is resident). Returns the
/// bytes held.
fn hold(_ctx: Ctx, mib: u64) -> u64 {
    let mut b = BUF.lock().unwrap_or_else(|p| p.into_inner());
    *b = vec![0xA5; (mib as usize) << 20];
    b.len() as u64
}

/// Compile a regex into a static (once per loaded version) and match `s` against it.
fn matches(_ctx: Ctx, s: String) -> bool {
    RE.get_or_init(|| {
        regex::Regex::new(r"^([a-z0-9._%+-]+)@([a-z0-9.-]+)\.(com|org|net|[a-z]{2})$")
            .expect("a valid regex")
    })
    .is_match(&s)
}

hotswap::module! {
    name: "heap_hold",
    version: "1",
    exports: [],
    functions: [hold, matches],
}
