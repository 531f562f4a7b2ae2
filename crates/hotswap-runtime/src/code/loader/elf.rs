//! What the loader checks in a module file before `dlopen` maps it. `dlopen` runs a
//! library's ELF constructors (`DT_INIT`, `.init_array`) before it returns, so a check made
//! after it would come after foreign code already ran inside the node: everything that can be
//! told from the file alone is told here, from the bytes, with nothing mapped or run.
//!
//! [`inspect`] is given the bytes that the loader then writes to the version's write-once copy,
//! the file that `dlopen` opens: what is inspected is what is mapped (see `loader::open`). It
//! refuses, each case with its own [`LoadError`]:
//!
//! | found in the file | error |
//! |---|---|
//! | no ELF magic number; an unknown class or byte order; headers that do not parse | `NotElf` |
//! | the header, the program or section header table, a loadable segment or a section ending past the end of the file | `Truncated` |
//! | another word size, byte order or machine than the node's | `WrongPlatform` |
//! | not a shared object: an executable (`ET_EXEC`, or `ET_DYN` flagged `DF_1_PIE`), an unlinked object file, a core dump | `NotElf` |
//! | no dynamic symbol table, or one that does not define `HOTSWAP_MODULE_DESCRIPTOR` | `NoDescriptor` |
//! | a descriptor symbol that is not exported data at least as large as the descriptor's fixed header | `BadDescriptor` |
//! | a fixed header (magic, ABI version, size) with the wrong magic or size | `BadDescriptor` |
//! | a fixed header of another ABI version | `AbiMismatch` |
//!
//! The fixed header (the descriptor's first 16 bytes) is read from the file as the dynamic
//! linker will map it (the bytes of the loadable segment that holds it, zeros past the
//! segment's file size), but only when nothing changes those bytes at load time: no dynamic
//! relocation may touch them, and every relocation section must be of a kind read here (`REL`,
//! `RELA`, `RELR`). In a module built by the SDK none does (they are integers; the
//! descriptor's pointers, which are relocated, come after them). Otherwise the header is left
//! to the check after `dlopen`, which reads every field of the mapped descriptor and remains
//! the authority for the rest (name, codec, panic strategy, export tables).

use std::ops::Range;
use std::path::Path;

use hotswap_abi as abi;
use object::elf;
use object::read::elf::{
    Dyn as _, FileHeader, ProgramHeader as _, Rel as _, Rela as _, SectionHeader as _,
    SectionTable, Sym as _,
};
use object::NativeEndian;

use super::error::LoadError;

/// The ELF header type of the node's own word size, read in the node's byte order.
#[cfg(target_pointer_width = "64")]
type Header = elf::FileHeader64<NativeEndian>;
#[cfg(target_pointer_width = "32")]
type Header = elf::FileHeader32<NativeEndian>;

/// `e_ident[EI_CLASS]` of a library this node can map.
const NODE_CLASS: elf::FileClass = if cfg!(target_pointer_width = "64") {
    elf::ELFCLASS64
} else {
    elf::ELFCLASS32
};

/// `e_ident[EI_DATA]` of a library this node can map.
const NODE_DATA: elf::DataEncoding = if cfg!(target_endian = "little") {
    elf::ELFDATA2LSB
} else {
    elf::ELFDATA2MSB
};

/// `e_machine` of a library this node can map: the architecture the node was compiled for.
/// `None` on an architecture not listed here, where the dynamic linker's own machine check
/// (made before it runs anything) is the only one.
const NODE_MACHINE: Option<elf::Machine> = if cfg!(target_arch = "x86_64") {
    Some(elf::EM_X86_64)
} else if cfg!(target_arch = "aarch64") {
    Some(elf::EM_AARCH64)
} else if cfg!(target_arch = "x86") {
    Some(elf::EM_386)
} else if cfg!(target_arch = "arm") {
    Some(elf::EM_ARM)
} else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
    Some(elf::EM_RISCV)
} else if cfg!(target_arch = "powerpc64") {
    Some(elf::EM_PPC64)
} else if cfg!(target_arch = "s390x") {
    Some(elf::EM_S390)
} else if cfg!(target_arch = "loongarch64") {
    Some(elf::EM_LOONGARCH)
} else {
    None
};

/// Length of the descriptor's fixed header: magic (8 bytes), ABI version, size (4 each).
const FIXED: usize = 16;

fn machine_name(m: u16) -> String {
    let known = match elf::Machine(m) {
        elf::EM_X86_64 => "x86-64",
        elf::EM_386 => "x86 (i386)",
        elf::EM_AARCH64 => "AArch64",
        elf::EM_ARM => "32-bit ARM",
        elf::EM_RISCV => "RISC-V",
        elf::EM_PPC64 => "64-bit PowerPC",
        elf::EM_PPC => "32-bit PowerPC",
        elf::EM_S390 => "IBM Z (s390)",
        elf::EM_LOONGARCH => "LoongArch",
        elf::EM_MIPS => "MIPS",
        elf::EM_SPARCV9 => "SPARC V9",
        _ => return format!("ELF machine {m}"),
    };
    format!("{known} (ELF machine {m})")
}

fn platform(class: elf::FileClass, data: elf::DataEncoding, machine: Option<u16>) -> String {
    let bits = match class {
        elf::ELFCLASS64 => "64-bit",
        elf::ELFCLASS32 => "32-bit",
        _ => "unknown word size",
    };
    let order = match data {
        elf::ELFDATA2LSB => "little-endian",
        elf::ELFDATA2MSB => "big-endian",
        _ => "unknown byte order",
    };
    match machine {
        Some(m) => format!("{bits} {order} {}", machine_name(m)),
        None => format!("{bits} {order}"),
    }
}

/// The node's own platform, in the terms of [`LoadError::WrongPlatform`].
fn node_platform() -> String {
    let machine = NODE_MACHINE.map(|m| m.0);
    match machine {
        Some(_) => platform(NODE_CLASS, NODE_DATA, machine),
        None => format!(
            "{} ({})",
            platform(NODE_CLASS, NODE_DATA, None),
            std::env::consts::ARCH
        ),
    }
}

/// Refuse a file that is not a loadable hotswap module of this node's platform, from its
/// bytes alone, before anything of it is mapped or run (see the module docs for the list).
/// `path` is only used in the errors.
// ELF words are `u64` in the node's class on 64-bit targets, `u32` on 32-bit ones: the
// `.into()`s widen them there.
#[allow(clippy::useless_conversion)]
pub(crate) fn inspect(path: &Path, b: &[u8]) -> Result<(), LoadError> {
    let not_elf = |why: String| LoadError::NotElf {
        path: path.into(),
        why,
    };
    let trunc = |why: String| LoadError::Truncated {
        path: path.into(),
        why,
    };
    let bad = |why: String| LoadError::BadDescriptor {
        path: path.into(),
        why,
    };
    let damaged = |what: &str, e: object::read::Error| {
        not_elf(format!(
            "its {what} cannot be read ({e}): the file is damaged"
        ))
    };

    // The identification bytes: the same place and meaning in every ELF file.
    if b.len() < 4 || b[..4] != elf::ELFMAG {
        return Err(not_elf(
            "no ELF magic number at the start of the file".into(),
        ));
    }
    if b.len() < size_of::<Header>() {
        return Err(trunc(format!(
            "{} bytes is shorter than an ELF header ({} bytes)",
            b.len(),
            size_of::<Header>()
        )));
    }
    let (class, data) = (elf::FileClass(b[4]), elf::DataEncoding(b[5]));
    if !matches!(class, elf::ELFCLASS32 | elf::ELFCLASS64) {
        return Err(not_elf(format!("unknown ELF class {}", class.0)));
    }
    if !matches!(data, elf::ELFDATA2LSB | elf::ELFDATA2MSB) {
        return Err(not_elf(format!("unknown ELF byte order {}", data.0)));
    }
    // `e_machine` is at offset 18 in both classes, in the file's own byte order.
    let machine = match data {
        elf::ELFDATA2LSB => u16::from_le_bytes([b[18], b[19]]),
        _ => u16::from_be_bytes([b[18], b[19]]),
    };
    if class != NODE_CLASS || data != NODE_DATA || NODE_MACHINE.is_some_and(|m| m.0 != machine) {
        return Err(LoadError::WrongPlatform {
            path: path.into(),
            found: platform(class, data, Some(machine)),
            node: node_platform(),
        });
    }

    // From here on the file is of the node's class and byte order.
    let h = Header::parse(b).map_err(|e| damaged("ELF header", e))?;
    let e = NativeEndian;
    match h.e_type(e) {
        elf::ET_DYN => {}
        elf::ET_EXEC => {
            return Err(not_elf(
                "it is an executable (ELF type ET_EXEC), not a shared object (ET_DYN)".into(),
            ))
        }
        elf::ET_REL => {
            return Err(not_elf(
                "it is an object file (ELF type ET_REL) that was never linked into a shared object"
                    .into(),
            ))
        }
        elf::ET_CORE => return Err(not_elf("it is a core dump (ELF type ET_CORE)".into())),
        other => {
            return Err(not_elf(format!(
                "ELF type {} is not a shared object (ET_DYN)",
                other.0
            )))
        }
    }

    // Everything the dynamic linker would map lies inside the file: a file cut short is
    // refused here instead of faulting when a page past its end is touched.
    let len = b.len() as u64;
    let (phoff, phnum): (u64, u64) = (h.e_phoff(e).into(), u64::from(h.e_phnum(e)));
    let ph_end = phoff.saturating_add(u64::from(h.e_phentsize(e)).saturating_mul(phnum));
    if ph_end > len {
        return Err(trunc(format!(
            "program headers end at byte {ph_end}, file has {len}"
        )));
    }
    let phdrs = h
        .program_headers(e, b)
        .map_err(|e| damaged("program headers", e))?;
    let mut loads = Vec::with_capacity(4);
    for (i, ph) in phdrs.iter().enumerate() {
        if ph.p_type(e) == elf::PT_LOAD {
            let (off, filesz): (u64, u64) = (ph.p_offset(e).into(), ph.p_filesz(e).into());
            let end = off.saturating_add(filesz);
            if end > len {
                return Err(trunc(format!(
                    "loadable segment {i} ends at byte {end}, file has {len}"
                )));
            }
            loads.push(ph);
        }
    }
    let shoff: u64 = h.e_shoff(e).into();
    let sh_end =
        shoff.saturating_add(u64::from(h.e_shentsize(e)).saturating_mul(u64::from(h.e_shnum(e))));
    if sh_end > len {
        return Err(trunc(format!(
            "section headers end at byte {sh_end}, file has {len}"
        )));
    }
    let sections = h
        .sections(e, b)
        .map_err(|e| damaged("section headers", e))?;
    if sections.is_empty() {
        return Err(not_elf(
            "it has no section headers, so its dynamic symbols cannot be checked before it is loaded (was it stripped with sstrip?)".into(),
        ));
    }
    for (i, s) in sections.enumerate() {
        if let Some((off, size)) = s.file_range(e) {
            let end = off.saturating_add(size);
            if end > len {
                return Err(trunc(format!(
                    "section {} ends at byte {end}, file has {len}",
                    i.0
                )));
            }
        }
    }

    // A position-independent executable is ET_DYN too; glibc refuses to dlopen one, but say
    // what it is.
    if let Some((dynamic, _)) = sections
        .dynamic(e, b)
        .map_err(|e| damaged("dynamic section", e))?
    {
        let pie = dynamic.iter().any(|d| {
            d.d_tag(e) == elf::DT_FLAGS_1 && Into::<u64>::into(d.d_val(e)) & elf::DF_1_PIE.0 != 0
        });
        if pie {
            return Err(not_elf(
                "it is a position-independent executable (ELF type ET_DYN with DF_1_PIE), not a shared library".into(),
            ));
        }
    }

    // The descriptor symbol, as `dlsym` would find it: defined, exported, data.
    let symbols = sections
        .symbols(e, b, elf::SHT_DYNSYM)
        .map_err(|e| damaged("dynamic symbol table", e))?;
    let strings = symbols.strings();
    let name = abi::DESCRIPTOR_SYMBOL.as_bytes();
    let sym = symbols
        .iter()
        .find(|s| s.st_shndx(e) != elf::SHN_UNDEF && s.name(e, strings).is_ok_and(|n| n == name));
    let Some(sym) = sym else {
        return Err(LoadError::NoDescriptor { path: path.into() });
    };
    let what = abi::DESCRIPTOR_SYMBOL;
    if !matches!(
        sym.st_bind(),
        elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE
    ) || matches!(sym.st_visibility(), elf::STV_HIDDEN | elf::STV_INTERNAL)
    {
        return Err(bad(format!(
            "`{what}` is defined but not exported (local or hidden symbol)"
        )));
    }
    if !matches!(sym.st_type(), elf::STT_OBJECT | elf::STT_NOTYPE) {
        return Err(bad(format!(
            "`{what}` is not data (symbol type {}); it must be the `static` that `hotswap::module!` writes",
            sym.st_type().0
        )));
    }
    let size: u64 = sym.st_size(e).into();
    if size < FIXED as u64 {
        return Err(bad(format!(
            "`{what}` is {size} bytes, smaller than the {FIXED}-byte descriptor header"
        )));
    }
    if matches!(sym.st_shndx(e), elf::SHN_ABS | elf::SHN_COMMON) {
        return Err(bad(format!(
            "`{what}` is an absolute or common symbol, not data in the library's image"
        )));
    }

    // The fixed header as it will be mapped, when nothing at load time changes it.
    let addr: u64 = sym.st_value(e).into();
    let at = addr..addr.saturating_add(FIXED as u64);
    let Some(seg) = loads.iter().find(|ph| {
        let (va, mem): (u64, u64) = (ph.p_vaddr(e).into(), ph.p_memsz(e).into());
        va <= at.start && at.end <= va.saturating_add(mem)
    }) else {
        return Err(bad(format!(
            "`{what}` at address {addr:#x} lies outside every loadable segment"
        )));
    };
    if relocated(&sections, b, &at) {
        return Ok(());
    }
    let mut head = [0u8; FIXED];
    let (va, off, filesz): (u64, u64, u64) = (
        seg.p_vaddr(e).into(),
        seg.p_offset(e).into(),
        seg.p_filesz(e).into(),
    );
    for (i, byte) in head.iter_mut().enumerate() {
        let rel = at.start - va + i as u64;
        if rel < filesz {
            // In the file: `off + filesz <= len` was checked above.
            *byte = b[(off + rel) as usize];
        }
    }
    let magic = &head[..8];
    let abi_version = u32::from_ne_bytes(head[8..12].try_into().expect("4 bytes"));
    let desc_size = u32::from_ne_bytes(head[12..16].try_into().expect("4 bytes"));
    if magic != abi::MAGIC {
        return Err(bad(
            "wrong magic number (not written by hotswap::module!)".into()
        ));
    }
    if abi_version != abi::ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            path: path.into(),
            module_abi: abi_version,
            node_abi: abi::ABI_VERSION,
        });
    }
    if desc_size as usize != size_of::<abi::ModuleDescriptor>() {
        return Err(bad(format!(
            "descriptor is {desc_size} bytes, ABI {} has {}",
            abi::ABI_VERSION,
            size_of::<abi::ModuleDescriptor>()
        )));
    }
    Ok(())
}

/// Whether a dynamic relocation may write into `at` (addresses). "Maybe" counts as yes:
/// relocations of a kind not read here, or a relocation section that does not parse.
#[allow(clippy::useless_conversion)] // as in `inspect`
fn relocated<'data>(
    sections: &SectionTable<'data, Header, &'data [u8]>,
    b: &'data [u8],
    at: &Range<u64>,
) -> bool {
    let e = NativeEndian;
    // A relocation writes at most 8 bytes at its offset.
    let hits = |off: u64| off < at.end && at.start < off.saturating_add(8);
    sections.iter().any(|s| {
        if s.sh_flags(e).0 & u64::from(elf::SHF_ALLOC.0) == 0 {
            return false; // not loaded: relocations kept for a static link (--emit-relocs)
        }
        match s.sh_type(e) {
            elf::SHT_RELA => match s.rela(e, b) {
                Ok(Some((relas, _))) => relas.iter().any(|r| hits(r.r_offset(e).into())),
                _ => true,
            },
            elf::SHT_REL => match s.rel(e, b) {
                Ok(Some((rels, _))) => rels.iter().any(|r| hits(r.r_offset(e).into())),
                _ => true,
            },
            elf::SHT_RELR => match s.relr(e, b) {
                Ok(Some(mut relrs)) => relrs.any(|off| hits(off.into())),
                _ => true,
            },
            elf::SHT_CREL
            | elf::SHT_ANDROID_REL
            | elf::SHT_ANDROID_RELA
            | elf::SHT_ANDROID_RELR => true,
            _ => false,
        }
    })
}
