//! The runtime a node runs on (`hotswap_runtime::sched`, issue 16): workers spin briefly
//! before parking, yet a node at rest uses no CPU and a process that never awaits does not
//! starve the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotswap::Ctx;
use hotswap_runtime::Pid;

use crate::support::{self, module};

/// A 2-worker runtime set up as `hotswap start` sets it up, its worker threads named
/// `name` (so that their CPU time can be told from other tests' threads).
fn tuned_runtime(name: &str) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all().thread_name(name);
    hotswap_runtime::sched::tune(&mut b);
    b.build().expect("runtime")
}

/// CPU time (user + system) used so far by this OS process's threads named `name`, from
/// `/proc/self/task/*/stat`.
fn threads_cpu(name: &str) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(stat) = std::fs::read_to_string(t.expect("task entry").path().join("stat")) else {
            continue; // the thread exited meanwhile
        };
        // "tid (comm) state ppid ...": the name is between the first '(' and the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        // After ')': state is field 3, utime and stime are fields 14 and 15.
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| rest.get(n - 3).and_then(|x| x.parse::<u64>().ok());
        ticks += field(14).unwrap_or(0) + field(15).unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// After real work (1 000 processes pinged, so both workers run and spin), an idle window
/// of one second costs the workers next to no CPU: spinning stops soon after the work does.
#[test]
fn idle_node_uses_no_cpu() {
    const NAME: &str = "hs-idle-cpu";
    let rt = tuned_runtime(NAME);
    let (busy, idle) = rt.block_on(async {
        tokio::spawn(async {
            let node = support::node();
            node.code().load(module("seed000_v1")).await.unwrap();
            let pids: Vec<Pid> = (0..1_000)
                .map(|_| node.spawn("seed000", "do_loop", &()).unwrap())
                .collect();
            let me = node.external();
            let c0 = threads_cpu(NAME);
            for round in 0..20 {
                for p in &pids {
                    me.send(*p, &support::Req::Ping(me.pid()));
                }
                for _ in &pids {
                    me.recv(support::WAIT)
                        .await
                        .unwrap_or_else(|| panic!("pongs missing in round {round}"));
                }
            }
            let c1 = threads_cpu(NAME);
            // The idle window: nothing runs but this task's timer.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c2 = threads_cpu(NAME);
            node.stop(Duration::from_secs(5)).await;
            (c1 - c0, c2 - c1)
        })
        .await
        .expect("test task")
    });
    // Two workers spinning through the window would use ~2 s; parked, ~0 (the clock ticks
    // at 10 ms here). 100 ms is far from both.
    assert!(
        idle < Duration::from_millis(100),
        "an idle node used {idle:?} of CPU in 1 s (the work before it: {busy:?})"
    );
}

/// A process that never awaits holds one worker, and the other still serves everyone
/// else: with spinning workers, a message from outside must still reach a worker that can
/// run its receiver.
///
/// The node runs on the tuned runtime; the test itself on a runtime of its own, so that no
/// wake of the test's lands on the busy worker. (A task woken *by* a process that then
/// never awaits waits in that worker's LIFO slot, which tokio's other workers cannot steal:
/// a limit of tokio's, spinning or not, so the busy process here wakes nobody.)
#[test]
fn busy_process_does_not_starve_others() {
    let rt = tuned_runtime("hs-busy");
    let node = rt.block_on(async {
        let node = support::node();
        node.code().load(module("seed000_v1")).await.unwrap();
        node
    });
    let (started, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (b, s) = (started.clone(), stop.clone());
    node.spawn_native(move |_ctx: Ctx| async move {
        b.store(true, Ordering::Release);
        // Never awaits until told to stop.
        while !s.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    })
    .unwrap();
    while !started.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let test_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    test_rt.block_on(async {
        let me = node.external();
        for _ in 0..50 {
            let p = node.spawn("seed000", "do_loop", &()).unwrap();
            assert_eq!(support::ping(&me, p).await.version, "1");
        }
    });
    stop.store(true, Ordering::Release);
    rt.block_on(node.stop(Duration::from_secs(5)));
}

/// Ports' sockets are watched by spinning workers (issue 13): after each echo, the worker
/// that ran out of work spins on the sockets instead of sleeping, and the next request
/// ends that spin. Yet once the traffic stops, a node with its connections still open
/// parks every worker: an idle second costs next to no CPU.
#[test]
fn sockets_watched_while_spinning_and_idle_connections_use_no_cpu() {
    use std::io::{Read, Write};
    const NAME: &str = "hs-io-spin";
    if !hotswap_runtime::sched::io_spin() {
        eprintln!("HOTSWAP_IO_SPIN=0: the spin on sockets is off, nothing to test");
        return;
    }
    let rt = tuned_runtime(NAME);
    let (node, addr) = rt.block_on(async {
        tokio::spawn(async {
            let node = support::node();
            node.code().load(module("port_echo_v1")).await.unwrap();
            let (_, (_, addr, ..)) = crate::ports::start_echo(&node).await;
            (node, addr)
        })
        .await
        .expect("test task")
    });
    let before = hotswap_runtime::sched::io_spin_stats();
    // A blocking client on this thread: 2 000 ping-pongs of a 4-byte-length frame.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(support::WAIT)).unwrap();
    let frame = [0, 0, 0, 2, b'h', b'i'];
    let mut back = [0u8; 7]; // length 3: the version byte, then "hi"
    for i in 0..2_000 {
        s.write_all(&frame).unwrap();
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo {i}: {e}"));
        assert_eq!(&back, b"\0\0\0\x03\x01hi");
    }
    let after = hotswap_runtime::sched::io_spin_stats();
    assert!(
        after.ended_ready > before.ended_ready,
        "no request ended a spin on the sockets: {before:?} -> {after:?}"
    );
    // The idle window, the connection open.
    let c1 = threads_cpu(NAME);
    std::thread::sleep(Duration::from_secs(1));
    let idle = threads_cpu(NAME) - c1;
    assert!(
        idle < Duration::from_millis(100),
        "a node with an idle open connection used {idle:?} of CPU in 1 s"
    );
    drop(s);
    rt.block_on(node.stop(Duration::from_secs(5)));
}
