//! Soak: load→purge cycles of a module that uses `thread_local!` with a destructor,
//! `std::thread::current()` and `println!`, then the worker threads exit.
//!
//! The work runs in a child process (this test binary re-run on one ignored test), so that
//! its RSS is not mixed with other tests' and a crash at thread exit fails this test with a
//! clear message instead of killing the whole test run.

use std::process::Command;
use std::time::Duration;

use hotswap_runtime::{Node, NodeConfig};

const CYCLES: usize = 1000;
const WARMUP: usize = 50;
const CHILD_ENV: &str = "HOTSWAP_SOAK_CHILD";

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

fn maps_lines(filter: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(filter))
        .count()
}

#[test]
fn purge_cycles_return_memory() {
    let lib = crate::support::module("soak");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "soak::soak_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &lib)
        .output()
        .expect("run the soak child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the soak child failed ({}); a crash here is the node dying at thread exit.\nstderr:\n{stderr}\nstdout tail:\n{}",
        out.status,
        stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SOAK "))
        .expect("the child reports its figures");
    println!("{line}");
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("cycles") as usize, CYCLES);
    assert_eq!(
        field("freed") as usize,
        CYCLES,
        "every version was unmapped: {line}"
    );
    assert_eq!(field("pinned"), 0.0, "{line}");
    assert_eq!(
        field("code_maps_end"),
        0.0,
        "no mapping of any version is left: {line}"
    );
    assert!(
        field("maps_end") <= field("maps_base") + 8.0,
        "mappings back to the baseline: {line}"
    );
    let per_version = field("rss_per_version_bytes");
    assert!(
        per_version <= 4096.0,
        "RSS grew {per_version} bytes per version (limit 4 KB): {line}"
    );
    // Count occurrences, not line starts: the harness's own "test ... " prefix can share a
    // line with the first print.
    let printed = stdout.matches("soak: worker").count();
    assert_eq!(printed, CYCLES, "every version's println! reached stdout");
}

/// The child half of [`purge_cycles_return_memory`]; does nothing unless run by it.
#[test]
#[ignore = "run by purge_cycles_return_memory in a child process"]
fn soak_child_process() {
    let Some(lib) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let code_dir = std::env::temp_dir().join(format!("hotswap-soak-{}", std::process::id()));
    let (base, freed, pinned) = rt.block_on(async {
        let node = Node::start(NodeConfig {
            code_dir: Some(code_dir.clone()),
            purge_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .unwrap();
        let me = node.external();
        let mut base = (0, 0);
        for i in 0..CYCLES {
            if i == WARMUP {
                base = (rss_kb(), maps_lines(""));
            }
            node.code().load(&lib).await.expect("load soak");
            let (pid, mon) = me.spawn_monitor("soak", "work", &me.pid()).expect("spawn");
            assert_eq!(
                me.receive::<String>(Duration::from_secs(10))
                    .await
                    .as_deref(),
                Some("done")
            );
            assert!(
                me.down(mon, Duration::from_secs(10)).await.is_some(),
                "{pid} exits"
            );
            node.code().delete("soak").await.expect("delete");
            let r = node.code().purge("soak").await.expect("purge");
            assert_eq!(r.pinned, None, "cycle {i}: {r:?}");
        }
        let freed = node.code().freed_count();
        let pinned = node.code().pinned().len();
        (base, freed, pinned)
    });
    // The worker threads that ran every version's thread-local code exit here.
    drop(rt);
    let rss_end = rss_kb();
    let maps_end = maps_lines("");
    let code_maps_end = maps_lines(code_dir.to_str().unwrap());
    let per_version = (rss_end.saturating_sub(base.0) * 1024) as f64 / (CYCLES - WARMUP) as f64;
    let _ = std::fs::remove_dir_all(&code_dir);
    println!(
        "SOAK cycles={CYCLES} freed={freed} pinned={pinned} rss_base_kb={} rss_end_kb={rss_end} rss_per_version_bytes={per_version:.0} maps_base={} maps_end={maps_end} code_maps_end={code_maps_end} seconds={:.1}",
        base.0,
        base.1,
        started.elapsed().as_secs_f64()
    );
}
