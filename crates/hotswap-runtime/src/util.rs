//! Small helpers every layer may use; this module imports nothing of the crate.

use std::collections::HashMap;

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
