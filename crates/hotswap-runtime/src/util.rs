//! Small helpers every layer may use; this module imports nothing of the crate.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

/// A fast hasher for the node's integer keys (pids, references): they are not attacker
/// controlled, and SipHash showed up in spawn and send profiles.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
/// A hash map keyed by pids or references.
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;
/// A hash set of pids.
pub(crate) type FxSet<K> = std::collections::HashSet<K, FxBuild>;

/// Write `path` so that it holds either its old content or `bytes`, whatever happens: a
/// temporary file in the same directory, synced, renamed over `path`, then the directory
/// synced. On failure, the step that failed (`"create a temporary file for"`, `"write"`,
/// `"sync"`, `"replace"`, `"sync the directory of"`: to be followed by the path) and why;
/// the temporary file is removed.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
) -> Result<(), (&'static str, std::io::Error)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ("create a temporary file for", e))?;
        f.write_all(bytes).map_err(|e| ("write", e))?;
        f.sync_all().map_err(|e| ("sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| ("replace", e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| ("sync the directory of", e))
}
