//! Seed 004 (Go plugins): what Go gets wrong, done right. Each loaded version has its own
//! statics; a library rebuilt at the same path loads as the new version (glibc would hand
//! back the old handle for a reused path or inode); an incompatible build is refused with an
//! error that says what differs, and nothing running is disturbed.

use hotswap_runtime::{CodeError, LoadError};

use crate::support::{self, module, ping, Req, TempDir, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_versions_have_separate_statics() {
    let node = support::node();
    let me = node.external();
    // Two loads of the very same file are two instances with separate statics.
    node.code().load(module("seed000_v1")).await.unwrap();
    let a = node.spawn("seed000", "do_loop", &()).unwrap();
    for i in 1..=3 {
        assert_eq!(ping(&me, a).await.pings, i);
    }
    node.code().load(module("seed000_v1")).await.unwrap();
    let b = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(
        ping(&me, b).await.pings,
        1,
        "the new instance starts with fresh statics"
    );
    assert_eq!(
        ping(&me, a).await.pings,
        4,
        "the old instance keeps its own"
    );
    let m = node.code().module("seed000").unwrap();
    let (cur, old) = (m.current.unwrap(), m.old.unwrap());
    assert_ne!(cur.instance, old.instance);
    assert_ne!(
        cur.file, old.file,
        "each instance maps its own write-once copy"
    );
    assert_eq!(cur.hash, old.hash, "same content");
    me.send(a, &Req::Stop);
    me.send(b, &Req::Stop);

    // A library rebuilt at the same build path (cargo replaces the file: new inode) loads
    // as the new version, while the old one keeps running from its own copy.
    let dir = TempDir::new("seed004");
    let build_path = dir.0.join("libseed000.so");
    std::fs::copy(module("seed000_v1"), &build_path).unwrap();
    let node = support::node();
    let me = node.external();
    node.code().load(&build_path).await.unwrap();
    let old_pid = node.spawn("seed000", "do_loop", &()).unwrap();
    let tmp = dir.0.join("libseed000.so.tmp");
    std::fs::copy(module("seed000_v2"), &tmp).unwrap();
    std::fs::rename(&tmp, &build_path).unwrap();
    let info = node.code().load(&build_path).await.unwrap();
    assert_eq!(
        info.current.unwrap().version,
        "2",
        "same path, new file: the new version"
    );
    let new_pid = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(ping(&me, new_pid).await.version, "2");
    assert_eq!(ping(&me, old_pid).await.version, "1");

    // Overwritten in place (same inode, as `cp` does): still safe, because the node maps
    // its own copy, never the build output.
    me.send(old_pid, &Req::Stop);
    let mon = me.monitor(old_pid);
    assert!(me.down(mon, WAIT).await.is_some());
    assert!(node.code().soft_purge("seed000").await.unwrap());
    std::fs::write(&build_path, std::fs::read(module("seed000_v1")).unwrap()).unwrap();
    assert_eq!(
        ping(&me, new_pid).await.version,
        "2",
        "the running version is untouched"
    );
    let info = node.code().load(&build_path).await.unwrap();
    assert_eq!(info.current.unwrap().version, "1");
    assert_eq!(ping(&me, new_pid).await.version, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_incompatible_build_is_refused_with_clear_error() {
    let node = support::node();
    let me = node.external();
    node.code()
        .load(module("seed002_counter_v1"))
        .await
        .unwrap();
    let arg = support::CounterArg {
        reporter: me.pid(),
        period_ms: 5,
    };
    let pid = node.spawn("counter", "count", &arg).unwrap();
    let before = node.code().module("counter").unwrap();

    // A `counter` built against another hotswap ABI (Go: "plugin was built with a different
    // version of package"): refused before any of its code runs, saying what differs.
    let err = node
        .code()
        .load(module("bad_abi_mismatch"))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            CodeError::Load(LoadError::AbiMismatch {
                module_abi: 999,
                node_abi: hotswap_abi::ABI_VERSION,
                ..
            })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("ABI 999")
            && text.contains(&format!("ABI {}", hotswap_abi::ABI_VERSION))
            && text.contains("rebuild"),
        "{text}"
    );

    // Nothing changed: same current version, no old version, the counter still counts.
    let after = node.code().module("counter").unwrap();
    assert_eq!(before, after);
    assert!(after.old.is_none());
    for _ in 0..2 {
        let m = me
            .recv_match(WAIT, |m| m.decode::<support::Count>().is_ok())
            .await;
        assert!(m.is_some(), "the running counter keeps counting");
    }
    assert!(node.is_alive(pid));
}
