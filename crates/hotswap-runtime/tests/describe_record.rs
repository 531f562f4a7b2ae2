//! Description records (`<library>.schema`, written by `compat::record_description`): a
//! load of a library with a valid record beside it compares the recorded description
//! instead of running the module's `describe`; a record that does not match the library's
//! bytes, or is not a valid record, is ignored and the load describes as without one.
//!
//! A test binary of its own: which path a load took is read from the load steps
//! (`load_steps`), which are recorded process-wide, so the tests here take turns.

#[allow(dead_code)]
#[path = "all/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use hotswap_runtime::compat::{self, Level};
use hotswap_runtime::{load_steps, CodeError, Node};
use support::{module, TempDir};

/// Loads record their steps process-wide: one test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Copies of fixture libraries in a directory of their own (records written beside them
/// never reach the shared fixtures).
fn copies(tmp: &TempDir, krates: &[&str]) -> Vec<PathBuf> {
    krates
        .iter()
        .map(|k| {
            let dst = tmp.0.join(format!("lib{k}.so"));
            std::fs::copy(module(k), &dst).expect("copy a fixture");
            dst
        })
        .collect()
}

/// The names of the steps of the loads `f` runs.
async fn steps_of<T>(f: impl std::future::Future<Output = T>) -> (T, Vec<&'static str>) {
    load_steps::record(true);
    let out = f.await;
    let steps = load_steps::take()
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
        .collect();
    load_steps::record(false);
    (out, steps)
}

/// Load `old`, then `new` over it (checked); the steps of the second load, and its result.
async fn load_over(
    old: &Path,
    new: &Path,
) -> (
    Result<hotswap_runtime::ModuleInfo, CodeError>,
    Vec<&'static str>,
) {
    let node = support::node();
    node.code().load(old).await.expect("load the old version");
    let r = steps_of(node.code().load(new)).await;
    node.stop(support::WAIT).await;
    r
}

/// Load `old`, then check `new` against it (nothing loaded): the check's report.
async fn check_over(old: &Path, new: &Path) -> hotswap_runtime::CheckReport {
    let node = support::node();
    node.code().load(old).await.expect("load the old version");
    let r = node.code().check(new).await.expect("check the new version");
    node.stop(support::WAIT).await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_record_is_used_instead_of_describe() {
    let _turn = TURN.lock().await;
    let tmp = TempDir::new("record-valid");
    let libs = copies(&tmp, &["count_server_v1", "count_server_v5"]);
    let (v1, v5) = (&libs[0], &libs[1]);

    // Without records: both versions run their describe at the load that compares them.
    let (r, steps) = load_over(v1, v5).await;
    r.expect("v5 reads v1's data");
    assert_eq!(
        steps.iter().filter(|s| **s == "describe").count(),
        2,
        "{steps:?}"
    );
    assert!(!steps.contains(&"description record"), "{steps:?}");
    let without = check_over(v1, v5).await;

    // Records written as the tools write them.
    for lib in &libs {
        let w = compat::record_description(lib).expect("record");
        assert_eq!(w.record, compat::record_path(lib));
        assert!(w.record.is_file(), "{}", w.record.display());
        assert_eq!(w.schema, compat::describe_file(lib).unwrap());
    }
    assert!(tmp.0.join("libcount_server_v5.so.schema").is_file());

    // With records: no describe ran, the recorded descriptions were compared.
    let (r, steps) = load_over(v1, v5).await;
    r.expect("v5 reads v1's data");
    assert!(!steps.contains(&"describe"), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|s| **s == "description record").count(),
        2,
        "{steps:?}"
    );
    assert!(steps.contains(&"compare"), "{steps:?}");
    // And the check's answer is the same.
    let with = check_over(v1, v5).await;
    assert_eq!(with.report, without.report);
    assert!(with.report.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_match_are_ignored() {
    let _turn = TURN.lock().await;
    let tmp = TempDir::new("record-bad");
    let libs = copies(&tmp, &["count_server_v1", "count_server_v5"]);
    let (v1, v5) = (&libs[0], &libs[1]);
    let good = {
        compat::record_description(v5).expect("record v5");
        std::fs::read(compat::record_path(v5)).unwrap()
    };
    let of_v1 = {
        compat::record_description(v1).expect("record v1");
        let b = std::fs::read(compat::record_path(v1)).unwrap();
        std::fs::remove_file(compat::record_path(v1)).unwrap();
        b
    };
    let mut wrong_version = good.clone();
    wrong_version[4] = 2;
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x55;
    // A library changed after its record was written (a rebuild in place).
    let mut rebuilt = std::fs::read(v5).unwrap();
    rebuilt.extend_from_slice(b"trailer");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("another library's record", of_v1),
        (
            "garbage",
            b"this is not a record at all, just some bytes".to_vec(),
        ),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() - 7].to_vec()),
        ("header only", good[..20].to_vec()),
        ("another format version", wrong_version),
        ("corrupt description", flipped),
    ];
    for (what, bytes) in cases {
        std::fs::write(compat::record_path(v5), &bytes).unwrap();
        let (r, steps) = load_over(v1, v5).await;
        r.unwrap_or_else(|e| panic!("{what}: the load fails: {e}"));
        assert!(
            steps.contains(&"describe") && !steps.contains(&"description record"),
            "{what}: {steps:?}"
        );
    }
    // The valid record of v5 beside a rebuilt v5 is stale.
    std::fs::write(compat::record_path(v5), &good).unwrap();
    let rebuilt_path = tmp.0.join("rebuilt.so");
    std::fs::write(&rebuilt_path, &rebuilt).unwrap();
    std::fs::write(compat::record_path(&rebuilt_path), &good).unwrap();
    let (r, steps) = load_over(v1, &rebuilt_path).await;
    r.expect("a stale record does not fail the load");
    assert!(
        steps.contains(&"describe") && !steps.contains(&"description record"),
        "stale: {steps:?}"
    );
    // The good record itself is used.
    let (r, steps) = load_over(v1, v5).await;
    r.unwrap();
    assert!(steps.contains(&"description record"), "{steps:?}");
}

/// seed 002's v4 cannot read v1's queued ticks: refused with records as without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_load_is_still_refused_with_records() {
    let _turn = TURN.lock().await;
    let tmp = TempDir::new("record-refused");
    let libs = copies(
        &tmp,
        &["count_server_v1", "count_server_v2", "count_server_v4"],
    );
    for lib in &libs {
        compat::record_description(lib).expect("record");
    }
    for old in &libs[..2] {
        let node: Node = support::node();
        node.code().load(old).await.unwrap();
        let (err, steps) = steps_of(node.code().load(&libs[2])).await;
        let err = err.expect_err("v4 is incompatible");
        let CodeError::Incompatible { report } = &err else {
            panic!("expected incompatible, got {err}")
        };
        assert!(
            report
                .incompatible
                .iter()
                .any(|f| f.callback == "handle_info" && f.level == Level::Upgrade),
            "{}",
            report.to_text()
        );
        assert!(!steps.contains(&"describe"), "{steps:?}");
        assert!(steps.contains(&"description record"), "{steps:?}");
        assert_eq!(
            node.code().is_loaded("count_server"),
            Some(std::fs::canonicalize(old).unwrap())
        );
        node.stop(support::WAIT).await;
    }
}

#[test]
fn record_description_errors_name_the_file() {
    let tmp = TempDir::new("record-errors");
    let e = compat::record_description(&tmp.0.join("libnothing.so")).unwrap_err();
    assert!(e.to_string().contains("libnothing.so"), "{e}");
    let text = tmp.0.join("not-a-module.so");
    std::fs::write(&text, "hello").unwrap();
    let e = compat::record_description(&text).unwrap_err();
    assert!(e.to_string().contains("not-a-module.so"), "{e}");
    assert!(!compat::record_path(&text).exists());
    // A directory that cannot take the record: the library is fine, the write fails.
    let ro = tmp.0.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let lib = ro.join("libcount_server_v1.so");
    std::fs::copy(module("count_server_v1"), &lib).unwrap();
    let mut p = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o555);
    std::fs::set_permissions(&ro, p).unwrap();
    let r = compat::record_description(&lib);
    let mut p = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&ro, p).unwrap();
    // (root may write anyway)
    if let Err(e) = r {
        assert!(matches!(e, compat::DescribeError::Write { .. }), "{e}");
        assert!(e.to_string().contains(".schema"), "{e}");
    }
}

/// Write the description record of every library under `root/lib`.
fn record_all(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root.join("lib")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "so") {
                out.push(compat::record_description(&f).expect("record").record);
            }
        }
    }
    out
}

/// A release package with description records: unpack copies them with their libraries,
/// an upgrade whose check compares them passes (and one that cannot read the old data is
/// still refused), and removing a release removes its records with its libraries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_packages_carry_records_and_upgrades_pass() {
    use hotswap_runtime::release::{ReleaseError, UpgradeOptions};
    let _turn = TURN.lock().await;
    let d = TempDir::new("record-rel");
    support::write_release(
        &d.0,
        "1.0.0",
        &[
            ("rel_srv", "1", "rel_srv_v1", &[]),
            ("count_server", "1", "count_server_v1", &[]),
        ],
        "",
    );
    assert_eq!(record_all(&d.0).len(), 2);
    let node = support::boot(&d.0, "1.0.0").await;
    let pkgs = TempDir::new("record-rel-pkgs");
    let pack = |vsn: &str, count: &str, krate: &str| {
        let root = pkgs.0.join(vsn);
        support::write_release(
            &root,
            vsn,
            &[
                ("rel_srv", "2", "rel_srv_v2", &[]),
                ("count_server", count, krate, &[]),
            ],
            "",
        );
        assert_eq!(record_all(&root).len(), 2);
        root
    };
    // 2.0.0: count_server 4 cannot read the ticks version 1 queued: refused with records
    // as without.
    let p2 = pack("2.0.0", "4", "count_server_v4");
    assert_eq!(node.releases().unpack(&p2).await.unwrap(), "2.0.0");
    let rec4 = d.0.join("lib/count_server_v4/libcount_server_v4.so.schema");
    assert!(rec4.is_file(), "unpack copies the record");
    assert_eq!(
        std::fs::read(&rec4).unwrap(),
        std::fs::read(p2.join("lib/count_server_v4/libcount_server_v4.so.schema")).unwrap()
    );
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("count_server 4 is refused");
    assert!(matches!(e, ReleaseError::Incompatible { .. }), "{e}");
    let vsn = |node: &Node| {
        node.code()
            .module("count_server")
            .unwrap()
            .current
            .unwrap()
            .version
    };
    assert_eq!(vsn(&node), "1");
    // 3.0.0: count_server 5 reads version 1's data: the upgrade passes.
    let p3 = pack("3.0.0", "5", "count_server_v5");
    assert_eq!(node.releases().unpack(&p3).await.unwrap(), "3.0.0");
    assert!(d
        .0
        .join("lib/count_server_v5/libcount_server_v5.so.schema")
        .is_file());
    node.releases()
        .upgrade("3.0.0", UpgradeOptions::default())
        .await
        .expect("the upgrade passes with records");
    assert_eq!(vsn(&node), "5");
    // Removing 2.0.0 removes its library and its record, not those 3.0.0 shares.
    let removed = node.releases().remove("2.0.0").await.unwrap();
    assert!(removed.contains(&rec4), "{removed:?}");
    assert!(
        !rec4.exists()
            && !d
                .0
                .join("lib/count_server_v4/libcount_server_v4.so")
                .exists()
    );
    assert!(d.0.join("lib/rel_srv_v2/librel_srv_v2.so.schema").is_file());
    node.stop(support::WAIT).await;
}
