//! Description records: a module's description of its types, made once when the library is
//! built or packaged and kept in a file beside it, so that a load does not have to run the
//! module's `describe` (a cold first run of the tracer's code in a freshly mapped library:
//! most of what the compatibility check adds to a load).
//!
//! # The file
//!
//! `<library file name>.schema` in the library's directory (`lib/shop-1.2.0-ab12.so` →
//! `lib/shop-1.2.0-ab12.so.schema`), little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | magic `HSDR` |
//! | 4 | format version (`u32`, [`RECORD_VERSION`]) |
//! | 8 | `xxh3_64` of the library file's bytes (the hash a load computes of what it reads) |
//! | 8 | `xxh3_64` of the description bytes (corruption, not trust) |
//! | 4 | length of the description (`u32`) |
//! | n | the description exactly as the module's `describe` wrote it (`ModuleSchema`, MessagePack) |
//!
//! Written by [`record_description`](crate::compat::record_description): the
//! CLI's `hotswap describe --write`, `hotswap release` and `hotswap dev` write one beside
//! every library they put in a release, and a release unpack copies it with its library.
//!
//! # Why the library's hash is enough to trust it
//!
//! The code server reads the record when it first needs a version's description (the
//! version's own checked load, or the first load that compares against it), not at every
//! load, and uses it only when the hash in it equals the `xxh3_64` of the exact bytes the
//! version was loaded from (`loader::open` hashes the buffer it then copies and opens: the
//! version's `hash`). So the description is one that `describe` of these very bytes
//! produced when the record was written (the tracer is deterministic: same code, same
//! description). A record of another build (also: the file at the load's path was
//! rebuilt, with a new record, after this version was loaded from it), a truncated or
//! corrupted one, or one of another format version is ignored (one log line says why) and
//! the node calls `describe` as it would without a record: a bad record never fails a load
//! nor decides a check.
//! xxh3 is not a cryptographic hash, but no adversary is kept out by it: whoever can write
//! the record beside the library can write the library itself, and the library is native
//! code the node runs with its own privileges. What the hash guards against is accident
//! (a record left from another build), for which 64 bits are ample.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The record's magic bytes.
const MAGIC: &[u8; 4] = b"HSDR";
/// The record format's version: a record of another version is ignored.
pub const RECORD_VERSION: u32 = 1;
/// What precedes the description.
const HEADER: usize = 4 + 4 + 8 + 8 + 4;
/// Records larger than this are not read (a description is a few KB).
const MAX_RECORD: u64 = 16 << 20;
/// The suffix appended to the library's file name.
pub const RECORD_SUFFIX: &str = ".schema";

/// Where the description record of the library at `lib` is: `<lib>.schema`.
pub fn record_path(lib: &Path) -> PathBuf {
    let mut s: OsString = lib.as_os_str().to_owned();
    s.push(RECORD_SUFFIX);
    PathBuf::from(s)
}

/// A record's bytes: the header and `description`, for a library whose bytes hash to
/// `lib_hash`.
pub fn encode_record(lib_hash: u64, description: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + description.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.extend_from_slice(&lib_hash.to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(description).to_le_bytes());
    out.extend_from_slice(&(description.len() as u32).to_le_bytes());
    out.extend_from_slice(description);
    out
}

/// The description in a record, if the record is well formed and made for a library whose
/// bytes hash to `lib_hash`; why not otherwise.
pub fn parse_record(bytes: &[u8], lib_hash: u64) -> Result<&[u8], String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "{} bytes, shorter than the {HEADER}-byte header (truncated)",
            bytes.len()
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    if &bytes[..4] != MAGIC {
        return Err("not a description record (wrong magic)".into());
    }
    let version = u32_at(4);
    if version != RECORD_VERSION {
        return Err(format!(
            "record format version {version}, this node reads version {RECORD_VERSION}"
        ));
    }
    let recorded = u64_at(8);
    if recorded != lib_hash {
        return Err(format!(
            "made for a library with hash {recorded:016x}, this one's is {lib_hash:016x} (a record of another build)"
        ));
    }
    let len = u32_at(24) as usize;
    let desc = &bytes[HEADER..];
    if desc.len() != len {
        return Err(format!(
            "the description is {} bytes, the header says {len} (truncated or corrupt)",
            desc.len()
        ));
    }
    if xxhash_rust::xxh3::xxh3_64(desc) != u64_at(16) {
        return Err("the description's checksum does not match (corrupt)".into());
    }
    Ok(desc)
}

/// What the code server finds beside a library when it first needs the description.
#[derive(Debug, Clone)]
pub enum Found {
    /// No record (or the library's directory could not be read).
    Absent,
    /// A valid record for the loaded bytes: the description.
    Valid(std::sync::Arc<[u8]>),
    /// A record that is not used, and why.
    Ignored(String),
}

/// Read the record at `path` (beside the path a load was given) for a library whose bytes
/// hash to `lib_hash`. Never fails: what cannot be used is [`Found::Ignored`] with the
/// reason.
pub(crate) fn find(path: &Path, lib_hash: u64) -> Found {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Absent,
        Err(e) => return Found::Ignored(format!("cannot open it: {e}")),
    };
    // One `statx` and one `read` of the exact size (records are replaced by a rename,
    // never written in place): a record is read on a load's path.
    let len = match f.metadata() {
        Ok(m) if m.len() > MAX_RECORD => {
            return Found::Ignored(format!("larger than {MAX_RECORD} bytes"))
        }
        Ok(m) => m.len() as usize,
        Err(e) => return Found::Ignored(format!("cannot read it: {e}")),
    };
    let mut b = vec![0u8; len];
    if let Err(e) = f.read_exact(&mut b) {
        return Found::Ignored(format!("cannot read it: {e}"));
    }
    match parse_record(&b, lib_hash) {
        Ok(d) => Found::Valid(d.into()),
        Err(why) => Found::Ignored(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_rejects_what_does_not_match() {
        let desc = b"some description bytes".to_vec();
        let r = encode_record(0x1234, &desc);
        assert_eq!(parse_record(&r, 0x1234).unwrap(), &desc[..]);
        let e = parse_record(&r, 0x1235).unwrap_err();
        assert!(e.contains("another build"), "{e}");
        let e = parse_record(&r[..r.len() - 1], 0x1234).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = parse_record(&r[..10], 0x1234).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = r.clone();
        bad[4] = 9;
        let e = parse_record(&bad, 0x1234).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        let mut bad = r.clone();
        bad[0] = b'X';
        assert!(parse_record(&bad, 0x1234).unwrap_err().contains("magic"));
        let mut bad = r.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(parse_record(&bad, 0x1234).unwrap_err().contains("checksum"));
    }

    #[test]
    fn the_record_sits_beside_the_library() {
        assert_eq!(
            record_path(Path::new("/r/lib/shop-1.0.0-ab.so")),
            Path::new("/r/lib/shop-1.0.0-ab.so.schema")
        );
    }
}
