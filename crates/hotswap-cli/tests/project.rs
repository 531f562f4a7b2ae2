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

fn libs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(release_dir(root).join("lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn release_build_writes_side_by_side_releases() {
    let tmp = Tmp::new("side");
    let root = new_project(&tmp, "rel_side");
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
    // The same release version twice is refused.
    let again = hs(&root, &["release"]);
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("exists already"), "{again}");
}

#[test]
fn release_build_refuses_unchanged_version_with_changed_code() {
    let tmp = Tmp::new("refuse");
    let root = new_project(&tmp, "rel_refuse");
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
