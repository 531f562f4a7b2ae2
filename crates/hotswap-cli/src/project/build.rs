//! `hotswap release`: build a release directory from the project, next to the releases
//! built before (so that a running node can unpack the new one and upgrade to it).
//!
//! 1. `cargo build --release` of the module crates;
//! 2. each library identified (loaded into a scratch node: module name, version, build
//!    id) and hashed, its build id masked (the SDK stamps every compilation with a fresh
//!    id, so two builds of the same code differ only there);
//! 3. refused if a module's version equals the previous release's while its code differs,
//!    or if the release's version exists already;
//! 4. `lib/<module>-<vsn>-<hash>.so` written (kept as is when it exists: the same code),
//!    with its description record beside it (`lib/<module>-<vsn>-<hash>.so.schema`: the
//!    module's description of its types, so that a node loading the library compares it
//!    instead of running the module's `describe`), `releases/<vsn>/release.toml` written
//!    from the project file;
//! 5. the release alone packed as `<name>-<vsn>.tar.gz` (what `hotswap unpack` takes);
//! 6. the upgrade from the previous release printed.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::{cargo, Project};

/// Options of `hotswap release`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The project (a directory in it).
    pub(crate) project: PathBuf,
    /// The output release directory (default: `<project>/_release`).
    pub(crate) out: Option<PathBuf>,
    /// Pass `--offline` to cargo.
    pub(crate) offline: bool,
}

/// A built module library.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    /// The module's name (from its descriptor).
    pub(crate) name: String,
    /// The module's version (from its descriptor).
    pub(crate) version: String,
    /// The library cargo wrote.
    pub(crate) path: PathBuf,
    /// The hash of its code (build id masked), 16 hex digits.
    pub(crate) hash: String,
}

impl Built {
    /// Its file name in a release's `lib/`.
    pub(crate) fn file_name(&self) -> String {
        format!("{}-{}-{}.so", self.name, self.version, self.hash)
    }
}

/// `hotswap release`.
pub(crate) fn run(opts: Options) -> ExitCode {
    match release(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn release(opts: &Options) -> Result<()> {
    let project = Project::load(&opts.project)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| project.root.join("_release"));
    let vsn = project.version.clone();
    let manifest = out.join("releases").join(&vsn).join("release.toml");
    if manifest.exists() {
        bail!(
            "release {vsn} exists already in {} ({}): bump [release] version in {}",
            out.display(),
            manifest.display(),
            project.root.join(super::PROJECT_FILE).display()
        );
    }
    let libs = cargo_build(&project, &["--release"], opts.offline, None)
        .map_err(|e| anyhow!("cargo build --release failed:\n{e:#}"))?;
    let built = identify(&libs)?;
    let previous = previous_release(&out, &vsn)?;
    if let Some((pv, prev)) = &previous {
        let mut problems = Vec::new();
        for b in &built {
            if let Some(p) = prev.iter().find(|p| p.name == b.name) {
                if p.version == b.version && p.hash != b.hash {
                    let krate = project
                        .crates
                        .iter()
                        .find(|c| c.lib_name == lib_stem(&b.path))
                        .map(|c| c.dir.join("Cargo.toml").display().to_string())
                        .unwrap_or_else(|| "its Cargo.toml".into());
                    problems.push(format!(
                        "module {}: its code changed since release {pv} (build {} there, {} now) but its version is still {}: bump `version` in {krate}",
                        b.name, p.hash, b.hash, b.version
                    ));
                }
            }
        }
        if !problems.is_empty() {
            bail!(
                "release {vsn} refused, nothing was written: a node upgrading from {pv} could not tell the old code from the new\n  {}",
                problems.join("\n  ")
            );
        }
    }
    let lib_dir = out.join("lib");
    std::fs::create_dir_all(&lib_dir)
        .with_context(|| format!("cannot create {}", lib_dir.display()))?;
    let mut modules = Vec::new();
    let mut records = Vec::new();
    for b in &built {
        let dst = lib_dir.join(b.file_name());
        if !dst.exists() {
            let tmp = dst.with_extension("copying");
            std::fs::copy(&b.path, &tmp).with_context(|| {
                format!("cannot copy {} to {}", b.path.display(), tmp.display())
            })?;
            std::fs::rename(&tmp, &dst)
                .with_context(|| format!("cannot write {}", dst.display()))?;
        }
        if write_record(&dst, &b.name) {
            records.push(format!("lib/{}.schema", b.file_name()));
        }
        modules.push((
            b.name.clone(),
            b.version.clone(),
            format!("lib/{}", b.file_name()),
        ));
    }
    let text = project.manifest(&vsn, &modules);
    std::fs::create_dir_all(manifest.parent().expect("releases/<vsn>"))
        .with_context(|| format!("cannot create {}", manifest.display()))?;
    std::fs::write(&manifest, text)
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    // The release alone, as a package a running node unpacks (`hotswap unpack`).
    let package = out.join(format!("{}-{vsn}.tar.gz", project.name));
    let mut tar = Command::new("tar");
    tar.arg("-czf")
        .arg(&package)
        .arg("-C")
        .arg(&out)
        .arg(format!("releases/{vsn}/release.toml"));
    for (_, _, file) in &modules {
        tar.arg(file);
    }
    tar.args(&records);
    let st = tar
        .output()
        .context("cannot run tar to write the release package")?;
    if !st.status.success() {
        bail!(
            "tar could not write {}: {}",
            package.display(),
            String::from_utf8_lossy(&st.stderr).trim()
        );
    }
    println!(
        "release {} {vsn} written to {}",
        project.name,
        out.display()
    );
    println!("  package (for `hotswap unpack`): {}", package.display());
    for b in &built {
        let rec = format!("lib/{}.schema", b.file_name());
        println!(
            "  module {} {}: lib/{}{}",
            b.name,
            b.version,
            b.file_name(),
            if records.contains(&rec) {
                " (+ description record .schema)"
            } else {
                ""
            }
        );
    }
    match &previous {
        None => println!(
            "first release in {}: nothing to upgrade from",
            out.display()
        ),
        Some((pv, prev)) => {
            println!("upgrade from {pv}:");
            for line in static_plan(prev, &built) {
                println!("  {line}");
            }
            match layer_plan(&out, pv, &vsn) {
                Ok(text) => {
                    println!(
                        "the release layer's plan (on a node with no processes; `hotswap upgrade {vsn} --plan` on a running node adds its processes):"
                    );
                    for l in text.lines() {
                        println!("  {l}");
                    }
                }
                Err(e) => println!("(no plan from the release layer: {e:#})"),
            }
        }
    }
    Ok(())
}

/// Write the description record beside the release's library `lib` (see
/// `hotswap_runtime::compat::record_description`); whether it was written. A library
/// without one still works (the node describes it at load): a failure is a note, not an
/// error.
pub(crate) fn write_record(lib: &Path, module: &str) -> bool {
    match hotswap_runtime::compat::record_description(lib) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("note: module {module}: no description record written ({e}); a node describes it at load instead");
            false
        }
    }
}

/// What changes between the previous release's modules and the new ones, from the
/// manifests and the hashes (the node's own plan, `hotswap upgrade --plan`, adds the live
/// processes).
fn static_plan(prev: &[Prev], now: &[Built]) -> Vec<String> {
    let mut lines = Vec::new();
    for b in now {
        match prev.iter().find(|p| p.name == b.name) {
            None => lines.push(format!("module {} {}: added (loaded)", b.name, b.version)),
            Some(p) if p.hash == b.hash => {
                lines.push(format!("module {} {}: unchanged", b.name, b.version))
            }
            Some(p) => lines.push(format!(
                "module {} {} -> {}: changed (its gen_servers suspended, migrated by code_change, resumed)",
                b.name, p.version, b.version
            )),
        }
    }
    for p in prev {
        if !now.iter().any(|b| b.name == p.name) {
            lines.push(format!(
                "module {} {}: removed (deleted)",
                p.name, p.version
            ));
        }
    }
    lines
}

/// The release layer's plan from release `from` to release `to` of `out`, derived on a
/// scratch node that loaded `from`'s modules.
fn layer_plan(out: &Path, from: &str, to: &str) -> Result<String> {
    use hotswap_runtime::release::{Release, ReleaseDir};
    let dir = ReleaseDir::new(out);
    let running = Release::load(&dir, from).map_err(|e| anyhow!("{e}"))?;
    let target = Release::load(&dir, to).map_err(|e| anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    rt.block_on(async {
        let node = hotswap_runtime::Node::start(hotswap_runtime::NodeConfig::default())
            .context("cannot start a scratch node")?;
        let mut r = Ok(());
        for m in &running.manifest.modules {
            if let Err(e) = node.code().load_as(&m.name, running.module_file(m)).await {
                r = Err(anyhow!("module {} of release {from}: {e}", m.name));
                break;
            }
        }
        let plan = match r {
            Ok(()) => node
                .releases()
                .plan_between(&running, &target)
                .await
                .map(|p| p.to_string())
                .map_err(|e| anyhow!("{e}")),
            Err(e) => Err(e),
        };
        let _ = node.shutdown(std::time::Duration::from_secs(2)).await;
        plan
    })
}

/// A module of the previous release.
#[derive(Debug, Clone)]
struct Prev {
    name: String,
    version: String,
    hash: String,
}

/// The newest release in `out` other than `vsn`, and its modules (name, version, the
/// hash from the library's file name).
fn previous_release(out: &Path, vsn: &str) -> Result<Option<(String, Vec<Prev>)>> {
    let dir = out.join("releases");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut versions: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("release.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| v != vsn)
        .collect();
    versions.sort_by(|a, b| version_order(a, b));
    let Some(pv) = versions.pop() else {
        return Ok(None);
    };
    let path = dir.join(&pv).join("release.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let t: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("{}: not valid TOML: {e}", path.display()))?;
    let mut prev = Vec::new();
    for m in t
        .get("module")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let get = |k: &str| {
            m.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let file = get("file");
        // lib/<module>-<vsn>-<hash>.so; a library named otherwise has no known hash.
        let hash = Path::new(&file)
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit_once('-'))
            .map(|(_, h)| h.to_string())
            .unwrap_or_default();
        prev.push(Prev {
            name: get("name"),
            version: get("version"),
            hash,
        });
    }
    Ok(Some((pv, prev)))
}

/// Release versions in order: dot-separated parts compared as numbers when both are.
pub(crate) fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<String> { s.split(['.', '-', '+']).map(str::to_string).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn lib_stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_start_matches("lib").to_string())
        .unwrap_or_default()
}

/// Build the project's module crates with `profile_args` (e.g. `--release`); the library
/// of each crate, in the project's order. `cancel`, if given, is polled while cargo runs:
/// when it returns true cargo and the compilers it started are killed (cargo runs in a
/// process group of its own, so that no orphaned rustc keeps writing into the target
/// directory the next build uses) and the build fails with "cancelled".
pub(crate) fn cargo_build(
    project: &Project,
    profile_args: &[&str],
    offline: bool,
    cancel: Option<&dyn Fn() -> bool>,
) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new(cargo());
    cmd.arg("build").args(profile_args);
    for c in &project.crates {
        cmd.args(["-p", &c.package]);
    }
    if offline {
        cmd.arg("--offline");
    }
    cmd.args(["--message-format", "json-render-diagnostics"])
        .current_dir(&project.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cancel.is_some() {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("cannot run cargo (is it on PATH?)")?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for cargo")? {
            break st;
        }
        if cancel.is_some_and(|c| c()) {
            // The whole group: cargo, its rustc and linker processes, build scripts.
            if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) with a negative pid signals the process group `pgid`,
                // which is cargo's own (process_group(0) above); it touches no memory.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = (out_t.join(), err_t.join());
            bail!("cancelled");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("Compiling") && !l.trim_start().starts_with("Blocking")
            })
            .collect();
        bail!("{}", errors.join("\n").trim_end());
    }
    let mut libs = Vec::new();
    for c in &project.crates {
        let lib = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"].as_str().map(|n| n.replace('-', "_"))
                        == Some(c.lib_name.clone())
            })
            .flat_map(|m| {
                m["filenames"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|f| f.as_str().map(PathBuf::from))
                    .collect::<Vec<_>>()
            })
            .find(|f| f.extension().is_some_and(|e| e == "so"));
        libs.push(lib.ok_or_else(|| {
            anyhow!(
                "cargo built {} but reported no .so for it: is its crate-type cdylib?",
                c.package
            )
        })?);
    }
    Ok(libs)
}

/// Identify each library (its descriptor, read by loading it into a scratch node) and
/// hash it.
pub(crate) fn identify(libs: &[PathBuf]) -> Result<Vec<Built>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    rt.block_on(async {
        let node = hotswap_runtime::Node::start(hotswap_runtime::NodeConfig::default())
            .context("cannot start a scratch node to read the libraries")?;
        let mut out = Vec::new();
        let mut err = None;
        for lib in libs {
            match node.code().load(lib).await {
                Ok(info) => {
                    let cur = info.current.expect("a loaded module has a current version");
                    match hash_masked(lib, &cur.build_id) {
                        Ok(hash) => out.push(Built {
                            name: info.name,
                            version: cur.version,
                            path: lib.clone(),
                            hash,
                        }),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    err = Some(anyhow!(
                        "{} is not a module the node loads: {e}",
                        lib.display()
                    ));
                    break;
                }
            }
        }
        let _ = node.shutdown(std::time::Duration::from_secs(2)).await;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

/// The hash of what `lib` maps (its allocated sections but the GNU build-id note), with
/// every occurrence of `build_id` zeroed: two builds of the same code hash the same (the
/// SDK's build id, and what derives from it: the linker's build-id note, LLVM's local
/// symbol suffixes in the unmapped symbol table, are left out).
pub(crate) fn hash_masked(lib: &Path, build_id: &str) -> Result<String> {
    use object::read::elf::ElfFile64;
    use object::read::{Object, ObjectSection};
    let bytes = std::fs::read(lib).with_context(|| format!("cannot read {}", lib.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*bytes)
        .map_err(|e| anyhow!("{} is not a 64-bit ELF library: {e}", lib.display()))?;
    let mut mapped = Vec::with_capacity(bytes.len());
    for s in elf.sections() {
        let alloc = match s.flags() {
            object::SectionFlags::Elf { sh_flags, .. } => sh_flags.contains(object::elf::SHF_ALLOC),
            _ => false,
        };
        if !alloc || s.name().ok() == Some(".note.gnu.build-id") {
            continue;
        }
        if let Some((off, len)) = s.file_range() {
            let (off, len) = (off as usize, len as usize);
            if let Some(b) = bytes.get(off..off + len) {
                mapped.extend_from_slice(s.name().unwrap_or("").as_bytes());
                mapped.extend_from_slice(b);
            }
        }
    }
    let id = build_id.as_bytes();
    if !id.is_empty() {
        let mut i = 0;
        while i + id.len() <= mapped.len() {
            if &mapped[i..i + id.len()] == id {
                mapped[i..i + id.len()].fill(0);
                i += id.len();
            } else {
                i += 1;
            }
        }
    }
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&mapped)))
}

#[cfg(test)]
mod tests {
    use super::version_order;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_order_numerically() {
        assert_eq!(version_order("0.10.0", "0.9.0"), Greater);
        assert_eq!(version_order("1.0.0", "1.0.0"), Equal);
        assert_eq!(version_order("1.0", "1.0.1"), Less);
    }
}
