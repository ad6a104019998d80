//! A static look at an ELF file, before `dlopen` runs any of its code: is it a shared library,
//! is it whole (every table and loadable segment inside the file, so a truncated library is
//! refused instead of killing the process with SIGBUS when the loader touches a missing page),
//! and does it export a given dynamic symbol (so a library that is not a vpt plugin is refused
//! without running its constructors).

use std::{fs::File, os::unix::fs::FileExt, path::Path};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
/// Caps on what a sane shared library holds, so a crafted header cannot make us allocate much.
const MAX_TABLE_BYTES: u64 = 64 << 20;

/// What the static check learned about a shared library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// Whether the dynamic symbol table defines the symbol asked about; `None` when the file
    /// has no section headers to look in.
    pub exports: Option<bool>,
}

/// Why a file is not a whole shared library, in words for the user.
pub type Refusal = String;

/// Reads the headers of `path` and checks it is a whole ELF shared library, and whether it
/// defines the dynamic symbol `symbol`. Runs no code from the file.
pub fn inspect(path: &Path, symbol: &[u8]) -> Result<ElfInfo, Refusal> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let r = Reader::new(f, len)?;
    check_machine(r.u16(18)?, r.is64)?;
    match r.u16(16)? {
        3 => {}
        1 => return Err("not a shared library (an ELF object file)".into()),
        2 => return Err("not a shared library (an ELF executable)".into()),
        4 => return Err("not a shared library (an ELF core dump)".into()),
        t => return Err(format!("not a shared library (ELF type {t})")),
    }
    let w = r.word;
    let (phoff, shoff) = (r.addr(24 + w)?, r.addr(24 + 2 * w)?);
    let base = 24 + 3 * w + 4; // after e_entry, e_phoff, e_shoff, e_flags
    let (phentsize, phnum) = (r.u16(base + 2)? as u64, r.u16(base + 4)? as u64);
    let (shentsize, shnum) = (r.u16(base + 6)? as u64, r.u16(base + 8)? as u64);
    let truncated = |what: &str| {
        format!(
            "truncated or damaged: its {what} lies beyond the end of the file ({len} bytes); \
             rebuild or recopy it"
        )
    };
    r.within(phoff, phentsize * phnum)
        .map_err(|_| truncated("program header table"))?;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = r.u32(ph)?;
        if kind != PT_LOAD && kind != PT_DYNAMIC {
            continue;
        }
        let (offset, filesz) = if r.is64 {
            (r.u64(ph + 8)?, r.u64(ph + 32)?)
        } else {
            (r.u32(ph + 4)? as u64, r.u32(ph + 16)? as u64)
        };
        r.within(offset, filesz)
            .map_err(|_| truncated(&format!("segment {i}")))?;
        if kind == PT_DYNAMIC && r.is_pie(offset, filesz)? {
            return Err("not a shared library (an executable)".into());
        }
    }
    if shnum == 0 {
        return Ok(ElfInfo { exports: None });
    }
    r.within(shoff, shentsize * shnum)
        .map_err(|_| truncated("section header table"))?;
    let section = |i: u64| -> Result<Section, Refusal> {
        let sh = shoff + i * shentsize;
        let (offset, size, link, entsize) = if r.is64 {
            (
                r.u64(sh + 24)?,
                r.u64(sh + 32)?,
                r.u32(sh + 40)?,
                r.u64(sh + 56)?,
            )
        } else {
            let g = |o| r.u32(sh + o).map(u64::from);
            (g(16)?, g(20)?, r.u32(sh + 24)?, g(36)?)
        };
        Ok(Section {
            kind: r.u32(sh + 4)?,
            offset,
            size,
            link,
            entsize,
        })
    };
    let mut exports = Some(false);
    for i in 0..shnum {
        let s = section(i)?;
        if s.kind != SHT_NOBITS {
            r.within(s.offset, s.size)
                .map_err(|_| truncated(&format!("section {i}")))?;
        }
        if s.kind == SHT_DYNSYM && exports == Some(false) {
            let strtab = section(u64::from(s.link))?;
            exports = Some(r.defines(&s, &strtab, symbol)?);
        }
    }
    Ok(ElfInfo { exports })
}

/// ELF `e_machine` values and their names, for the architectures vpt is likely to meet.
const MACHINES: &[(u16, &str)] = &[
    (3, "x86 (32-bit)"),
    (8, "MIPS"),
    (20, "PowerPC"),
    (21, "PowerPC 64"),
    (22, "s390"),
    (40, "ARM (32-bit)"),
    (62, "x86-64"),
    (183, "AArch64"),
    (243, "RISC-V"),
    (258, "LoongArch"),
];

/// This process's `e_machine`, if it is one of [`MACHINES`].
fn host_machine() -> Option<u16> {
    let arch = std::env::consts::ARCH;
    let m = match arch {
        "x86" => 3,
        "mips" | "mips64" => 8,
        "powerpc" => 20,
        "powerpc64" => 21,
        "s390x" => 22,
        "arm" => 40,
        "x86_64" => 62,
        "aarch64" => 183,
        "riscv32" | "riscv64" => 243,
        "loongarch64" => 258,
        _ => return None,
    };
    Some(m)
}

fn machine_name(m: u16) -> String {
    MACHINES
        .iter()
        .find(|(k, _)| *k == m)
        .map_or_else(|| format!("ELF machine {m}"), |(_, n)| n.to_string())
}

/// Refuses a library built for another architecture or word size (which `dlopen` would report
/// only as "No such file or directory" or "wrong ELF class").
fn check_machine(machine: u16, is64: bool) -> Result<(), Refusal> {
    if let Some(host) = host_machine() {
        if machine != host {
            return Err(format!(
                "built for another architecture ({}); this machine runs {}: rebuild it here",
                machine_name(machine),
                machine_name(host)
            ));
        }
    }
    let host64 = cfg!(target_pointer_width = "64");
    if is64 != host64 {
        let bits = |b: bool| if b { "64-bit" } else { "32-bit" };
        return Err(format!(
            "built for another word size ({} ELF); this machine runs {} programs: rebuild it here",
            bits(is64),
            bits(host64)
        ));
    }
    Ok(())
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
}

struct Reader {
    f: File,
    len: u64,
    is64: bool,
    le: bool,
    /// Size of an address/offset field: 8 (ELF64) or 4 (ELF32).
    word: u64,
}

impl Reader {
    fn new(f: File, len: u64) -> Result<Reader, Refusal> {
        let mut ident = [0u8; 16];
        if len < 52 || f.read_exact_at(&mut ident, 0).is_err() || ident[..4] != *b"\x7fELF" {
            return Err("not a shared library (not an ELF file)".into());
        }
        let is64 = match ident[4] {
            1 => false,
            2 => true,
            c => return Err(format!("not a shared library (unknown ELF class {c})")),
        };
        Ok(Reader {
            f,
            len,
            is64,
            le: ident[5] != 2,
            word: if is64 { 8 } else { 4 },
        })
    }

    /// Ok when `[offset, offset + size)` lies inside the file.
    fn within(&self, offset: u64, size: u64) -> Result<(), ()> {
        match offset.checked_add(size) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(()),
        }
    }

    fn bytes<const N: usize>(&self, at: u64) -> Result<[u8; N], Refusal> {
        let mut b = [0u8; N];
        self.within(at, N as u64)
            .and_then(|_| self.f.read_exact_at(&mut b, at).map_err(|_| ()))
            .map_err(|_| format!("truncated or damaged: cannot read its headers at byte {at}"))?;
        Ok(b)
    }

    fn u16(&self, at: u64) -> Result<u16, Refusal> {
        let b = self.bytes::<2>(at)?;
        Ok(if self.le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, at: u64) -> Result<u32, Refusal> {
        let b = self.bytes::<4>(at)?;
        Ok(if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(&self, at: u64) -> Result<u64, Refusal> {
        let b = self.bytes::<8>(at)?;
        Ok(if self.le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    /// An address or offset field (8 bytes in ELF64, 4 in ELF32).
    fn addr(&self, at: u64) -> Result<u64, Refusal> {
        if self.is64 {
            self.u64(at)
        } else {
            self.u32(at).map(u64::from)
        }
    }

    /// Whether the dynamic section at `[offset, offset + size)` marks a position-independent
    /// executable (`DF_1_PIE`), which `dlopen` refuses.
    fn is_pie(&self, offset: u64, size: u64) -> Result<bool, Refusal> {
        let entry = 2 * self.word;
        for k in 0..(size / entry).min(4096) {
            let at = offset + k * entry;
            let (tag, val) = (self.addr(at)?, self.addr(at + self.word)?);
            match tag {
                DT_NULL => break,
                DT_FLAGS_1 => return Ok(val & DF_1_PIE != 0),
                _ => {}
            }
        }
        Ok(false)
    }

    fn table(&self, s: &Section) -> Result<Vec<u8>, Refusal> {
        if s.size > MAX_TABLE_BYTES {
            return Err(format!("damaged: a symbol table of {} bytes", s.size));
        }
        let mut b = vec![0u8; s.size as usize];
        self.f
            .read_exact_at(&mut b, s.offset)
            .map_err(|e| format!("cannot read its symbol table: {e}"))?;
        Ok(b)
    }

    /// Whether the dynamic symbol table `dynsym` (names in `strtab`) defines `symbol`.
    fn defines(&self, dynsym: &Section, strtab: &Section, symbol: &[u8]) -> Result<bool, Refusal> {
        let (syms, names) = (self.table(dynsym)?, self.table(strtab)?);
        let entsize = if dynsym.entsize > 0 {
            dynsym.entsize as usize
        } else if self.is64 {
            24
        } else {
            16
        };
        let shndx_at = if self.is64 { 6 } else { 14 };
        let rd32 = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if self.le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        for sym in syms.chunks_exact(entsize) {
            if sym.len() < shndx_at + 2 {
                break;
            }
            let name = rd32(&sym[..4]) as usize;
            let shndx = [sym[shndx_at], sym[shndx_at + 1]];
            let shndx = if self.le {
                u16::from_le_bytes(shndx)
            } else {
                u16::from_be_bytes(shndx)
            };
            let Some(rest) = names.get(name..) else {
                continue;
            };
            let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
            if &rest[..end] == symbol && shndx != SHN_UNDEF {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libm() -> Option<&'static Path> {
        [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib64/libm.so.6",
            "/lib64/libm.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    }

    #[test]
    fn finds_defined_symbols_and_refuses_truncated_copies() {
        let Some(libm) = libm() else { return };
        assert_eq!(inspect(libm, b"cos").unwrap().exports, Some(true));
        assert_eq!(
            inspect(libm, b"vpt_plugin_abi").unwrap().exports,
            Some(false)
        );
        let whole = std::fs::read(libm).unwrap();
        let dir = std::env::temp_dir().join(format!("vpt-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for cut in [60, 4096, whole.len() / 2, whole.len() - 1] {
            let p = dir.join("libcut.so");
            std::fs::write(&p, &whole[..cut]).unwrap();
            let e = inspect(&p, b"cos").unwrap_err();
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_library_for_another_architecture() {
        let Some(libm) = libm() else { return };
        let mut bytes = std::fs::read(libm).unwrap();
        let host = host_machine().unwrap_or(62);
        let other: u16 = if host == 183 { 62 } else { 183 };
        bytes[18..20].copy_from_slice(&other.to_le_bytes());
        let dir = std::env::temp_dir().join(format!("vpt-elf-arch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("libother.so");
        std::fs::write(&p, &bytes).unwrap();
        let e = inspect(&p, b"cos").unwrap_err();
        assert!(e.contains("another architecture"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
