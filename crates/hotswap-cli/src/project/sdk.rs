//! The SDK, embedded in the `hotswap` binary and written into new projects as
//! `vendor/hotswap{,-abi,-macros}` (the SDK is not published on a registry, so a project
//! depends on it by path). The manifests are made standalone: what they inherit from this
//! workspace (`version.workspace = true`, `serde.workspace = true`, ...) is resolved
//! against the workspace manifest embedded with them.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The SDK's files, as `(path under vendor/, contents)`, manifests made standalone.
pub(crate) fn vendored_files() -> Result<Vec<(String, String)>> {
    let ws: toml::Table = WORKSPACE_MANIFEST
        .parse()
        .map_err(|e| anyhow!("the embedded workspace manifest: {e}"))?;
    let mut out = Vec::new();
    for (path, text) in SDK_FILES {
        if path.ends_with("/Cargo.toml") {
            out.push((path.to_string(), standalone_manifest(text, &ws)?));
        } else {
            out.push((path.to_string(), text.to_string()));
        }
    }
    Ok(out)
}

/// Write the SDK under `dir` (`dir/hotswap`, `dir/hotswap-abi`, `dir/hotswap-macros`).
pub(crate) fn write_vendor(dir: &Path) -> Result<()> {
    for (rel, text) in vendored_files()? {
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// The workspace's `Cargo.lock`, a starting point for a project's (cargo keeps the
/// versions it pins and drops what the project does not use).
pub(crate) fn lock() -> &'static str {
    WORKSPACE_LOCK
}

/// `text` (an SDK crate's manifest) with every `workspace = true` resolved against `ws`
/// and the workspace lints left out.
fn standalone_manifest(text: &str, ws: &toml::Table) -> Result<String> {
    let mut m: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("an embedded SDK manifest: {e}"))?;
    let wsp = ws
        .get("workspace")
        .and_then(|w| w.as_table())
        .ok_or_else(|| anyhow!("the embedded workspace manifest has no [workspace]"))?;
    let empty = toml::Table::new();
    let pkg_defaults = wsp
        .get("package")
        .and_then(|p| p.as_table())
        .unwrap_or(&empty);
    let dep_defaults = wsp
        .get("dependencies")
        .and_then(|p| p.as_table())
        .unwrap_or(&empty);
    if let Some(toml::Value::Table(pkg)) = m.get_mut("package") {
        for (k, v) in pkg.iter_mut() {
            if is_inherited(v) {
                *v = pkg_defaults.get(k).cloned().ok_or_else(|| {
                    anyhow!("package.{k} is inherited but the workspace has none")
                })?;
            }
        }
        pkg.insert("publish".into(), false.into());
    }
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(toml::Value::Table(deps)) = m.get_mut(section) {
            for (name, v) in deps.iter_mut() {
                if !is_inherited(v) {
                    continue;
                }
                let mut base = match dep_defaults.get(name) {
                    Some(toml::Value::String(s)) => {
                        let mut t = toml::Table::new();
                        t.insert("version".into(), s.clone().into());
                        t
                    }
                    Some(toml::Value::Table(t)) => t.clone(),
                    _ => {
                        return Err(anyhow!(
                        "{section}.{name} is inherited but the workspace has no such dependency"
                    ))
                    }
                };
                // Workspace path dependencies are the other SDK crates: siblings in vendor/.
                if let Some(toml::Value::String(p)) = base.get("path") {
                    let leaf = Path::new(p)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    base.insert("path".into(), format!("../{leaf}").into());
                }
                if let toml::Value::Table(local) = v {
                    for (k, lv) in local {
                        match k.as_str() {
                            "workspace" => {}
                            "features" => {
                                let mut f = base
                                    .get("features")
                                    .and_then(|f| f.as_array())
                                    .cloned()
                                    .unwrap_or_default();
                                for x in lv.as_array().into_iter().flatten() {
                                    if !f.contains(x) {
                                        f.push(x.clone());
                                    }
                                }
                                base.insert("features".into(), f.into());
                            }
                            _ => {
                                base.insert(k.clone(), lv.clone());
                            }
                        }
                    }
                }
                *v = base.into();
            }
        }
    }
    m.remove("lints");
    Ok(format!(
        "# The hotswap SDK, vendored by `hotswap new` (the SDK is not published).\n{}",
        toml::to_string(&m).context("an SDK manifest does not serialize")?
    ))
}

fn is_inherited(v: &toml::Value) -> bool {
    v.as_table()
        .and_then(|t| t.get("workspace"))
        .and_then(|w| w.as_bool())
        == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }

    /// The embedded SDK is the workspace's: the same files, the same contents.
    #[test]
    fn embedded_sdk_equals_workspace_sources() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut on_disk = Vec::new();
        for k in ["hotswap-abi", "hotswap-macros", "hotswap"] {
            on_disk.push(crates.join(k).join("Cargo.toml"));
            files_under(&crates.join(k).join("src"), &mut on_disk);
        }
        let mut embedded: Vec<&str> = SDK_FILES.iter().map(|(p, _)| *p).collect();
        embedded.sort();
        let mut disk: Vec<String> = on_disk
            .iter()
            .map(|p| {
                p.strip_prefix(crates)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        disk.sort();
        assert_eq!(
            embedded, disk,
            "the embedded SDK lists other files than crates/"
        );
        for (rel, text) in SDK_FILES {
            let now = std::fs::read_to_string(crates.join(rel)).unwrap();
            assert!(
                now == *text,
                "{rel}: the embedded copy differs from the workspace's"
            );
        }
        let root = crates.parent().unwrap();
        assert_eq!(
            WORKSPACE_LOCK,
            std::fs::read_to_string(root.join("Cargo.lock")).unwrap()
        );
    }

    /// The vendored manifests inherit nothing and point at their siblings.
    #[test]
    fn vendored_manifests_are_standalone() {
        let files = vendored_files().unwrap();
        let sdk = &files
            .iter()
            .find(|(p, _)| p == "hotswap/Cargo.toml")
            .unwrap()
            .1;
        assert!(!sdk.contains("workspace"), "{sdk}");
        let t: toml::Table = sdk.parse().unwrap();
        assert_eq!(
            t["dependencies"]["hotswap-abi"]["path"].as_str(),
            Some("../hotswap-abi")
        );
        assert_eq!(
            t["dependencies"]["serde"]["features"][0].as_str(),
            Some("derive")
        );
        assert_eq!(t["package"]["edition"].as_str(), Some("2021"));
    }
}
