//! Code server operations and results (spec §1.2), and node stop unmapping every version.

use std::time::Duration;

use hotswap_runtime::{CodeError, ExitReason, SpawnError};

use crate::support::{self, module, ping, Req, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_server_operations_follow_erlang() {
    let node = support::node();
    let me = node.external();
    let v1 = module("seed000_v1");
    assert_eq!(node.code().is_loaded("seed000"), None);
    assert!(matches!(
        node.code().purge("seed000").await,
        Err(CodeError::NotLoaded { .. })
    ));
    assert!(matches!(
        node.spawn("seed000", "loop", &()),
        Err(SpawnError::ModuleNotLoaded { .. })
    ));

    node.code().load(&v1).await.unwrap();
    assert_eq!(
        node.code().is_loaded("seed000"),
        Some(std::fs::canonicalize(&v1).unwrap())
    );
    assert_eq!(node.code().all_loaded().len(), 1);
    let err = node.spawn("seed000", "nope", &()).unwrap_err();
    assert!(
        err.to_string().contains("exports no function `nope`")
            && err.to_string().contains("do_loop"),
        "{err}"
    );

    // purge with no old code: nothing killed (`false` in Erlang).
    let r = node.code().purge("seed000").await.unwrap();
    assert!(!r.killed_any() && r.version.is_none());

    // delete: current becomes old, the module is "not loaded", running processes go on.
    let pid = node.spawn("seed000", "do_loop", &()).unwrap();
    node.code().delete("seed000").await.unwrap();
    assert_eq!(node.code().is_loaded("seed000"), None);
    assert!(node.code().all_loaded().is_empty());
    assert!(matches!(
        node.spawn("seed000", "do_loop", &()),
        Err(SpawnError::ModuleNotLoaded { .. })
    ));
    assert!(node.code().check_process_code(pid, "seed000"));
    assert_eq!(ping(&me, pid).await.version, "1");
    assert!(matches!(
        node.code().delete("seed000").await,
        Err(CodeError::NotLoaded { .. })
    ));

    // A plain load while old code exists is refused; a purging one kills and proceeds.
    assert!(matches!(
        node.code().load(&v1).await,
        Err(CodeError::NotPurged { .. })
    ));
    let mon = me.monitor(pid);
    node.code()
        .load_purging(module("seed000_v2"))
        .await
        .unwrap();
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));

    // delete is refused while old code exists.
    node.code().load(&v1).await.unwrap();
    let err = node.code().delete("seed000").await.unwrap_err();
    assert!(
        matches!(err, CodeError::OldCodeExists { .. })
            && err.to_string().contains("must be purged"),
        "{err}"
    );

    // purge kills only the processes of the old version and reports them.
    let on_old = node.spawn("seed000", "do_loop", &()).unwrap();
    node.code().purge("seed000").await.unwrap();
    node.code().load(module("seed000_v2")).await.unwrap();
    let on_new = node.spawn("seed000", "do_loop", &()).unwrap();
    let r = node.code().purge("seed000").await.unwrap();
    assert_eq!(r.killed, vec![on_old]);
    assert!(r.killed_any() && r.pinned.is_none());
    assert_eq!(r.version.as_deref(), Some("1"));
    assert_eq!(ping(&me, on_new).await.version, "2");
    assert_eq!(
        node.code().freed_count(),
        3,
        "all three purged versions were unmapped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stop_kills_processes_and_unmaps_every_version() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("seed000_v1")).await.unwrap();
    node.code().load(module("seed000_v2")).await.unwrap();
    node.code()
        .load(module("seed002_counter_v1"))
        .await
        .unwrap();
    let a = node.spawn("seed000", "do_loop", &()).unwrap();
    let arg = support::CounterArg {
        reporter: me.pid(),
        period_ms: 5,
    };
    node.spawn("counter", "count", &arg).unwrap();
    me.send(a, &Req::Ping(me.pid()));
    let dir = node.code().code_dir().to_path_buf();
    assert!(dir.exists());
    let report = node.stop(Duration::from_secs(5)).await;
    assert_eq!(report.killed, 2);
    assert!(report.stuck.is_empty());
    assert!(
        report.purges.iter().all(|p| p.pinned.is_none()),
        "{:?}",
        report.purges
    );
    assert_eq!(node.process_count(), 0);
    assert!(node.code().modules().is_empty());
    assert_eq!(node.code().freed_count(), 3);
    assert!(!dir.exists(), "the node's code directory is removed");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(dir.to_str().unwrap()),
        "no mapping of this node's libraries is left"
    );
    assert!(matches!(
        node.spawn("seed000", "do_loop", &()),
        Err(SpawnError::NodeStopping)
    ));
}

/// Loading the same bytes again after a purge reuses the unmapped copy (no new file), and
/// the new instance still starts from fresh statics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_identical_build_reuses_copy_with_fresh_statics() {
    let node = support::node();
    let me = node.external();
    let v1 = module("seed000_v1");
    node.code().load(&v1).await.unwrap();
    let a = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(ping(&me, a).await.pings, 1);
    assert_eq!(ping(&me, a).await.pings, 2);
    let first = node.code().module("seed000").unwrap().current.unwrap();
    me.send(a, &Req::Stop);
    node.code().delete("seed000").await.unwrap();
    let mon = me.monitor(a);
    assert!(me.down(mon, WAIT).await.is_some());
    assert_eq!(node.code().purge("seed000").await.unwrap().pinned, None);
    let files_before = count_files(node.code().code_dir());

    node.code().load(&v1).await.unwrap();
    let second = node.code().module("seed000").unwrap().current.unwrap();
    assert_eq!(second.file, first.file, "the unmapped copy was reused");
    assert_ne!(second.instance, first.instance);
    assert_eq!(
        count_files(node.code().code_dir()),
        files_before,
        "no new copy written"
    );
    let b = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(
        ping(&me, b).await.pings,
        1,
        "a fresh instance: statics start over"
    );

    // While that instance is mapped, loading the same bytes again needs a new copy.
    node.code().load(&v1).await.unwrap();
    let third = node.code().module("seed000").unwrap().current.unwrap();
    assert_ne!(third.file, second.file);
    let c = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(ping(&me, c).await.pings, 1);
    assert_eq!(ping(&me, b).await.pings, 2);
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name() == ".ahead" {
            continue; // the blank made for the next load, in the background
        }
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

/// A load of a new build writes its copy into the blank file prepared after the previous
/// load: a file no version used before (its own inode), holding exactly the inspected bytes,
/// read-only; and the next load's blank is prepared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_writes_copy_into_blank_prepared_ahead() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let node = support::node();
    node.code().load(module("seed000_v1")).await.unwrap();
    let ready = || node.code().prepared_for_next_load();
    tokio::time::timeout(WAIT, node.code().next_load_prepared())
        .await
        .expect("the preparation ends");
    assert!(ready(), "nothing prepared");
    let ahead = node.code().code_dir().join(".ahead");
    let blanks: Vec<_> = std::fs::read_dir(&ahead).unwrap().flatten().collect();
    assert_eq!(blanks.len(), 1, "{blanks:?}");
    let blank_ino = blanks[0].metadata().unwrap().ino();
    let first = node.code().module("seed000").unwrap().current.unwrap();

    let info = node.code().load(module("seed000_v2")).await.unwrap();
    let cur = info.current.unwrap();
    assert_eq!(cur.version, "2");
    let meta = std::fs::metadata(&cur.file).unwrap();
    assert_eq!(meta.ino(), blank_ino, "the copy is the blank made ahead");
    assert_ne!(meta.ino(), std::fs::metadata(&first.file).unwrap().ino());
    assert_eq!(
        std::fs::read(&cur.file).unwrap(),
        std::fs::read(module("seed000_v2")).unwrap(),
        "exactly the source's bytes, nothing of the blank's larger size left"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o444, "read-only");
    tokio::time::timeout(WAIT, node.code().next_load_prepared())
        .await
        .expect("the preparation ends");
    assert!(ready(), "nothing prepared again");
    let dir = node.code().code_dir().to_path_buf();
    node.stop(Duration::from_secs(5)).await;
    assert!(
        !dir.exists(),
        "the prepared blank went with the code directory"
    );
}

/// Starting a node outside a tokio runtime is a clear error, not a panic.
#[test]
fn node_start_outside_a_runtime_is_a_clear_error() {
    let err = hotswap_runtime::Node::start(hotswap_runtime::NodeConfig::default()).unwrap_err();
    assert!(err.to_string().contains("inside a tokio runtime"), "{err}");
}
