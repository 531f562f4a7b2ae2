//! The paths of a release directory (see the parent module for its layout).

use std::path::{Path, PathBuf};

/// Name of the manifest file in `releases/<version>/`.
pub const MANIFEST: &str = "release.toml";

/// The paths of a release directory.
#[derive(Debug, Clone)]
pub struct ReleaseDir {
    root: PathBuf,
}

impl ReleaseDir {
    /// The release directory at `root` (made absolute, so that a node and its control tool
    /// agree whatever their working directories).
    pub fn new(root: &Path) -> ReleaseDir {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        ReleaseDir { root }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `releases/`.
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// The manifest of one version.
    pub fn manifest(&self, version: &str) -> PathBuf {
        self.releases().join(version).join(MANIFEST)
    }

    /// `run/`: pid file, control socket, cookie.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `run/node.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("node.pid")
    }

    /// `run/control.sock`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("control.sock")
    }

    /// `run/cookie`.
    pub fn cookie(&self) -> PathBuf {
        self.run_dir().join("cookie")
    }

    /// `log/`.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// `log/node.log`.
    pub fn log_file(&self) -> PathBuf {
        self.log_dir().join("node.log")
    }

    /// The release versions present (directories under `releases/` holding a manifest).
    pub fn versions(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.releases()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().join(MANIFEST).is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Which version to boot: `wanted` if given, else the one `releases/current` names,
    /// else the only one there is.
    pub fn select(&self, wanted: Option<&str>) -> Result<String, String> {
        let versions = self.versions();
        let root = self.root.display();
        if !self.root.is_dir() {
            return Err(format!(
                "{root}: no such release directory (it should hold releases/<version>/{MANIFEST}; see the README's \"Release directory\")"
            ));
        }
        if versions.is_empty() {
            return Err(format!(
                "{root} holds no release: expected a manifest at releases/<version>/{MANIFEST} (see the README's \"Release directory\")"
            ));
        }
        let current = self.releases().join("current");
        let (vsn, why) = match wanted {
            Some(w) => (w.to_string(), "--release-version".to_string()),
            None => match std::fs::read_to_string(&current) {
                Ok(s) => (s.trim().to_string(), current.display().to_string()),
                Err(_) if versions.len() == 1 => return Ok(versions[0].clone()),
                Err(_) => {
                    return Err(format!(
                        "{root} holds several releases ({}) and no {}: write the version to boot there, or pass --release-version",
                        versions.join(", "),
                        current.display()
                    ))
                }
            },
        };
        if versions.contains(&vsn) {
            Ok(vsn)
        } else {
            Err(format!(
                "release version {vsn:?} (from {why}) is not in {}: the versions there are {}",
                self.releases().display(),
                versions.join(", ")
            ))
        }
    }
}
