//! The release store: the releases side by side under `releases/<vsn>/` and their states
//! in `releases/RELEASES.toml` (spec §7.1).
//!
//! | status | meaning |
//! |---|---|
//! | `unpacked` | files present, not running |
//! | `current` | running since an upgrade, but **not** what a restart boots |
//! | `permanent` | what a (re)start boots; running unless another release is `current` |
//! | `old` | was current or permanent before |
//!
//! The file is only ever replaced whole: written to a temporary file, synced, renamed over
//! the old one, and the directory synced, so a node killed at any moment leaves either
//! the old or the new file, never a torn one. The state changes only at the edges of an
//! upgrade (after it succeeded) and at `make-permanent`: a node killed during or after an
//! upgrade that was not made permanent boots the permanent release.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dir::ReleaseDir;
use super::manifest::{Manifest, Release};
use super::ReleaseError;
use crate::code::record::record_path;

/// The name of the state file in `releases/`.
pub const RELEASES_FILE: &str = "RELEASES.toml";

/// A release's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    /// Files present, not running.
    Unpacked,
    /// Running since an upgrade; a restart boots the permanent release instead.
    Current,
    /// What a (re)start boots.
    Permanent,
    /// Was current or permanent before.
    Old,
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseStatus::Unpacked => "unpacked",
            ReleaseStatus::Current => "current",
            ReleaseStatus::Permanent => "permanent",
            ReleaseStatus::Old => "old",
        })
    }
}

/// One release of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    /// The release's version (its directory under `releases/`).
    pub version: String,
    /// The release's name.
    pub name: String,
    /// Its status.
    pub status: ReleaseStatus,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default, rename = "release")]
    releases: Vec<ReleaseEntry>,
}

/// The releases of a release directory and their states.
#[derive(Debug, Clone)]
pub struct Store {
    dir: ReleaseDir,
    entries: Vec<ReleaseEntry>,
}

impl Store {
    /// Read `releases/RELEASES.toml` (an absent file is an empty store); every release
    /// directory present but not listed is added as `unpacked`, and entries whose
    /// directory is gone are dropped.
    pub fn open(dir: &ReleaseDir) -> Result<Store, ReleaseError> {
        let path = dir.releases().join(RELEASES_FILE);
        let mut file: StateFile = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                ReleaseError::Store(format!(
                    "{} is not a valid release state file: {e}; fix it, or delete it (the next start recreates it with the booted release permanent)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => {
                return Err(ReleaseError::Store(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let present = dir.versions();
        file.releases.retain(|e| present.contains(&e.version));
        for v in present {
            if !file.releases.iter().any(|e| e.version == v) {
                let name = read_name(dir, &v).unwrap_or_default();
                file.releases.push(ReleaseEntry {
                    version: v,
                    name,
                    status: ReleaseStatus::Unpacked,
                });
            }
        }
        file.releases
            .sort_by(|a, b| version_order(&a.version, &b.version));
        Ok(Store {
            dir: dir.clone(),
            entries: file.releases,
        })
    }

    /// The releases, oldest version first.
    pub fn entries(&self) -> &[ReleaseEntry] {
        &self.entries
    }

    /// The release marked `permanent`, if any.
    pub fn permanent(&self) -> Option<&str> {
        self.with(ReleaseStatus::Permanent)
    }

    /// The release marked `current`, if any.
    pub fn current(&self) -> Option<&str> {
        self.with(ReleaseStatus::Current)
    }

    fn with(&self, s: ReleaseStatus) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.status == s)
            .map(|e| e.version.as_str())
    }

    /// The status of `vsn`, if it is in the store.
    pub fn status(&self, vsn: &str) -> Option<ReleaseStatus> {
        self.entries
            .iter()
            .find(|e| e.version == vsn)
            .map(|e| e.status)
    }

    fn set(&mut self, vsn: &str, s: ReleaseStatus) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.version == vsn) {
            e.status = s;
        }
    }

    /// A node booted `vsn`: with no permanent release yet it becomes permanent; a release
    /// left `current` by a node that was killed goes back to `unpacked` (it is not
    /// running, and it can be upgraded to again). Written at once.
    pub fn booted(&mut self, vsn: &str) -> Result<(), ReleaseError> {
        for e in &mut self.entries {
            if e.status == ReleaseStatus::Current && e.version != vsn {
                e.status = ReleaseStatus::Unpacked;
            }
        }
        match self.permanent() {
            None => self.set(vsn, ReleaseStatus::Permanent),
            Some(p) if p == vsn => {}
            Some(_) => self.set(vsn, ReleaseStatus::Current),
        }
        self.write()
    }

    /// An upgrade from `from` to `to` succeeded: `to` is current (or stays permanent), and
    /// `from`, unless permanent, is old. Written at once.
    pub fn installed(&mut self, from: &str, to: &str) -> Result<(), ReleaseError> {
        if self.status(from) == Some(ReleaseStatus::Current) {
            self.set(from, ReleaseStatus::Old);
        }
        if self.status(to) != Some(ReleaseStatus::Permanent) {
            self.set(to, ReleaseStatus::Current);
        }
        self.write()
    }

    /// Make `vsn` (which must be current or permanent) what a restart boots; the previous
    /// permanent release becomes old. Written at once.
    pub fn make_permanent(&mut self, vsn: &str) -> Result<(), ReleaseError> {
        match self.status(vsn) {
            Some(ReleaseStatus::Permanent) => Ok(()),
            Some(ReleaseStatus::Current) => {
                for e in &mut self.entries {
                    if e.status == ReleaseStatus::Permanent {
                        e.status = ReleaseStatus::Old;
                    }
                }
                self.set(vsn, ReleaseStatus::Permanent);
                self.write()
            }
            Some(s) => Err(ReleaseError::BadStatus {
                version: vsn.into(),
                status: s,
                hint: "only the running release can be made permanent: upgrade to it first".into(),
            }),
            None => Err(self.unknown(vsn)),
        }
    }

    /// The error for a version that is not in the store.
    pub fn unknown(&self, vsn: &str) -> ReleaseError {
        ReleaseError::NoSuchRelease {
            version: vsn.into(),
            known: self.entries.iter().map(|e| e.version.clone()).collect(),
        }
    }

    /// Add an unpacked release. Written at once.
    pub(crate) fn add(&mut self, vsn: &str, name: &str) -> Result<(), ReleaseError> {
        if self.status(vsn).is_none() {
            self.entries.push(ReleaseEntry {
                version: vsn.into(),
                name: name.into(),
                status: ReleaseStatus::Unpacked,
            });
            self.entries
                .sort_by(|a, b| version_order(&a.version, &b.version));
        }
        self.write()
    }

    /// Delete release `vsn`: refused for the permanent and the current (running) one;
    /// deletes its directory and every library file of its manifest that no other
    /// release's manifest names. The paths deleted.
    pub fn remove(&mut self, vsn: &str, running: &str) -> Result<Vec<PathBuf>, ReleaseError> {
        let status = self.status(vsn).ok_or_else(|| self.unknown(vsn))?;
        if status == ReleaseStatus::Permanent || status == ReleaseStatus::Current || vsn == running
        {
            return Err(ReleaseError::BadStatus {
                version: vsn.into(),
                status,
                hint: if status == ReleaseStatus::Permanent {
                    "a restart boots it: make another release permanent first".into()
                } else {
                    "the node runs it: upgrade to another release first".into()
                },
            });
        }
        let mine = library_files(&self.dir, vsn)?;
        let mut others = BTreeSet::new();
        for e in self.entries.iter().filter(|e| e.version != vsn) {
            others.extend(library_files(&self.dir, &e.version)?);
        }
        let mut removed = Vec::new();
        for lib in mine.difference(&others) {
            // The library and its description record (if it has one).
            for f in [lib.clone(), record_path(lib)] {
                match std::fs::remove_file(&f) {
                    Ok(()) => removed.push(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ReleaseError::Store(format!(
                            "cannot delete {}: {e}",
                            f.display()
                        )))
                    }
                }
            }
        }
        let rdir = self.dir.releases().join(vsn);
        std::fs::remove_dir_all(&rdir)
            .map_err(|e| ReleaseError::Store(format!("cannot delete {}: {e}", rdir.display())))?;
        removed.push(rdir);
        self.entries.retain(|e| e.version != vsn);
        self.write()?;
        Ok(removed)
    }

    /// Replace `releases/RELEASES.toml` atomically.
    pub fn write(&self) -> Result<(), ReleaseError> {
        let file = StateFile {
            releases: self.entries.clone(),
        };
        let text = toml::to_string(&file)
            .map_err(|e| ReleaseError::Store(format!("cannot encode the release states: {e}")))?;
        let text = format!(
            "# The releases of this directory and their states (written by hotswap; see the README's \"Release upgrades\").\n{text}"
        );
        write_atomic(&self.dir.releases().join(RELEASES_FILE), text.as_bytes())
    }
}

/// Write `path` so that it holds either its old content or `bytes`, whatever happens:
/// a temporary file in the same directory, synced, renamed over `path`, then the directory
/// synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    crate::util::write_atomic(path, bytes)
        .map_err(|(what, e)| ReleaseError::Store(format!("cannot {what} {}: {e}", path.display())))
}

/// The library files (absolute) a release's manifest names.
fn library_files(dir: &ReleaseDir, vsn: &str) -> Result<BTreeSet<PathBuf>, ReleaseError> {
    let path = dir.manifest(vsn);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ReleaseError::Store(format!("cannot read {}: {e}", path.display())))?;
    let m: Manifest = toml::from_str(&text).map_err(|e| {
        ReleaseError::Store(format!("{} is not a valid manifest: {e}", path.display()))
    })?;
    Ok(m.modules
        .iter()
        .map(|md| dir.root().join(&md.file))
        .collect())
}

fn read_name(dir: &ReleaseDir, vsn: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.manifest(vsn)).ok()?;
    let m: Manifest = toml::from_str(&text).ok()?;
    Some(m.release.name)
}

/// Versions compare by their dot-separated parts, numerically where both are numbers.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let pa: Vec<&str> = a.split('.').collect();
    let pb: Vec<&str> = b.split('.').collect();
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Check a release package (a directory with the release directory's layout:
/// `releases/<vsn>/release.toml` and the files its manifest names) against `dir`: exactly
/// one release, not present yet, a valid manifest, and no file that would overwrite a
/// different file already there. The release and the files to copy (source, target): the
/// manifest, the libraries, and the description records the package has beside them.
pub(crate) fn check_package(
    dir: &ReleaseDir,
    pkg: &Path,
) -> Result<(Release, Vec<(PathBuf, PathBuf)>), ReleaseError> {
    let bad = |m: String| ReleaseError::BadPackage(m);
    let pdir = ReleaseDir::new(pkg);
    let versions = pdir.versions();
    let vsn = match versions.as_slice() {
        [v] => v.clone(),
        [] => {
            return Err(bad(format!(
                "{} holds no release: expected releases/<version>/release.toml inside it",
                pkg.display()
            )))
        }
        many => {
            return Err(bad(format!(
                "{} holds {} releases ({}): a package holds exactly one",
                pkg.display(),
                many.len(),
                many.join(", ")
            )))
        }
    };
    if dir.manifest(&vsn).exists() {
        return Err(bad(format!(
            "release {vsn} is already in {}: remove it first (hotswap remove-release {vsn}) or give the package another version",
            dir.releases().display()
        )));
    }
    let release = Release::load(&pdir, &vsn).map_err(|e| bad(e.to_string()))?;
    let mut copies = vec![(pdir.manifest(&vsn), dir.manifest(&vsn))];
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    for v in dir.versions() {
        for f in library_files(dir, &v).unwrap_or_default() {
            owners.insert(f, v.clone());
        }
    }
    for m in &release.manifest.modules {
        if m.file.is_absolute()
            || m.file
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(bad(format!(
                "module {:?}: file = {:?} must be a path inside the package (relative, without ..)",
                m.name,
                m.file.display().to_string()
            )));
        }
        let src = pdir.root().join(&m.file);
        let dst = dir.root().join(&m.file);
        // The library's description record, if the package has one: copied with it unless
        // the library is there already with a record of its own (a record is only ever
        // used for the exact bytes it names, so either is as good).
        let (src_rec, dst_rec) = (record_path(&src), record_path(&dst));
        if src_rec.is_file() && (!dst.exists() || !dst_rec.exists()) {
            copies.push((src_rec, dst_rec));
        }
        if dst.exists() {
            let same = std::fs::read(&src).ok() == std::fs::read(&dst).ok();
            if !same {
                let owner = owners
                    .get(&dst)
                    .map(|v| format!("release {v}"))
                    .unwrap_or_else(|| "no release (a stray file)".into());
                return Err(bad(format!(
                    "module {:?}: {} already exists with other content (used by {owner}); a release never overwrites another's files: give the library a path of its own (e.g. lib/{}-{}/)",
                    m.name,
                    dst.display(),
                    m.name,
                    m.version
                )));
            }
            continue;
        }
        copies.push((src, dst));
    }
    Ok((release, copies))
}
