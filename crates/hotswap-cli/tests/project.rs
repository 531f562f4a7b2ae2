//! `hotswap new` and `hotswap release` on real projects in temp directories, built by real
//! cargo (`--offline`: the registry's crates are in the local cache after the workspace's
//! own build). Every project shares one target directory (`target/project-tests`), so the
//! registry crates are compiled once; each project has its own crate names, so no two
//! projects' libraries collide in it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{output, Run};

/// The target directory the tests' projects share.
fn shared_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/project-tests")
        .to_path_buf()
}

/// A fresh temp directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("hs-proj-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hs(dir: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(support::bin());
    c.args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target())
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUST_LOG");
    output(c)
}

fn cargo(dir: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    c.args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target());
    output(c)
}

/// `hotswap new <name>` in a temp dir; the project's root.
fn new_project(tmp: &Tmp, name: &str) -> PathBuf {
    let r = hs(&tmp.0, &["new", name]);
    assert_eq!(r.code, Some(0), "{r}");
    tmp.0.join(name)
}

/// `hotswap new <name>`, its module crate pointed at one SDK copy shared by the tests'
/// projects (so the SDK is compiled once, not once per project).
fn new_project_shared_sdk(tmp: &Tmp, name: &str) -> PathBuf {
    let root = new_project(tmp, name);
    static SHARED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = SHARED.lock().unwrap();
    let shared = shared_target().join("vendor");
    copy_if_changed(&root.join("vendor"), &shared);
    edit(
        &root.join("modules").join(name).join("Cargo.toml"),
        "path = \"../../vendor/hotswap\"",
        &format!("path = {:?}", shared.join("hotswap").to_string_lossy()),
    );
    root
}

/// Copy the tree `from` to `to`, writing only files whose contents differ (so that cargo
/// sees the shared SDK unchanged).
fn copy_if_changed(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_if_changed(&src, &dst);
        } else {
            let new = std::fs::read(&src).unwrap();
            if std::fs::read(&dst).ok().as_deref() != Some(&new[..]) {
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::write(&dst, new).unwrap();
            }
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

fn lock_version(lock: &str, package: &str) -> Option<String> {
    let at = lock.find(&format!("name = \"{package}\"\nversion = \""))?;
    let rest = &lock[at..];
    let v = rest.split("version = \"").nth(1)?;
    Some(v.split('"').next()?.to_string())
}

#[test]
fn new_project_builds_and_tests_offline() {
    let tmp = Tmp::new("new");
    let root = new_project(&tmp, "np_shop");
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "Hotswap.toml",
        "README.md",
        ".gitignore",
        "modules/np_shop/Cargo.toml",
        "modules/np_shop/src/lib.rs",
        "vendor/hotswap/Cargo.toml",
        "vendor/hotswap-abi/src/lib.rs",
        "vendor/hotswap-macros/src/lib.rs",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    // A second `new` with the same name is refused, the project untouched.
    let again = hs(&tmp.0, &["new", "np_shop"]);
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("exists already"), "{again}");
    let bad = hs(&tmp.0, &["new", "9 lives"]);
    assert_eq!(bad.code, Some(1), "{bad}");
    assert!(bad.stderr.contains("not a usable project name"), "{bad}");

    let b = cargo(&root, &["build"]);
    assert_eq!(b.code, Some(0), "cargo build:\n{b}");
    let t = cargo(&root, &["test"]);
    assert_eq!(t.code, Some(0), "cargo test:\n{t}");
    assert!(t.stdout.contains("test result: ok. 3 passed"), "{t}");
    // The lock pins what this workspace pins, and nothing the project does not use.
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let ours =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"))
            .unwrap();
    for p in ["serde", "rmp-serde", "syn", "thiserror"] {
        assert_eq!(lock_version(&lock, p), lock_version(&ours, p), "{p}");
        assert!(
            lock_version(&lock, p).is_some(),
            "{p} not in the project's lock"
        );
    }
    assert!(
        lock_version(&lock, "tokio").is_none(),
        "tokio is in the project's lock"
    );
}

fn release_dir(root: &Path) -> PathBuf {
    root.join("_release")
}

/// The libraries in the release directory's `lib/` (each must have its description
/// record beside it).
fn libs(root: &Path) -> Vec<String> {
    let lib = release_dir(root).join("lib");
    let mut v: Vec<String> = std::fs::read_dir(&lib)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".so"))
        .collect();
    v.sort();
    for l in &v {
        assert!(
            lib.join(format!("{l}.schema")).is_file(),
            "no description record beside {l}"
        );
    }
    v
}

#[test]
fn release_build_writes_side_by_side_releases() {
    let tmp = Tmp::new("side");
    let root = new_project_shared_sdk(&tmp, "rel_side");
    let r1 = hs(&root, &["release"]);
    assert_eq!(r1.code, Some(0), "{r1}");
    assert!(r1.stdout.contains("first release"), "{r1}");
    let l1 = libs(&root);
    assert_eq!(l1.len(), 1, "{l1:?}");
    assert!(
        l1[0].starts_with("rel_side-0.1.0-") && l1[0].ends_with(".so"),
        "{l1:?}"
    );

    // The same code rebuilt (touched) into a new release: the same library, unchanged.
    let lib_rs = root.join("modules/rel_side/src/lib.rs");
    let src = std::fs::read_to_string(&lib_rs).unwrap();
    std::fs::write(&lib_rs, &src).unwrap();
    edit(
        &root.join("Hotswap.toml"),
        "version = \"0.1.0\"",
        "version = \"0.1.1\"",
    );
    let r2 = hs(&root, &["release"]);
    assert_eq!(r2.code, Some(0), "{r2}");
    assert!(r2.stdout.contains("upgrade from 0.1.0"), "{r2}");
    assert!(
        r2.stdout.contains("module rel_side 0.1.0: unchanged"),
        "{r2}"
    );
    assert_eq!(libs(&root), l1);

    // New code with a new module version: a second library beside the first.
    edit(&lib_rs, "self.count += n;", "self.count += 2 * n;");
    edit(
        &root.join("modules/rel_side/Cargo.toml"),
        "version = \"0.1.0\"",
        "version = \"0.2.0\"",
    );
    edit(
        &root.join("Hotswap.toml"),
        "version = \"0.1.1\"",
        "version = \"0.2.0\"",
    );
    let r3 = hs(&root, &["release"]);
    assert_eq!(r3.code, Some(0), "{r3}");
    assert!(r3.stdout.contains("upgrade from 0.1.1"), "{r3}");
    assert!(
        r3.stdout
            .contains("module rel_side 0.1.0 -> 0.2.0: changed"),
        "{r3}"
    );
    // The release layer's own plan, derived from the two manifests and libraries.
    assert!(
        r3.stdout.contains("the release layer's plan")
            && r3.stdout.contains("upgrade from release 0.1.1 to 0.2.0")
            && r3.stdout.contains("commit: make current rel_side"),
        "{r3}"
    );
    let l3 = libs(&root);
    assert_eq!(l3.len(), 2, "{l3:?}");
    assert!(
        l3.iter().any(|l| l.starts_with("rel_side-0.2.0-")),
        "{l3:?}"
    );
    for v in ["0.1.0", "0.1.1", "0.2.0"] {
        let m = release_dir(&root)
            .join("releases")
            .join(v)
            .join("release.toml");
        let t: toml::Table = std::fs::read_to_string(&m).unwrap().parse().unwrap();
        assert_eq!(t["release"]["version"].as_str(), Some(v));
        let file = t["module"][0]["file"].as_str().unwrap();
        assert!(release_dir(&root).join(file).is_file(), "{v}: {file}");
        assert_eq!(t["application"][0]["name"].as_str(), Some("rel_side"));
    }
    // Each release alone, packed for `hotswap unpack`.
    let pkg = release_dir(&root).join("rel_side-0.2.0.tar.gz");
    let list = Command::new("tar").arg("-tzf").arg(&pkg).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("releases/0.2.0/release.toml"), "{list}");
    assert!(list.contains("lib/rel_side-0.2.0-"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("lib/rel_side-0.2.0-") && l.ends_with(".so.schema")),
        "the package holds the description record: {list}"
    );
    assert!(r3.stdout.contains("description record"), "{r3}");
    assert!(!list.contains("0.1.0"), "{list}");
    // The same release version twice is refused.
    let again = hs(&root, &["release"]);
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("exists already"), "{again}");
}

#[test]
fn release_build_refuses_unchanged_version_with_changed_code() {
    let tmp = Tmp::new("refuse");
    let root = new_project_shared_sdk(&tmp, "rel_refuse");
    let r1 = hs(&root, &["release"]);
    assert_eq!(r1.code, Some(0), "{r1}");
    let lib_rs = root.join("modules/rel_refuse/src/lib.rs");
    edit(&lib_rs, "self.count += n;", "self.count += 3 * n;");
    edit(
        &root.join("Hotswap.toml"),
        "version = \"0.1.0\"",
        "version = \"0.2.0\"",
    );
    let r2 = hs(&root, &["release"]);
    assert_eq!(r2.code, Some(1), "{r2}");
    assert!(
        r2.stderr
            .contains("module rel_refuse: its code changed since release 0.1.0")
            && r2
                .stderr
                .contains("its version is still 0.1.0: bump `version` in"),
        "{r2}"
    );
    assert!(
        !release_dir(&root).join("releases/0.2.0").exists(),
        "a refused release was written"
    );
    assert_eq!(libs(&root).len(), 1);
}

// ---------------------------------------------------------------------------------------
// hotswap dev

/// A module whose gen_server state records, in `marks`, every version that built or
/// migrated it: `init` pushes MARK, `code_change` pushes the new version's MARK.
const DEV_MODULE: &str = r#"use hotswap::gen_server::{CallResult, Caller, Extra, GenServer, Init, OldState};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

const MARK: &str = "v1";

#[derive(Serialize, Deserialize)]
pub struct S {
    pub count: u64,
    pub marks: Vec<String>,
}

impl GenServer for S {
    type Arg = u64;
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, start: u64) -> Init<Self> {
        Init::Ok(S { count: start, marks: vec![MARK.into()] })
    }

    async fn handle_call(&mut self, _ctx: Ctx, _req: (), _from: Caller) -> CallResult<u64> {
        CallResult::Reply(self.count)
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let mut s: S = old.decode().map_err(|e| e.to_string())?;
        s.marks.push(MARK.into());
        Ok(s)
    }
}

hotswap::module! { name: "NAME", gen_server: S }
"#;

/// A `hotswap dev` process, killed on drop (its node gets SIGTERM with it).
struct Dev {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The node's release directory.
    dir: PathBuf,
    /// The project's module source.
    src: PathBuf,
    /// The registered name of the project's server.
    name: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a dev build may take on a busy 2-core machine.
const BUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

impl Dev {
    /// A project `name` with DEV_MODULE as its module (its server started with 41), run by
    /// `hotswap dev` (with `args`), once the node has started. Its stdout and stderr (the
    /// progress lines and the node's log) are both read.
    fn start(tmp: &Tmp, name: &str, args: &[&str]) -> Dev {
        let root = new_project_shared_sdk(tmp, name);
        let src = root.join("modules").join(name).join("src/lib.rs");
        std::fs::write(&src, DEV_MODULE.replace("NAME", name)).unwrap();
        edit(&root.join("Hotswap.toml"), "arg = 0", "arg = 41");
        let mut child = Command::new(support::bin())
            .args(["dev", "--offline"])
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", shared_target())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn hotswap dev");
        let (tx, lines) = std::sync::mpsc::channel();
        fn forward(from: impl std::io::Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(from).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        let mut dev = Dev {
            child,
            lines,
            seen: Vec::new(),
            dir: PathBuf::new(),
            src,
            name: name.into(),
        };
        let first = dev.wait_line("dev: watching", BUILD_WAIT);
        dev.dir = PathBuf::from(first.rsplit("release directory ").next().unwrap());
        dev.wait_line("node started: release 0.1.0-dev.1", BUILD_WAIT);
        dev
    }

    /// The next line starting with `prefix` (earlier lines are kept in `seen`).
    fn wait_line(&mut self, prefix: &str, limit: std::time::Duration) -> String {
        self.wait_any(&[prefix], limit)
    }

    /// The next line starting with any of `prefixes`.
    fn wait_any(&mut self, prefixes: &[&str], limit: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if prefixes.iter().any(|p| l.starts_with(p)) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "no line starting with {prefixes:?} ({e:?}); hotswap dev printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// How many of the lines seen so far start with `prefix`.
    fn seen_count(&self, prefix: &str) -> usize {
        self.seen.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// The server's state, from the running node.
    fn state(&self) -> serde_json::Value {
        let r = support::hotswap(
            &[
                "get-state".into(),
                self.name.clone(),
                "--json".into(),
                "-d".into(),
                self.dir.to_string_lossy().into_owned(),
            ],
            &[],
        );
        assert_eq!(r.code, Some(0), "{r}");
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["state"].clone()
    }

    /// Save the module with `from` replaced by `to`.
    fn save(&self, from: &str, to: &str) {
        edit(&self.src, from, to);
    }

    /// Save the module with every `(from, to)` replaced, in one write.
    fn save_all(&self, edits: &[(&str, &str)]) {
        let mut s = std::fs::read_to_string(&self.src).unwrap();
        for (from, to) in edits {
            assert!(s.contains(from), "the module has no {from:?}");
            s = s.replacen(from, to, 1);
        }
        std::fs::write(&self.src, s).unwrap();
    }
}

#[test]
fn dev_loop_applies_a_change_with_state_kept() {
    let tmp = Tmp::new("dev-apply");
    let mut dev = Dev::start(&tmp, "dev_apply", &[]);
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1"]})
    );
    dev.save("const MARK: &str = \"v1\";", "const MARK: &str = \"v2\";");
    let line = dev.wait_line("upgraded to 0.1.0-dev.2", BUILD_WAIT);
    for phase in [
        "detect ",
        "build ",
        "load ",
        "check ",
        "switch ",
        "1 server migrated",
    ] {
        assert!(line.contains(phase), "{line}");
    }
    // The new code ran (its code_change), the state kept.
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1", "v2"]})
    );
    // Each dev release's library has its description record beside it in the node's
    // directory (the check compared it), and none was ignored.
    for vsn in ["0.1.0-dev.1", "0.1.0-dev.2"] {
        let lib = dev.dir.join("lib").join(vsn);
        let names: Vec<String> = std::fs::read_dir(&lib)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with(".so"))
                && names
                    .iter()
                    .filter(|n| n.ends_with(".so"))
                    .all(|n| names.contains(&format!("{n}.schema"))),
            "{vsn}: {names:?}"
        );
    }
    assert!(
        !dev.seen
            .iter()
            .any(|l| l.contains("description record ignored")),
        "{}",
        dev.seen.join("\n")
    );
}

#[test]
fn dev_loop_type_change_migrated() {
    let tmp = Tmp::new("dev-type");
    let mut dev = Dev::start(&tmp, "dev_type", &[]);
    // A new field, filled by code_change from the old state's.
    let src = std::fs::read_to_string(&dev.src).unwrap();
    let v2 = src
        .replace("    pub marks: Vec<String>,\n}", "    pub marks: Vec<String>,\n    pub doubled: u64,\n}\n\n#[derive(Deserialize)]\nstruct Old {\n    count: u64,\n    marks: Vec<String>,\n}")
        .replace("marks: vec![MARK.into()] }", "marks: vec![MARK.into()], doubled: 2 * start }")
        .replace(
            "let mut s: S = old.decode().map_err(|e| e.to_string())?;\n        s.marks.push(MARK.into());\n        Ok(s)",
            "let o: Old = old.decode().map_err(|e| e.to_string())?;\n        let mut marks = o.marks;\n        marks.push(MARK.into());\n        Ok(S { count: o.count, marks, doubled: 2 * o.count })",
        )
        .replace("const MARK: &str = \"v1\";", "const MARK: &str = \"v2\";")
        // The old shape declared, so that the types check leaves it to code_change.
        .replace(
            "    fn code_change(",
            "    fn accepts() -> hotswap::schema::Accepts {\n        hotswap::schema::Accepts::new().state::<Old>()\n    }\n\n    fn code_change(",
        );
    assert!(v2.contains("doubled: 2 * o.count"), "{v2}");
    assert!(v2.contains("state::<Old>()"), "{v2}");
    std::fs::write(&dev.src, v2).unwrap();
    let line = dev.wait_line("upgraded to 0.1.0-dev.2", BUILD_WAIT);
    assert!(line.contains("1 server migrated"), "{line}");
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1", "v2"], "doubled": 82})
    );
}

#[test]
fn dev_loop_build_error_keeps_old_code_running() {
    let tmp = Tmp::new("dev-broken");
    let mut dev = Dev::start(&tmp, "dev_broken", &[]);
    dev.save("const MARK: &str = \"v1\";", "const MARK: &str = 12;");
    let line = dev.wait_line("build failed", BUILD_WAIT);
    assert!(line.contains("the node still runs 0.1.0-dev.1"), "{line}");
    // The compiler's error is shown (on the following lines).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dev.seen.iter().any(|l| l.contains("mismatched types")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match dev.lines.recv_timeout(left) {
            Ok(l) => dev.seen.push(l),
            Err(_) => panic!("no compiler error shown:\n{}", dev.seen.join("\n")),
        }
    }
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1"]})
    );
    // Fixed: the next save upgrades.
    dev.save("const MARK: &str = 12;", "const MARK: &str = \"v3\";");
    dev.wait_line("upgraded to 0.1.0-dev.2", BUILD_WAIT);
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1", "v3"]})
    );
}

#[test]
fn dev_loop_refused_change_reported() {
    let tmp = Tmp::new("dev-refused");
    let mut dev = Dev::start(&tmp, "dev_refused", &[]);
    dev.save(
        "let mut s: S = old.decode().map_err(|e| e.to_string())?;",
        "let mut s: S = old.decode().map_err(|e| e.to_string())?;\n        if s.count == 41 {\n            return Err(\"41 is not welcome here\".into());\n        }",
    );
    let line = dev.wait_line("refused by the check", BUILD_WAIT);
    assert!(line.contains("the node still runs 0.1.0-dev.1"), "{line}");
    assert!(line.contains("41 is not welcome here"), "{line}");
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1"]})
    );
}

#[test]
fn dev_loop_no_change_reported() {
    let tmp = Tmp::new("dev-same");
    let mut dev = Dev::start(&tmp, "dev_same", &[]);
    // Saved again as it was: cargo rebuilds, the code is the same.
    let src = std::fs::read_to_string(&dev.src).unwrap();
    std::fs::write(&dev.src, &src).unwrap();
    let line = dev.wait_line("no change", BUILD_WAIT);
    assert!(
        line.contains("this save changed nothing that runs") && line.contains("0.1.0-dev.1"),
        "{line}"
    );
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1"]})
    );
}

#[test]
fn dev_loop_restart_restarts_instead_of_migrating() {
    let tmp = Tmp::new("dev-restart");
    let mut dev = Dev::start(&tmp, "dev_restart", &["--restart"]);
    // A change whose code_change refuses this state (without --restart the check refuses
    // the upgrade: `dev_loop_refused_change_reported`), and a new mark.
    dev.save_all(&[
        ("const MARK: &str = \"v1\";", "const MARK: &str = \"v2\";"),
        (
            "let mut s: S = old.decode().map_err(|e| e.to_string())?;",
            "let mut s: S = old.decode().map_err(|e| e.to_string())?;\n        if s.count == 41 {\n            return Err(\"41 is not welcome here\".into());\n        }",
        ),
    ]);
    let line = dev.wait_any(&["upgraded to", "refused by the check"], BUILD_WAIT);
    assert!(line.starts_with("upgraded to 0.1.0-dev.2"), "{line}");
    assert!(line.contains("1 process restarted"), "{line}");
    assert!(!line.contains("migrated"), "{line}");
    // A new server from the new code's init (with the child spec's argument), not the old
    // state converted: only the new mark.
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v2"]})
    );
}

#[test]
fn dev_loop_build_cancelled_by_a_newer_save() {
    let tmp = Tmp::new("dev-cancel");
    let mut dev = Dev::start(&tmp, "dev_cancel", &[]);
    dev.save("const MARK: &str = \"v1\";", "const MARK: &str = \"v2\";");
    // The first save's build has started: a second save cancels it.
    dev.wait_line("dev: building after a save", BUILD_WAIT);
    dev.save("const MARK: &str = \"v2\";", "const MARK: &str = \"v3\";");
    let line = dev.wait_any(&["build cancelled", "upgraded to"], BUILD_WAIT);
    assert_eq!(line, "build cancelled: a newer save arrived");
    let line = dev.wait_any(&["upgraded to", "build cancelled"], BUILD_WAIT);
    assert!(line.starts_with("upgraded to 0.1.0-dev.2"), "{line}");
    assert_eq!(dev.seen_count("build cancelled"), 1, "{:#?}", dev.seen);
    // One more build, for the second save only (the rest of its burst of file events did
    // not cancel that one too).
    assert_eq!(
        dev.seen_count("dev: building after a save"),
        2,
        "{:#?}",
        dev.seen
    );
    // The second save's code runs; the first's never did (its code_change would have
    // left its mark).
    assert_eq!(
        dev.state(),
        serde_json::json!({"count": 41, "marks": ["v1", "v3"]})
    );
}

/// The benchmark `dev_loop_save_to_running` (BENCHMARKS.md): a one-line change to the
/// handler, from the file write to the first call answered by the new code, 10 saves;
/// prints the median and each phase's median. Run it alone:
/// `cargo test --release -p hotswap-cli --test project dev_loop_save_to_running -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it alone (see BENCHMARKS.md)"]
fn dev_loop_save_to_running() {
    let tmp = Tmp::new("dev-bench");
    let mut dev = Dev::start(&tmp, "dev_bench", &[]);
    let src = std::fs::read_to_string(&dev.src).unwrap();
    let src = src
        .replace("type Reply = u64;", "type Reply = String;")
        .replace("CallResult<u64>", "CallResult<String>")
        .replace(
            "CallResult::Reply(self.count)",
            "CallResult::Reply(MARK.to_string())",
        );
    let call = |dev: &Dev| {
        let r = support::hotswap(
            &[
                "call".into(),
                dev.name.clone(),
                "--json".into(),
                "-d".into(),
                dev.dir.to_string_lossy().into_owned(),
            ],
            &[],
        );
        assert_eq!(r.code, Some(0), "{r}");
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["reply"].clone()
    };
    // Warm-up: the first build with the new reply type.
    std::fs::write(&dev.src, &src).unwrap();
    dev.wait_line("upgraded to", BUILD_WAIT);
    assert_eq!(call(&dev), serde_json::json!("v1"));
    let mut totals = Vec::new();
    let mut phases: Vec<Vec<f64>> = vec![Vec::new(); 5];
    let names = ["detect", "build", "load", "check", "switch"];
    for i in 0..10 {
        let mark = format!("save{i}");
        let t0 = std::time::Instant::now();
        std::fs::write(
            &dev.src,
            src.replace(
                "const MARK: &str = \"v1\";",
                &format!("const MARK: &str = {mark:?};"),
            ),
        )
        .unwrap();
        let line = dev.wait_line("upgraded to", BUILD_WAIT);
        assert_eq!(call(&dev), serde_json::json!(mark));
        totals.push(t0.elapsed().as_secs_f64() * 1000.0);
        for (k, n) in names.iter().enumerate() {
            let v = line
                .split(&format!("{n} "))
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {n} in {line}"));
            phases[k].push(v);
        }
        println!("save {i}: {:.0} ms  ({line})", totals[i]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    println!(
        "dev_loop_save_to_running: median {:.0} ms (min {:.0}, max {:.0}) over 10 saves",
        median(&mut totals.clone()),
        totals.iter().cloned().fold(f64::MAX, f64::min),
        totals.iter().cloned().fold(0.0, f64::max)
    );
    for (k, n) in names.iter().enumerate() {
        println!("  {n}: median {:.0} ms", median(&mut phases[k]));
    }
}
