//! Smoke checks of the supervisor loop with the gs_test fixture.

use std::time::Duration;

use hotswap_runtime::supervisor::{ChildPid, ChildSpec, Shutdown, Spec, Strategy};
use hotswap_runtime::{ExitReason, Message};

use crate::gs::{self as g, Event};
use crate::support::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sup_smoke_restart_and_stop() {
    let node = g::node().await;
    let me = node.external();
    let mut a = g::arg(&me);
    a.trap_exit = true;
    let spec = Spec::new(Strategy::OneForOne)
        .intensity(5)
        .child(
            ChildSpec::server("a", "gs_test", &a)
                .shutdown(Shutdown::Timeout(Duration::from_secs(1))),
        )
        .child(ChildSpec::server("b", "gs_test", &a))
        .child(ChildSpec::server("c", "gs_test", &a).shutdown(Shutdown::BrutalKill));
    let sup = node
        .start_supervisor(spec, Some("smoke_sup"))
        .await
        .unwrap();
    let kids = node.supervisor().which_children(sup).await.unwrap();
    assert_eq!(kids.len(), 3);
    assert_eq!(kids[0].id.as_deref(), Some("c"));
    let ChildPid::Running(b) = kids[1].pid else {
        panic!()
    };
    let mon = me.monitor(b);
    node.exit(b, ExitReason::Kill);
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    // wait until restarted
    let t = std::time::Instant::now();
    let b2 = loop {
        let kids = node.supervisor().which_children(sup).await.unwrap();
        if let ChildPid::Running(p) = kids[1].pid {
            if p != b {
                break p;
            }
        }
        assert!(t.elapsed() < WAIT);
        tokio::task::yield_now().await;
    };
    assert_ne!(b, b2);
    let c = node.supervisor().count_children(sup).await.unwrap();
    assert_eq!((c.specs, c.active, c.workers), (3, 3, 3));
    let smon = me.monitor(sup);
    node.exit(sup, ExitReason::Shutdown);
    assert_eq!(me.down(smon, WAIT).await, Some(ExitReason::Shutdown));
    // a and b ran terminate (trapping, timeout shutdown), c was brutally killed
    let mut terms = 0;
    while let Some(m) = me
        .recv_match(Duration::from_millis(300), |m| {
            matches!(m, Message::User { .. })
        })
        .await
    {
        if let Ok(Event::Terminated { reason, .. }) = m.decode::<Event>() {
            assert_eq!(reason, "shutdown");
            terms += 1;
        }
    }
    assert_eq!(terms, 2);
    assert!(node.whereis("smoke_sup").is_none());
    assert_eq!(node.process_count(), 1, "{:?}", node.processes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sup_smoke_stop_10k_timing() {
    let node = g::node().await;
    let me = node.external();
    let a = g::arg(&me);
    let mut spec = Spec::new(Strategy::OneForOne);
    for i in 0..10_000 {
        spec = spec.child(ChildSpec::server(format!("w{i}"), "gs_test", &a));
    }
    let t = std::time::Instant::now();
    let sup = node.start_supervisor(spec, None).await.unwrap();
    eprintln!("start 10k: {:?}", t.elapsed());
    let smon = me.monitor(sup);
    let t = std::time::Instant::now();
    node.exit(sup, ExitReason::Shutdown);
    assert_eq!(me.down(smon, WAIT).await, Some(ExitReason::Shutdown));
    eprintln!("stop 10k: {:?}", t.elapsed());
}
