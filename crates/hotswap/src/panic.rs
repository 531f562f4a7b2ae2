//! A panic's message and where it happened, for the exit reason of a process whose code
//! panicked (the panic hook records the location, the catcher reads it).

use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor, so it registers nothing with the thread's
    // exit machinery and never pins the module (dylib-findings B3).
    static PANIC_AT: Cell<([u8; 120], usize)> = const { Cell::new(([0; 120], 0)) };
}

/// The panic hook: record where the panic happened, for [`panic_message`].
pub(crate) fn record_location(info: &std::panic::PanicHookInfo<'_>) {
    if let Some(loc) = info.location() {
        let s = format!("{}:{}:{}", loc.file(), loc.line(), loc.column());
        let mut buf = [0u8; 120];
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        PANIC_AT.with(|c| c.set((buf, n)));
    }
}

/// The panic's message, with where it happened if the hook recorded it.
pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    let (buf, n) = PANIC_AT.with(|c| c.replace(([0; 120], 0)));
    if n > 0 {
        format!("{msg} (at {})", String::from_utf8_lossy(&buf[..n]))
    } else {
        msg
    }
}
