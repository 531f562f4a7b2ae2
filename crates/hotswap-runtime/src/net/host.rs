//! The host API entry of ports ([`hotswap_abi::HostApi::net`]).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hotswap::net::{wire, Active, NetError};
use hotswap_abi as abi;

use super::Now;
use crate::process::Process;

fn run(p: &Process, op: u32, port: u64, arg: &[u8], tag: u64) -> Result<Now, NetError> {
    let ports = p.node.ports();
    match op {
        abi::NET_SEND => ports.send(&p.node, p.pid.0, port, arg, tag),
        abi::NET_ACTIVE => {
            let a = Active::decode(arg)
                .ok_or_else(|| NetError::InvalidArgument("malformed active mode".into()))?;
            ports.set_active(&p.node, p.pid.0, port, a)?;
            Ok(Now::Value(Vec::new()))
        }
        abi::NET_REQUEST => {
            let req: wire::Request = hotswap::codec::decode(arg)
                .map_err(|e| NetError::InvalidArgument(format!("malformed request: {e}")))?;
            ports.request(p, port, req, tag)
        }
        op => Err(NetError::InvalidArgument(format!(
            "unknown net operation {op}"
        ))),
    }
}

/// `HostApi::net`.
///
/// # Safety
/// `proc` must be the live handle of the calling process, `arg` readable for the call,
/// and `out`/`write` the caller's buffer and copy callback (the ABI contract).
pub(crate) unsafe extern "C" fn net(
    proc: *mut abi::ProcHandle,
    op: u32,
    port: u64,
    arg: abi::Bytes,
    tag: u64,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the handle is the calling process's (ABI contract): the process outlives
        // the call.
        let p = unsafe { &*(proc as *const Process) };
        let arg = if arg.len == 0 {
            &[][..]
        } else {
            // SAFETY: readable for the duration of the call (ABI contract).
            unsafe { std::slice::from_raw_parts(arg.ptr, arg.len) }
        };
        run(p, op, port, arg, tag)
    }));
    let (status, bytes) = match r {
        Ok(Ok(Now::Value(v))) => (abi::STATUS_READY, v),
        Ok(Ok(Now::Later)) => return abi::STATUS_PENDING,
        Ok(Err(e)) => (abi::STATUS_ERROR, hotswap::codec::encode(&e)),
        Err(p) => {
            let m = crate::process::panic_text(p);
            tracing::error!("node bug: a port operation panicked: {m}");
            (
                abi::STATUS_ERROR,
                hotswap::codec::encode(&NetError::Io(format!("node bug: {m}"))),
            )
        }
    };
    // SAFETY: the caller's copy callback and buffer (ABI contract).
    unsafe { write(out, bytes.as_ptr(), bytes.len()) };
    status
}
