//! Opening and closing module libraries: the only place that calls `dlopen`, `dlsym` and
//! `dlclose` (`architecture.md` §4).
//!
//! A load (1) reads the file into memory once and inspects those bytes without mapping or
//! running anything ([`elf::inspect`]: ELF class, byte order, machine, type, that nothing is
//! cut short, the descriptor symbol in the dynamic symbol table and the descriptor's fixed
//! header), (2) writes the same bytes to a unique write-once copy in the node's code directory
//! (content hash + load sequence number in the name: glibc matches already-loaded objects by
//! path and by inode, so a version must never be opened from a path or inode used before),
//! (3) opens the copy with `RTLD_NOW | RTLD_LOCAL`, which maps it and runs its ELF
//! constructors (for a module built by the SDK: Rust std's), (4) reads the mapped `static`
//! descriptor and checks all of it **before any module function runs**, and (5) only then
//! calls the module's `init`.
//!
//! The file `dlopen` maps is the file that was inspected: the inspected buffer is what is
//! written to the copy, which is created with `O_EXCL`, mode 0444, in the node's own code
//! directory and never written again, so a source rewritten meanwhile (a build finishing)
//! cannot reach it. A spare copy reused for the same content hash holds bytes that passed the
//! same inspection when it was written. A new build's copy is usually a [`Blank`] the code
//! server made ahead (after the previous load, off the load's path): created the same way,
//! with its pages allocated and nothing written, so that the one write costs a copy of the
//! bytes and not the kernel's page allocation.
//!
//! A close retires the module's thread-exit hooks (see [`super::guard`]), calls `dlclose`,
//! and verifies in `/proc/self/maps` that the image is really gone.

use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hotswap_abi as abi;

use self::error::LoadError;
use super::guard;
use super::heap::Heap;
use super::steps;

mod elf;
pub(crate) mod error;

/// What a successful open yields. Function pointers are valid while the library is open.
pub(crate) struct Opened {
    pub(crate) handle: *mut c_void,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) build_id: String,
    pub(crate) sdk_version: String,
    pub(crate) hash: u64,
    pub(crate) file: PathBuf,
    pub(crate) inode: u64,
    pub(crate) guard_id: u64,
    /// The version's heap, if its allocations go there.
    pub(crate) heap: Option<Heap>,
    pub(crate) poll: abi::PollFn,
    pub(crate) drop_future: abi::DropFn,
    pub(crate) server: Option<abi::ServerVTable>,
    pub(crate) describe: Option<abi::DescribeFn>,
    pub(crate) exports: HashMap<Box<str>, abi::StartFn>,
    pub(crate) export_names: Vec<String>,
    pub(crate) functions: HashMap<Box<str>, abi::CallFn>,
}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns a thread-local NUL-terminated string or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null dlerror result is a valid C string until the next dl* call.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Copy a descriptor string out of the module image.
///
/// # Safety
/// The library must be open and `b` come from its descriptor.
unsafe fn copy_str(b: abi::Bytes, what: &str) -> Result<String, String> {
    if b.len > 4096 {
        return Err(format!("{what} is {} bytes long (at most 4096)", b.len));
    }
    if b.len == 0 {
        return Ok(String::new());
    }
    if b.ptr.is_null() {
        return Err(format!("{what} is a null pointer"));
    }
    // SAFETY: caller contract; the range lies in the mapped module image.
    let s = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
    String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn read_into<'a>(src: &Path, buf: &'a mut Vec<u8>) -> std::io::Result<&'a [u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(src)?;
    let len = f.metadata()?.len() as usize;
    buf.reserve(len);
    f.read_to_end(buf)?;
    Ok(&buf[..])
}

/// Address ranges of the loadable segments of the object the dynamic linker loaded from
/// `path` (asked of the linker itself: cheaper than reading `/proc/self/maps`).
fn loaded_ranges(path: &CStr) -> Vec<(usize, usize)> {
    struct Search<'a> {
        path: &'a CStr,
        out: Vec<(usize, usize)>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info record and our `Search` as `data`.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search<'_>)) };
        if info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_name` is a NUL-terminated string owned by the linker.
        if unsafe { CStr::from_ptr(info.dlpi_name) } != search.path {
            return 0;
        }
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                search.out.push((start, start + ph.p_memsz as usize));
            }
        }
        1
    }
    let mut search = Search {
        path,
        out: Vec::new(),
    };
    // SAFETY: the callback only reads the records glibc passes it.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut search as *mut Search<'_> as *mut c_void) };
    search.out
}

/// Address ranges of the mappings of the file with this inode whose path contains `name`.
pub(crate) fn mapped_ranges(inode: u64, name: &str) -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), _perms, _off, _dev, Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if ino.parse::<u64>().ok() != Some(inode) || !line.contains(name) {
            continue;
        }
        if let Some((a, b)) = range.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                out.push((a, b));
            }
        }
    }
    out
}

struct Cleanup<'a> {
    handle: *mut c_void,
    file: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: the handle is open and no module function has run yet (or `init`
            // failed before anything could be left running); closing is the cleanup.
            unsafe { libc::dlclose(self.handle) };
        }
        let _ = std::fs::remove_file(self.file);
    }
}

/// A copy file made ahead of a load, off the load's path: created (`O_EXCL`, mode 0444) in
/// the node's code directory under a name never used before, with pages allocated for the
/// expected size (`fallocate`) but nothing written. A load writes the inspected bytes into it
/// exactly once, as it would into a file it created itself, and skips the kernel's page
/// allocation, which is most of the cost of writing a copy (even on tmpfs).
pub(crate) struct Blank {
    path: PathBuf,
    file: std::fs::File,
}

impl Blank {
    /// Make a blank copy file `name` in `code_dir/.ahead` with `len` bytes allocated. Fails
    /// (and leaves nothing) if the code directory is gone (the node stopped).
    pub(crate) fn make(code_dir: &Path, name: &str, len: u64) -> std::io::Result<Blank> {
        use std::os::fd::AsRawFd;
        let dir = code_dir.join(".ahead");
        // `create_dir`, not `create_dir_all`: never recreate a code directory removed by a
        // node that stopped meanwhile.
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)?;
        let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
        // SAFETY: `fallocate` on a descriptor we own; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Blank { path, file })
    }

    /// Remove an unused blank.
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Write `bytes` as the whole content (the first and only write) and hand back the path.
    fn fill(self, bytes: &[u8]) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        use std::os::unix::fs::FileExt;
        let r = self
            .file
            .write_all_at(bytes, 0)
            .and_then(|()| self.file.set_len(bytes.len() as u64));
        match r {
            Ok(()) => Ok(self.path),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err((self.path, e))
            }
        }
    }
}

/// What was made ahead of a load ([`Blank`], a heap); `open` takes what it uses, and what
/// is dropped unused is removed (the file) and destroyed (the heap).
#[derive(Default)]
pub(crate) struct Ahead {
    /// A blank copy file.
    pub(crate) blank: Option<Blank>,
    /// A fresh heap no module has used.
    pub(crate) heap: Option<Heap>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(b) = self.blank.take() {
            b.discard();
        }
        if let Some(h) = self.heap.take() {
            // SAFETY: a heap made ahead is handed to no module until `open` takes it out of
            // here, so nothing holds a block of it.
            unsafe { h.destroy() };
        }
    }
}

/// Where and for whom a library is opened.
pub(crate) struct Target<'a> {
    /// The node's code directory.
    pub(crate) code_dir: &'a Path,
    /// Node-unique load sequence number.
    pub(crate) seq: u64,
    /// The loading node's id.
    pub(crate) node: u64,
    /// The host table handed to the module's `init`.
    pub(crate) host: &'static abi::HostApi,
    /// Give the version a heap of its own.
    pub(crate) heap: bool,
}

/// Validate, copy and open a module library, then run its `init`.
///
/// # Safety
/// Opening a library runs its ELF initialisers, and `init` runs module code: both are as
/// unsafe as calling any foreign function. The node vouches for this by only loading files
/// an operator named; [`elf::inspect`] refuses, before `dlopen`, a library without the SDK's
/// descriptor, and the checks after `dlopen` refuse one whose descriptor does not match.
pub(crate) unsafe fn open(
    src: &Path,
    expect: Option<&str>,
    target: Target<'_>,
    buf: &mut Vec<u8>,
    take_spare: &mut dyn FnMut(u64) -> Option<PathBuf>,
    ahead: &mut Ahead,
) -> Result<Opened, LoadError> {
    let Target {
        code_dir,
        seq,
        node,
        host,
        heap: want_heap,
    } = target;
    // Read (not mmap: a file being rewritten by a build would fault the node) into a buffer
    // the code server reuses across loads.
    buf.clear();
    let bytes: &[u8] = read_into(src, buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::NoFile { path: src.into() },
        _ => LoadError::Io {
            path: src.into(),
            source: e,
        },
    })?;
    // Nothing of the library is mapped or run before this passes.
    steps::mark("read");
    elf::inspect(src, bytes)?;
    steps::mark("inspect");
    let hash = xxhash_rust::xxh3::xxh3_64(bytes);
    steps::mark("hash");
    let incoming = code_dir.join(".incoming");
    let io = |path: &Path, e: std::io::Error| LoadError::Io {
        path: path.into(),
        source: e,
    };
    // A copy of these exact bytes that an earlier version used and that was verified
    // unmapped can be opened again: glibc has forgotten it, and nobody writes to it.
    let spare = take_spare(hash);
    let reused = spare.is_some();
    let file = match (spare, ahead.blank.take()) {
        (Some(f), blank) => {
            ahead.blank = blank;
            f
        }
        // A blank made ahead: the same write-once copy, its pages already allocated.
        (None, Some(b)) => b.fill(bytes).map_err(|(p, e)| io(&p, e))?,
        (None, None) => {
            use std::io::Write;
            std::fs::create_dir_all(&incoming).map_err(|e| io(&incoming, e))?;
            let file = incoming.join(format!("{hash:016x}-{seq}.so"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&file)
                .map_err(|e| io(&file, e))?;
            if let Err(e) = f.write_all(bytes) {
                let _ = std::fs::remove_file(&file);
                return Err(io(&file, e));
            }
            file
        }
    };
    steps::mark("copy");
    let mut cleanup = Cleanup {
        handle: std::ptr::null_mut(),
        file: &file,
    };
    let inode = std::fs::metadata(&file).map_err(|e| io(&file, e))?.ino();
    let cpath = CString::new(file.as_os_str().as_bytes()).map_err(|_| LoadError::NotElf {
        path: src.into(),
        why: "path contains a NUL byte".into(),
    })?;
    // SAFETY: see the function contract. RTLD_LOCAL keeps this version's symbols from
    // interposing on any other version's; never RTLD_GLOBAL or RTLD_NODELETE.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(LoadError::DlOpen {
            path: src.into(),
            message: dlerror_text(),
        });
    }
    steps::mark("stat+dlopen");
    cleanup.handle = handle;
    // SAFETY: symbol lookup in an open handle.
    let sym = unsafe { libc::dlsym(handle, abi::DESCRIPTOR_SYMBOL_C.as_ptr()) };
    let bad = |why: String| LoadError::BadDescriptor {
        path: src.into(),
        why,
    };
    if sym.is_null() {
        // `elf::inspect` found the symbol defined and exported in the dynamic symbol table.
        return Err(bad(format!(
            "`{}` is in the dynamic symbol table but the dynamic linker does not find it ({})",
            abi::DESCRIPTOR_SYMBOL,
            dlerror_text()
        )));
    }
    // Read the fixed prefix first: magic, ABI version and size never change layout.
    let d = sym as *const abi::ModuleDescriptor;
    // SAFETY: the symbol is at least as large as the fixed prefix of every ABI version
    // (magic + two u32); the fields are read by value without creating a reference.
    let (magic, abi_version, size) = unsafe {
        (
            std::ptr::addr_of!((*d).magic).read_unaligned(),
            std::ptr::addr_of!((*d).abi_version).read_unaligned(),
            std::ptr::addr_of!((*d).size).read_unaligned(),
        )
    };
    if magic != abi::MAGIC {
        return Err(bad(
            "wrong magic number (not written by hotswap::module!)".into()
        ));
    }
    if abi_version != abi::ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: src.into(),
            module_abi: abi_version,
            node_abi: abi::ABI_VERSION,
        });
    }
    if size as usize != std::mem::size_of::<abi::ModuleDescriptor>() {
        return Err(bad(format!(
            "descriptor is {size} bytes, ABI {} has {}",
            abi::ABI_VERSION,
            std::mem::size_of::<abi::ModuleDescriptor>()
        )));
    }
    // SAFETY: magic, ABI version and size match, so the layout is ours.
    let d = unsafe { &*d };
    // SAFETY: the library is open and these byte strings come from its descriptor.
    let strings = unsafe {
        (|| -> Result<_, String> {
            Ok((
                copy_str(d.name, "module name")?,
                copy_str(d.version, "version")?,
                copy_str(d.build_id, "build id")?,
                copy_str(d.sdk_version, "SDK version")?,
                copy_str(d.codec, "codec")?,
            ))
        })()
    };
    let (name, version, build_id, sdk_version, codec) = strings.map_err(bad)?;
    if name.is_empty() {
        return Err(bad("module name is empty".into()));
    }
    if codec != hotswap::codec::CODEC_ID {
        return Err(LoadError::CodecMismatch {
            module: name,
            module_codec: codec,
            node_codec: hotswap::codec::CODEC_ID.into(),
        });
    }
    if d.panic_unwind != 1 {
        return Err(LoadError::PanicAbort { module: name });
    }
    if let Some(expected) = expect {
        if expected != name {
            return Err(LoadError::NameMismatch {
                path: src.into(),
                expected: expected.into(),
                found: name,
            });
        }
    }
    if d.exports_len > 100_000 || (d.exports_len > 0 && d.exports.is_null()) {
        return Err(bad(format!(
            "export table of {} entries is invalid",
            d.exports_len
        )));
    }
    let mut exports = HashMap::new();
    let mut export_names = Vec::new();
    for i in 0..d.exports_len {
        // SAFETY: `exports` points at `exports_len` entries in the mapped image (checked
        // non-null above).
        let e = unsafe { &*d.exports.add(i) };
        // SAFETY: as for the other descriptor strings.
        let en = unsafe { copy_str(e.name, "export name") }.map_err(bad)?;
        if exports
            .insert(en.clone().into_boxed_str(), e.start)
            .is_some()
        {
            return Err(bad(format!("export `{en}` is listed twice")));
        }
        export_names.push(en);
    }
    if d.functions_len > 100_000 || (d.functions_len > 0 && d.functions.is_null()) {
        return Err(bad(format!(
            "function table of {} entries is invalid",
            d.functions_len
        )));
    }
    let mut functions = HashMap::new();
    for i in 0..d.functions_len {
        // SAFETY: `functions` points at `functions_len` entries in the mapped image
        // (checked non-null above).
        let f = unsafe { &*d.functions.add(i) };
        // SAFETY: as for the other descriptor strings.
        let fname = unsafe { copy_str(f.name, "function name") }.map_err(bad)?;
        if exports.contains_key(fname.as_str())
            || functions
                .insert(fname.clone().into_boxed_str(), f.call)
                .is_some()
        {
            return Err(bad(format!("export `{fname}` is listed twice")));
        }
        export_names.push(fname);
    }
    let (poll, drop_future, init, describe) = (d.poll, d.drop_future, d.init, d.describe);
    let server = if d.server.is_null() {
        None
    } else {
        // SAFETY: a non-null `server` points at the module's static vtable in the mapped
        // image; it is copied (function pointers only).
        Some(unsafe { *d.server })
    };

    // The descriptor is accepted: watch the image's thread-exit hooks, then run module code.
    static GUARD_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let guard_id = GUARD_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    steps::mark("descriptor");
    guard::register(guard_id, loaded_ranges(&cpath));
    steps::mark("guard");
    let heap = if want_heap {
        ahead.heap.take().or_else(Heap::create)
    } else {
        None
    };
    steps::mark("heap");
    let mut msg: Vec<u8> = Vec::new();
    let st = {
        let _m = guard::InModule::enter(node);
        // SAFETY: `init` comes from the accepted descriptor; the host table is 'static, and
        // the heap id is a live heap's (or 0).
        unsafe {
            init(
                host,
                heap.as_ref().map_or(0, Heap::id),
                &mut msg as *mut Vec<u8> as *mut c_void,
                hotswap::private::write_vec,
            )
        }
    };
    steps::mark("init");
    if st != abi::STATUS_READY {
        guard::retire(guard_id);
        drop(cleanup);
        if let Some(h) = heap {
            let gone = file
                .file_name()
                .is_none_or(|n| mapped_ranges(inode, &n.to_string_lossy()).is_empty());
            if gone {
                // SAFETY: the library is closed and verified unmapped; its `init` failed,
                // so nothing it allocated was handed out.
                unsafe { h.destroy() };
            }
            // Otherwise the heap is kept (dropping it never frees it): the image may
            // still use it.
        }
        return Err(LoadError::InitFailed {
            module: name,
            message: String::from_utf8_lossy(&msg).into_owned(),
        });
    }
    let heap = match heap {
        Some(h) if msg != abi::HEAP_IN_USE => {
            // The module allocates with the system allocator (it had to before `init`, or
            // it was built so): nothing of it is in the heap.
            tracing::warn!(module = %name, "the module does not allocate from its own heap: a purge will not return the memory its statics hold");
            // SAFETY: the module never switched to this heap, so it holds no block of it.
            unsafe { h.destroy() };
            None
        }
        h => h,
    };

    // Give the write-once copy its readable name (same inode, so the mapping is unaffected).
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let dir = code_dir.join(safe(&name));
    let final_path = dir.join(format!("{}-{hash:016x}-{seq}.so", safe(&version)));
    let final_file = if reused {
        file.clone()
    } else {
        match std::fs::create_dir_all(&dir).and_then(|_| std::fs::rename(&file, &final_path)) {
            Ok(()) => final_path,
            Err(_) => file.clone(),
        }
    };
    steps::mark("rename");
    cleanup.handle = std::ptr::null_mut();
    std::mem::forget(cleanup);
    Ok(Opened {
        handle,
        name,
        version,
        build_id,
        sdk_version,
        hash,
        file: final_file,
        inode,
        guard_id,
        heap,
        poll,
        drop_future,
        server,
        describe,
        exports,
        export_names,
        functions,
    })
}

/// What closing a library achieved.
#[derive(Debug)]
pub(crate) enum Closed {
    /// Unmapped: the copy may be deleted or reused for the same bytes.
    Unmapped,
    /// Still mapped after `dlclose`: something pinned it.
    StillMapped(String),
}

/// Retire the guard entries, `dlclose`, and verify the image is unmapped.
///
/// # Safety
/// No thread may run, or later call, any code or data of this library: every future it
/// created was dropped and no call is in flight (the code server checks both).
pub(crate) unsafe fn close(handle: *mut c_void, guard_id: u64, inode: u64, file: &Path) -> Closed {
    let keys = guard::retire(guard_id);
    // SAFETY: caller contract; the guard has just retired every hook pointing into it.
    let rc = unsafe { libc::dlclose(handle) };
    let name = file
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let left = mapped_ranges(inode, &name);
    if rc != 0 {
        return Closed::StillMapped(format!("dlclose failed: {}", dlerror_text()));
    }
    if left.is_empty() {
        Closed::Unmapped
    } else {
        Closed::StillMapped(format!(
            "{} mapping(s) of {} remain after dlclose ({keys} pthread key(s) retired); something in the module pinned it",
            left.len(),
            file.display()
        ))
    }
}
