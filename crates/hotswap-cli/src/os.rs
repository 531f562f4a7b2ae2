//! The few operating-system calls the node and the control tool need beyond std: waiting
//! for another process to exit, and random bytes for the cookie.

use std::io::Read;
use std::time::{Duration, Instant};

/// Whether process `pid` exists (Linux: `/proc/<pid>` is there and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Wait until process `pid` has exited, up to `timeout`; `true` if it has.
///
/// Uses a pidfd (Linux 5.3+), which becomes readable the moment the process exits, so the
/// wait adds no polling delay; falls back to checking every millisecond.
pub fn wait_pid_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return !pid_alive(pid);
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        // No such process (ESRCH), or no pidfd support: poll /proc.
        while pid_alive(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        return true;
    }
    let fd = fd as libc::c_int;
    let exited = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and we pass a count
        // of one.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            break true;
        }
        if n == 0 || Instant::now() >= deadline {
            break !pid_alive(pid);
        }
        // EINTR: go round again.
    };
    // SAFETY: `fd` is the descriptor pidfd_open gave us, closed exactly once here.
    unsafe { libc::close(fd) };
    // The pidfd fires when the process exits; a zombie child of someone else may linger
    // in /proc for a moment, which is fine: it runs nothing.
    exited
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Raise this process's soft limit of open files to at least `want` if it is lower, as far
/// as the hard limit allows; the soft limit in force afterwards.
pub fn raise_open_files(want: libc::rlim_t) -> std::io::Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives across the
    // call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we pass, which lives across the
    // call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_an_exited_child_returns_at_once() {
        let mut c = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = c.id();
        c.wait().expect("wait");
        let t = Instant::now();
        assert!(wait_pid_exit(pid, Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!pid_alive(pid));
        assert!(pid_alive(std::process::id()));
        assert!(!wait_pid_exit(
            std::process::id(),
            Duration::from_millis(20)
        ));
    }

    #[test]
    fn the_open_file_limit_is_raised_never_lowered() {
        let now = raise_open_files(0).expect("getrlimit");
        assert!(now > 0);
        assert_eq!(raise_open_files(now).expect("same"), now, "never lowered");
        let raised = raise_open_files(now + 1).expect("setrlimit");
        assert!(raised >= now, "{raised} < {now}");
    }

    #[test]
    fn hex_and_random_bytes() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(random_bytes(32).unwrap().len(), 32);
    }
}
