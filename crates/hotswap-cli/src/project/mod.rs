//! A hotswap **project**: a cargo workspace of module crates plus a project file,
//! `Hotswap.toml`, that describes the release built from it (`hotswap new` makes one,
//! `hotswap release` builds a release directory from it, `hotswap dev` runs it and keeps it
//! current).
//!
//! ```toml
//! [release]
//! name = "shop"          # the release's name
//! version = "0.1.0"      # the release's version: bump it for every release
//! modules = ["cart"]     # optional: the module crates, in load order (default: every
//!                        # workspace member built as a cdylib, in name order)
//!
//! [node]                 # optional: release.toml's [node] settings, copied as they are
//!
//! [[application]]        # release.toml's [[application]], copied (version defaults to
//! name = "shop"          # the release's)
//! start = [ { server = "cart", arg = 0, name = "cart" } ]
//!
//! [upgrade.cart]         # optional: release.toml's [upgrade.<module>], copied
//! ```

pub(crate) mod build;
pub(crate) mod dev;
pub(crate) mod new;
pub(crate) mod sdk;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The project file's name.
pub(crate) const PROJECT_FILE: &str = "Hotswap.toml";

/// A project: its root, its project file, and its module crates.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    /// The directory of `Hotswap.toml` (and of the cargo workspace).
    pub(crate) root: PathBuf,
    /// The project file, parsed.
    pub(crate) file: toml::Table,
    /// The release's name.
    pub(crate) name: String,
    /// The release's version.
    pub(crate) version: String,
    /// The module crates, in load order.
    pub(crate) crates: Vec<ModuleCrate>,
    /// cargo's target directory.
    pub(crate) target_dir: PathBuf,
    /// Every local (path) package the module crates depend on, the crates included: the
    /// directories a watcher watches.
    pub(crate) local_dirs: Vec<PathBuf>,
}

/// One module crate of the project.
#[derive(Debug, Clone)]
pub(crate) struct ModuleCrate {
    /// The package name.
    pub(crate) package: String,
    /// The library target's name (the file is `lib<lib_name>.so`).
    pub(crate) lib_name: String,
    /// The package's directory.
    pub(crate) dir: PathBuf,
}

/// Find the project containing `start` (it or a parent holds `Hotswap.toml`).
pub(crate) fn find_root(start: &Path) -> Result<PathBuf> {
    let start = start
        .canonicalize()
        .with_context(|| format!("{}: no such directory", start.display()))?;
    let mut d: &Path = &start;
    loop {
        if d.join(PROJECT_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        match d.parent() {
            Some(p) => d = p,
            None => bail!(
                "no {PROJECT_FILE} in {} or any parent: run this inside a hotswap project (`hotswap new <name>` makes one)",
                start.display()
            ),
        }
    }
}

fn str_key<'a>(t: &'a toml::Table, key: &str, what: &str) -> Result<Option<&'a str>> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(v) => bail!("{what}: `{key}` must be a non-empty string, not {v}"),
    }
}

impl Project {
    /// Read the project at `root` (a directory with `Hotswap.toml`) and its crates from
    /// `cargo metadata`.
    pub(crate) fn load(root: &Path) -> Result<Project> {
        let root = find_root(root)?;
        let path = root.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{}: not valid TOML: {e}", path.display()))?;
        let what = path.display().to_string();
        for key in file.keys() {
            if !["release", "node", "application", "upgrade"].contains(&key.as_str()) {
                bail!("{what}: unknown section `{key}` (expected release, node, application, upgrade)");
            }
        }
        let rel = match file.get("release") {
            Some(toml::Value::Table(t)) => t,
            _ => bail!("{what}: needs a [release] table with `name` and `version`"),
        };
        for key in rel.keys() {
            if !["name", "version", "modules"].contains(&key.as_str()) {
                bail!("{what}: [release] has an unknown key `{key}` (expected name, version, modules)");
            }
        }
        let name = str_key(rel, "name", &format!("{what} [release]"))?
            .ok_or_else(|| anyhow!("{what}: [release] needs `name = \"...\"`"))?
            .to_string();
        let version = str_key(rel, "version", &format!("{what} [release]"))?
            .ok_or_else(|| anyhow!("{what}: [release] needs `version = \"...\"`"))?
            .to_string();
        let wanted: Option<Vec<String>> = match rel.get("modules") {
            None => None,
            Some(toml::Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            anyhow!("{what}: [release] modules must be crate names (strings)")
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(v) => bail!("{what}: [release] modules must be a list of crate names, not {v}"),
        };
        let meta = cargo_metadata(&root)?;
        let (crates, local_dirs) = module_crates(&meta, wanted.as_deref(), &root)?;
        let target_dir = meta
            .get("target_directory")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("cargo metadata has no target_directory"))?;
        Ok(Project {
            root,
            file,
            name,
            version,
            crates,
            target_dir,
            local_dirs,
        })
    }

    /// The manifest of release `version` whose modules are `modules` (name, version, file
    /// relative to the release directory): the project file's `[node]`, `[[application]]`
    /// and `[upgrade.*]`, with `[release]` and `[[module]]` written for this release.
    pub(crate) fn manifest(&self, version: &str, modules: &[(String, String, String)]) -> String {
        let mut out = toml::Table::new();
        let mut rel = toml::Table::new();
        rel.insert("name".into(), self.name.clone().into());
        rel.insert("version".into(), version.into());
        out.insert("release".into(), rel.into());
        if let Some(n) = self.file.get("node") {
            out.insert("node".into(), n.clone());
        }
        let mods: Vec<toml::Value> = modules
            .iter()
            .map(|(name, vsn, file)| {
                let mut t = toml::Table::new();
                t.insert("name".into(), name.clone().into());
                t.insert("version".into(), vsn.clone().into());
                t.insert("file".into(), file.clone().into());
                t.into()
            })
            .collect();
        out.insert("module".into(), mods.into());
        if let Some(toml::Value::Array(apps)) = self.file.get("application") {
            let apps: Vec<toml::Value> = apps
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    if let toml::Value::Table(t) = &mut a {
                        t.entry("version").or_insert_with(|| version.into());
                    }
                    a
                })
                .collect();
            out.insert("application".into(), apps.into());
        }
        if let Some(u) = self.file.get("upgrade") {
            out.insert("upgrade".into(), u.clone());
        }
        format!(
            "# Written by `hotswap` from {PROJECT_FILE}; edit that file, not this one.\n{}",
            toml::to_string(&out).expect("a TOML table serializes")
        )
    }
}

/// `cargo metadata` of the workspace at `root`, as JSON.
fn cargo_metadata(root: &Path) -> Result<serde_json::Value> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("cannot run cargo (is it installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed in {}:\n{}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed something that is not JSON")
}

/// The cargo to run: `$CARGO` when set (inside cargo), else `cargo`.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The workspace members built as cdylibs (or the ones `wanted` names, in that order), and
/// the directories of every local package they depend on, transitively.
fn module_crates(
    meta: &serde_json::Value,
    wanted: Option<&[String]>,
    root: &Path,
) -> Result<(Vec<ModuleCrate>, Vec<PathBuf>)> {
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut found = Vec::new();
    for p in packages
        .iter()
        .filter(|p| members.contains(&p["id"].as_str().unwrap_or("")))
    {
        let lib = p["targets"].as_array().and_then(|ts| {
            ts.iter().find(|t| {
                t["crate_types"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
            })
        });
        if let Some(lib) = lib {
            let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
            found.push(ModuleCrate {
                package: p["name"].as_str().unwrap_or_default().to_string(),
                lib_name: lib["name"].as_str().unwrap_or_default().replace('-', "_"),
                dir: manifest.parent().unwrap_or(root).to_path_buf(),
            });
        }
    }
    found.sort_by(|a, b| a.package.cmp(&b.package));
    let crates = match wanted {
        None => found,
        Some(w) => w
            .iter()
            .map(|name| {
                found.iter().find(|c| &c.package == name).cloned().ok_or_else(|| {
                    anyhow!(
                        "{PROJECT_FILE} [release] modules names {name:?}, which is not a cdylib crate of this workspace (the cdylib crates are: {})",
                        found.iter().map(|c| c.package.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    if crates.is_empty() {
        bail!(
            "the workspace at {} has no module crate (a member with `crate-type = [\"cdylib\"]`)",
            root.display()
        );
    }
    // Local packages reachable from the module crates through path dependencies.
    let by_name = |n: &str| packages.iter().find(|p| p["name"] == n);
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut todo: Vec<String> = crates.iter().map(|c| c.package.clone()).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let Some(p) = by_name(&n) else { continue };
        if let Some(m) = p["manifest_path"].as_str() {
            if let Some(d) = Path::new(m).parent() {
                dirs.push(d.to_path_buf());
            }
        }
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["path"].is_string() {
                if let Some(dn) = d["name"].as_str() {
                    todo.push(dn.to_string());
                }
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    Ok((crates, dirs))
}
