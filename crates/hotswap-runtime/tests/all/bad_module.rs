//! Bad input: every broken module gives a clear error or a safe pin, and the node and every
//! other process keep running.

use std::time::Duration;

use hotswap_runtime::{CodeError, ExitReason, ExternalProcess, LoadError, Message, Node, Pid};

use crate::support::{self, module, panic_abort_module, ping, TempDir, WAIT};

/// A process running `seed000` v1 that must stay alive through every failure.
async fn bystander(node: &Node) -> Pid {
    node.code().load(module("seed000_v1")).await.unwrap();
    node.spawn("seed000", "do_loop", &()).unwrap()
}

async fn assert_unharmed(node: &Node, me: &ExternalProcess, pid: Pid) {
    assert_eq!(
        ping(me, pid).await.version,
        "1",
        "the bystander still answers"
    );
    assert!(node.is_alive(pid));
}

async fn refused(path: impl AsRef<std::path::Path>) -> (LoadError, String) {
    let node = support::node();
    let me = node.external();
    let pid = bystander(&node).await;
    let before = node.code().modules();
    let err = match node.code().load(path).await {
        Err(CodeError::Load(e)) => e,
        other => panic!("expected a load error, got {other:?}"),
    };
    let text = err.to_string();
    assert_eq!(node.code().modules(), before, "nothing loaded or changed");
    assert_unharmed(&node, &me, pid).await;
    let good = node.code().load(module("seed002_counter_v1")).await;
    assert!(
        good.is_ok(),
        "a good load after the refusal works: {good:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(node.code().code_dir().join(".incoming"))
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "the refused copy was removed: {leftovers:?}"
    );
    (err, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_missing_file() {
    let (e, text) = refused("/nonexistent/libnothing.so").await;
    assert!(matches!(e, LoadError::NoFile { .. }), "{e:?}");
    assert!(
        text.contains("/nonexistent/libnothing.so") && text.contains("no such module file"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_not_an_elf() {
    let dir = TempDir::new("notelf");
    let p = dir.0.join("libtext.so");
    std::fs::write(&p, "this is a text file, not a library\n").unwrap();
    let (e, text) = refused(&p).await;
    assert!(matches!(e, LoadError::NotElf { .. }), "{e:?}");
    assert!(
        text.contains("not a shared library") && text.contains("cdylib"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_directory_or_empty_file() {
    let dir = TempDir::new("dir");
    let (e, text) = refused(&dir.0).await;
    assert!(matches!(e, LoadError::Io { .. }), "{e:?}");
    assert!(text.contains(&dir.0.display().to_string()), "{text}");
    let empty = dir.0.join("libempty.so");
    std::fs::write(&empty, b"").unwrap();
    let (e, text) = refused(&empty).await;
    assert!(matches!(e, LoadError::NotElf { .. }), "{e:?}");
    assert!(text.contains("no ELF magic"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_truncated_elf() {
    let dir = TempDir::new("trunc");
    let bytes = std::fs::read(module("seed000_v1")).unwrap();
    for cut in [40, 4096, bytes.len() / 2, bytes.len() - 100] {
        let p = dir.0.join(format!("libcut{cut}.so"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let (e, text) = refused(&p).await;
        assert!(
            matches!(e, LoadError::Truncated { .. }),
            "cut at {cut}: {e:?}"
        );
        assert!(text.contains("truncated"), "{text}");
    }
}

/// Compile C `source` with the system C compiler (`cc`) into `dir/out`, with `args`.
fn cc(dir: &std::path::Path, out: &str, source: &str, args: &[&str]) -> std::path::PathBuf {
    let src = dir.join(format!("{out}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(out);
    let o = std::process::Command::new("cc")
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed by this test");
    assert!(
        o.status.success(),
        "cc {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// C source whose ELF constructor creates the file `marker`.
fn c_with_constructor(marker: &std::path::Path, rest: &str) -> String {
    format!(
        r#"#include <stdio.h>
__attribute__((constructor)) static void hotswap_test_ctor(void) {{
    FILE *f = fopen("{}", "w");
    if (f) {{ fputs("the constructor ran\n", f); fclose(f); }}
}}
{rest}
"#,
        marker.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_foreign_library_code_never_runs() {
    let dir = TempDir::new("foreign");
    let marker = dir.0.join("constructor-ran");
    let lib = |name: &str, rest: &str| {
        cc(
            &dir.0,
            name,
            &c_with_constructor(&marker, rest),
            &["-shared", "-fPIC", "-O1"],
        )
    };

    // A plain C library: no descriptor at all.
    let plain = lib("libforeign.so", "int foreign_answer(void) { return 42; }");
    let (e, text) = refused(&plain).await;
    assert!(matches!(e, LoadError::NoDescriptor { .. }), "{e:?}");
    assert!(
        text.contains("HOTSWAP_MODULE_DESCRIPTOR")
            && text.contains("before any of its code ran")
            && text.contains("hotswap::module!"),
        "{text}"
    );
    assert!(
        !marker.exists(),
        "the library's constructor ran in the node"
    );

    // One that happens to export data under the descriptor's name, and one a function.
    let data = lib(
        "libforeign_data.so",
        "const char HOTSWAP_MODULE_DESCRIPTOR[64] = \"not a hotswap descriptor\";",
    );
    let (e, text) = refused(&data).await;
    assert!(matches!(e, LoadError::BadDescriptor { .. }), "{e:?}");
    assert!(text.contains("wrong magic number"), "{text}");
    assert!(
        !marker.exists(),
        "the library's constructor ran in the node"
    );
    let func = lib(
        "libforeign_fn.so",
        "int HOTSWAP_MODULE_DESCRIPTOR(void) { return 1; }",
    );
    let (e, text) = refused(&func).await;
    assert!(matches!(e, LoadError::BadDescriptor { .. }), "{e:?}");
    assert!(text.contains("is not data"), "{text}");
    assert!(
        !marker.exists(),
        "the library's constructor ran in the node"
    );

    // The control: opened by a program that dlopens it, the constructor does write the file.
    let opener = cc(
        &dir.0,
        "opener",
        "#include <dlfcn.h>\nint main(int c, char **v) { return c > 1 && dlopen(v[1], RTLD_NOW) ? 0 : 1; }\n",
        &["-O1", "-ldl"],
    );
    let st = std::process::Command::new(&opener)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the control program could not dlopen the library"
    );
    assert!(marker.exists(), "the control program ran the constructor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_wrong_platform() {
    // Copies of a real module with one header field changed: the dynamic linker would refuse
    // them too, but the node says so itself, before dlopen (a `WrongPlatform`, not `DlOpen`).
    let dir = TempDir::new("platform");
    let bytes = std::fs::read(module("seed000_v1")).unwrap();
    let (other_machine, other_name) = if cfg!(target_arch = "aarch64") {
        (62u16, "x86-64")
    } else {
        (183u16, "AArch64")
    };
    let patched = |name: &str, patch: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        patch(&mut b);
        let p = dir.0.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let cases = [
        (
            patched("lib32.so", &|b| b[4] = 1), // EI_CLASS = ELFCLASS32
            "32-bit",
        ),
        (
            patched("libbe.so", &|b| b[5] = 2), // EI_DATA = ELFDATA2MSB
            "big-endian",
        ),
        (
            patched("libarm.so", &|b| {
                b[18..20].copy_from_slice(&other_machine.to_le_bytes()) // e_machine
            }),
            other_name,
        ),
    ];
    for (p, found) in cases {
        let (e, text) = refused(&p).await;
        assert!(
            matches!(&e, LoadError::WrongPlatform { found: f, .. } if f.contains(found)),
            "{}: {e:?}",
            p.display()
        );
        assert!(
            text.contains("was built for")
                && text.contains("this node runs on 64-bit little-endian")
                && text.contains("build the module for the node's platform"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_executable_or_object_file() {
    let dir = TempDir::new("exec");
    let marker = dir.0.join("constructor-ran");
    let src = c_with_constructor(&marker, "int main(void) { return 0; }");
    let cases = [
        (
            "pie.so",
            &["-fPIE", "-pie"][..],
            "position-independent executable",
        ),
        (
            "exec.so",
            &["-fno-PIE", "-no-pie"][..],
            "an executable (ELF type ET_EXEC)",
        ),
        (
            "object.so",
            &["-c", "-fPIC"][..],
            "an object file (ELF type ET_REL)",
        ),
    ];
    for (name, args, why) in cases {
        let p = cc(&dir.0, name, &src, args);
        let (e, text) = refused(&p).await;
        assert!(matches!(e, LoadError::NotElf { .. }), "{name}: {e:?}");
        assert!(
            text.contains(why) && text.contains("not a shared"),
            "{name}: {text}"
        );
        assert!(!marker.exists(), "{name}: its constructor ran in the node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_garbage_elf() {
    // The real ELF header of a module (so class, machine and type pass) followed by
    // pseudo-random bytes, or the real file with garbage headers tables: each refused from
    // the file, never handed to the dynamic linker.
    let dir = TempDir::new("garbage");
    let bytes = std::fs::read(module("seed000_v1")).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let shoff = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let mut files = Vec::new();
    for n in [0, 100, 4096, bytes.len() - 64] {
        let mut b = bytes[..64].to_vec();
        b.extend(noise(n));
        files.push(b);
    }
    let mut b = bytes.clone();
    let len = b.len() - shoff;
    b[shoff..].copy_from_slice(&noise(len)); // section headers
    files.push(b);
    let mut b = bytes.clone();
    b[phoff..phoff + 56 * 4].copy_from_slice(&noise(56 * 4)); // program headers
    files.push(b);
    for (i, b) in files.into_iter().enumerate() {
        let p = dir.0.join(format!("libgarbage{i}.so"));
        std::fs::write(&p, b).unwrap();
        let (e, text) = refused(&p).await;
        assert!(
            matches!(
                e,
                LoadError::NotElf { .. }
                    | LoadError::Truncated { .. }
                    | LoadError::NoDescriptor { .. }
                    | LoadError::BadDescriptor { .. }
            ),
            "file {i}: {e:?}"
        );
        assert!(text.contains(&p.display().to_string()), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_no_descriptor() {
    let (e, text) = refused(module("bad_no_descriptor")).await;
    assert!(matches!(e, LoadError::NoDescriptor { .. }), "{e:?}");
    assert!(
        text.contains("not a hotswap module") && text.contains("hotswap::module!"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_abi_version_mismatch() {
    // The fixture's ELF constructor and its init/poll/drop call abort(): reaching this
    // assertion proves none ran (the ABI version is read from the file, before dlopen).
    let (e, text) = refused(module("bad_abi_mismatch")).await;
    assert!(
        matches!(
            e,
            LoadError::AbiMismatch {
                module_abi: 999,
                node_abi: hotswap_abi::ABI_VERSION,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("ABI 999")
            && text.contains(&format!("speaks ABI {}", hotswap_abi::ABI_VERSION)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_built_with_panic_abort() {
    let (e, text) = refused(panic_abort_module()).await;
    assert!(
        matches!(&e, LoadError::PanicAbort { module } if module == "aborty"),
        "{e:?}"
    );
    assert!(
        text.contains("panic = \"abort\"") && text.contains("unwind"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_name_differs() {
    let node = support::node();
    let me = node.external();
    let pid = bystander(&node).await;
    let err = node
        .code()
        .load_as("counter", module("seed000_v1"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, CodeError::Load(LoadError::NameMismatch { expected, found, .. }) if expected == "counter" && found == "seed000"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("holds module `seed000`, not `counter`"),
        "{err}"
    );
    assert!(node.code().module("counter").is_none());
    assert_unharmed(&node, &me, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_panics_in_process() {
    let node = support::node();
    let me = node.external();
    let pid = bystander(&node).await;
    node.code().load(module("misbehave")).await.unwrap();

    // Linked to a trapping process: it gets {'EXIT', Pid, {panic, Message}}.
    let p1 = me.spawn_link("misbehave", "panic_on_message", &()).unwrap();
    me.send(p1, &"boom one");
    let exit = me
        .recv_match(
            WAIT,
            |m| matches!(m, Message::Exit { from, .. } if *from == p1),
        )
        .await
        .expect("EXIT");
    let Message::Exit {
        reason: ExitReason::Panic(msg),
        ..
    } = exit
    else {
        panic!("{exit:?}")
    };
    assert!(
        msg.contains("boom one") && msg.contains("misbehave"),
        "message and location: {msg}"
    );

    // Linked to a process that does not trap exits: the signal takes it down too.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let watcher = node
        .spawn_native(move |ctx| async move {
            let _go: String = ctx.receive().await;
            let p = ctx
                .spawn_link("misbehave", "panic_now", &"boom two")
                .unwrap();
            let _ = tx.send(p);
            ctx.recv().await; // never returns normally: the exit signal kills us first
        })
        .unwrap();
    let mon = me.monitor(watcher);
    me.send(watcher, &"go");
    let p2 = rx.await.unwrap();
    match me.down(mon, WAIT).await {
        Some(ExitReason::Panic(m)) => assert!(m.contains("boom two"), "{m}"),
        other => panic!("linked watcher should exit with the panic, got {other:?}"),
    }
    assert!(!node.is_alive(p2));
    assert_unharmed(&node, &me, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_starts_a_thread() {
    let node = support::node();
    let me = node.external();
    let pid = bystander(&node).await;
    node.code().load(module("misbehave")).await.unwrap();
    let refused_before = hotswap_runtime::refused_module_threads();
    let (p, mon) = me.spawn_monitor("misbehave", "spawn_thread", &()).unwrap();
    match me.down(mon, WAIT).await {
        Some(ExitReason::Panic(m)) => assert!(m.contains("could not start a thread"), "{m}"),
        other => panic!("expected a panic exit, got {other:?}"),
    }
    assert!(!node.is_alive(p));
    assert!(hotswap_runtime::refused_module_threads() > refused_before);
    // No module thread exists, so the version can be freed for real.
    node.code().delete("misbehave").await.unwrap();
    let r = node.code().purge("misbehave").await.unwrap();
    assert_eq!(r.pinned, None, "unmapped");
    assert_unharmed(&node, &me, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_module_purge_while_call_in_flight() {
    let node = support::node_with(Duration::from_millis(200));
    let me = node.external();
    let pid = bystander(&node).await;
    node.code().load(module("misbehave")).await.unwrap();
    let (busy, mon) = me
        .spawn_monitor("misbehave", "busy", &(me.pid(), 1500u64))
        .unwrap();
    assert_eq!(me.receive::<String>(WAIT).await.as_deref(), Some("busy"));

    // The process is inside a call that cannot be pre-empted: the purge kills it, waits
    // 200 ms, then pins the version instead of unmapping code that is running.
    node.code().delete("misbehave").await.unwrap();
    let r = node.code().purge("misbehave").await.unwrap();
    assert_eq!(r.killed, vec![busy]);
    let reason = r.pinned.expect("pinned, not unmapped");
    assert!(
        reason.contains(&busy.to_string()) && reason.contains("busy inside a call"),
        "{reason}"
    );
    let pinned = node.code().pinned();
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0].module, "misbehave");
    assert_unharmed(&node, &me, pid).await;

    // When the call returns to an await point, the kill takes effect; then the pinned
    // version can be freed.
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    assert_eq!(node.code().retry_pinned().await, 1);
    assert!(node.code().pinned().is_empty());
    assert_unharmed(&node, &me, pid).await;
}
