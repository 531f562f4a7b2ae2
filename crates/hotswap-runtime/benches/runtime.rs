//! Criterion micro-benchmarks of the node: spawn + exit of one process, a message round
//! trip between two processes, and a module load + purge cycle.
//!
//! ```text
//! cargo bench -p hotswap-runtime --bench runtime
//! ```
//!
//! The side-by-side comparison with Erlang/OTP is the `compare` binary of `hotswap-bench`
//! (see `BENCHMARKS.md`). Every workload runs on a two-worker tokio runtime, driven from a
//! task on one of the workers.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hotswap_runtime::{Message, Node, NodeConfig, Pid};

/// `target/` (benches run from `target/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// The release build of `modules/bench_mod` (module `bench`), built with cargo once.
fn bench_mod() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = target_dir();
        let lib = target.join("release").join("libbench_mod.so");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--release", "-p", "bench_mod", "--target-dir"])
            .arg(&target)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) if lib.exists() => eprintln!(
                "building bench_mod failed, using the existing library:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(o) => panic!(
                "building bench_mod failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) if lib.exists() => {
                eprintln!("cannot run cargo ({e}), using the existing library")
            }
            Err(e) => panic!("cannot run cargo to build bench_mod: {e}"),
        }
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Run `f` as a task on a worker of `rt` and return its result.
fn on_worker<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async move { tokio::spawn(f).await.expect("bench task panicked") })
}

/// A node with module `bench` loaded.
fn node_with_bench(rt: &tokio::runtime::Runtime) -> Node {
    let lib = bench_mod();
    on_worker(rt, async move {
        let node = Node::start(NodeConfig::default()).expect("node starts");
        node.code().load(lib).await.expect("load bench_mod");
        node
    })
}

async fn wait_exited(node: &Node, target: u64) {
    while node.exited_count() < target {
        tokio::task::yield_now().await;
    }
}

fn spawn_exit(c: &mut Criterion) {
    let rt = runtime();
    let node = node_with_bench(&rt);
    c.bench_function("spawn_exit/module_process", |b| {
        b.iter_custom(|iters| {
            let node = node.clone();
            on_worker(&rt, async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let target = node.exited_count() + 1;
                    node.spawn("bench", "exit_now", &()).expect("spawn");
                    wait_exited(&node, target).await;
                }
                t.elapsed()
            })
        })
    });
    c.bench_function("spawn_exit/native_process", |b| {
        b.iter_custom(|iters| {
            let node = node.clone();
            on_worker(&rt, async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let target = node.exited_count() + 1;
                    node.spawn_native(|_ctx| async {}).expect("spawn");
                    wait_exited(&node, target).await;
                }
                t.elapsed()
            })
        })
    });
    on_worker(&rt, async move {
        node.stop(Duration::from_secs(5)).await;
    });
}

/// An echo process: every user message goes back to its sender; anything else stops it.
fn spawn_native_echo(node: &Node) -> Pid {
    node.spawn_native(|ctx| async move {
        loop {
            match ctx.recv().await {
                Message::User { from, data } => ctx.send_bytes(from, &data),
                _ => return,
            }
        }
    })
    .expect("spawn echo")
}

/// `iters` round trips from a native client process to `echo`; the elapsed time.
fn round_trips(rt: &tokio::runtime::Runtime, node: &Node, echo: Pid, iters: u64) -> Duration {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let t = Instant::now();
        for i in 0..iters {
            ctx.send_bytes(echo, &i.to_le_bytes());
            let _ = ctx.receive_bytes().await;
        }
        let _ = tx.send(t.elapsed());
    })
    .expect("spawn client");
    on_worker(rt, async move { rx.await.expect("client finished") })
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let node = node_with_bench(&rt);
    let native_echo = spawn_native_echo(&node);
    let module_echo = node.spawn("bench", "echo", &()).expect("spawn bench:echo");
    c.bench_function("round_trip/native_echo", |b| {
        b.iter_custom(|iters| round_trips(&rt, &node, native_echo, iters))
    });
    c.bench_function("round_trip/module_echo", |b| {
        b.iter_custom(|iters| round_trips(&rt, &node, module_echo, iters))
    });
    on_worker(&rt, async move {
        node.stop(Duration::from_secs(5)).await;
    });
}

fn load_purge(c: &mut Criterion) {
    let rt = runtime();
    let lib = bench_mod();
    let node = on_worker(&rt, async {
        Node::start(NodeConfig::default()).expect("node starts")
    });
    c.bench_function("code/load_delete_purge", |b| {
        b.iter_custom(|iters| {
            let node = node.clone();
            on_worker(&rt, async move {
                let t = Instant::now();
                for _ in 0..iters {
                    node.code().load(lib).await.expect("load");
                    node.code().delete("bench").await.expect("delete");
                    let r = node.code().purge("bench").await.expect("purge");
                    assert!(r.pinned.is_none(), "pinned: {:?}", r.pinned);
                }
                t.elapsed()
            })
        })
    });
    on_worker(&rt, async move {
        node.stop(Duration::from_secs(5)).await;
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = spawn_exit, round_trip, load_purge
}
criterion_main!(benches);
