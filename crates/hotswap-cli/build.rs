//! Export the runtime's thread-local guard from the `hotswap` binary (see
//! `hotswap_runtime::guard_link_args`), so purged module versions can be unmapped safely;
//! and embed the SDK's sources (`crates/hotswap{,-abi,-macros}`: each `Cargo.toml` and
//! every file under `src/`), the workspace manifest and its `Cargo.lock`, which
//! `hotswap new` writes into a new project (the SDK is not published).
use std::path::{Path, PathBuf};

fn main() {
    for sym in [
        "pthread_key_create",
        "__cxa_thread_atexit_impl",
        "pthread_create",
    ] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={sym}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    embed_sdk();
}

/// The SDK crates `hotswap new` vendors.
const SDK_CRATES: [&str; 3] = ["hotswap-abi", "hotswap-macros", "hotswap"];

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn embed_sdk() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let crates = manifest_dir.parent().expect("crates/").to_path_buf();
    let root = crates.parent().expect("the workspace").to_path_buf();
    let mut code = String::from(
        "/// The SDK's files: (path under `vendor/`, contents), as in the workspace.\n\
         pub(crate) const SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for krate in SDK_CRATES {
        let dir = crates.join(krate);
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        let mut files = vec![dir.join("Cargo.toml")];
        files_under(&dir.join("src"), &mut files);
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let rel = f.strip_prefix(&crates).expect("under crates/");
            code.push_str(&format!(
                "    ({:?}, include_str!({:?})),\n",
                rel.to_string_lossy(),
                f.to_string_lossy()
            ));
        }
    }
    code.push_str("];\n");
    for (name, file) in [
        ("WORKSPACE_MANIFEST", "Cargo.toml"),
        ("WORKSPACE_LOCK", "Cargo.lock"),
    ] {
        let p = root.join(file);
        println!("cargo:rerun-if-changed={}", p.display());
        code.push_str(&format!(
            "/// The workspace's `{file}`.\npub(crate) const {name}: &str = include_str!({:?});\n",
            p.to_string_lossy()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("sdk_files.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
