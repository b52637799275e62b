//! A check that an ELF shared library is whole before the dynamic loader maps it: `dlopen` maps the
//! segments the headers promise, and touching a page past the end of a truncated file (an interrupted
//! copy, a full disk) raises SIGBUS, which would kill the host with no message. Only the headers are read.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

const PT_LOAD: u32 = 1;

/// Refuses an ELF file whose program headers, loadable segments or section headers reach past its end;
/// a file that is not ELF is left to the loader's own error.
pub fn check_complete(path: &Path) -> Result<()> {
    let shown = path.display();
    let length = std::fs::metadata(path).with_context(|| format!("cannot read {shown}"))?.len();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let mut ident = [0u8; 64];
    let got = read_up_to(&mut file, &mut ident).with_context(|| format!("cannot read {shown}"))?;
    if got < 16 || &ident[..4] != b"\x7fELF" {
        return Ok(());
    }
    let wide = ident[4] == 2;
    let little = ident[5] == 1;
    let header_size = if wide { 64 } else { 52 };
    if got < header_size {
        bail!("{shown} is truncated: {length} bytes, shorter than its ELF header");
    }
    let h = Fields { bytes: &ident, little };
    let (phoff, phentsize, phnum, shoff, shentsize, shnum) = if wide {
        (h.u64(32), h.u16(54), h.u16(56), h.u64(40), h.u16(58), h.u16(60))
    } else {
        (h.u32(28) as u64, h.u16(42), h.u16(44), h.u32(32) as u64, h.u16(46), h.u16(48))
    };
    let reaches = |offset: u64, size: u64| offset.checked_add(size).is_none_or(|end| end > length);
    if reaches(phoff, phentsize as u64 * phnum as u64) || reaches(shoff, shentsize as u64 * shnum as u64) {
        bail!("{shown} is truncated or damaged: its ELF headers reach past its {length} bytes");
    }
    let mut table = vec![0u8; phentsize as usize * phnum as usize];
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(phoff))?;
    file.read_exact(&mut table).with_context(|| format!("cannot read {shown}"))?;
    for entry in table.chunks(phentsize as usize) {
        if entry.len() < if wide { 40 } else { 20 } {
            bail!("{shown} is damaged: a program header is shorter than ELF's");
        }
        let p = Fields { bytes: entry, little };
        let (kind, offset, size) =
            if wide { (p.u32(0), p.u64(8), p.u64(32)) } else { (p.u32(0), p.u32(4) as u64, p.u32(16) as u64) };
        if kind == PT_LOAD && reaches(offset, size) {
            bail!("{shown} is truncated: a loadable segment ends at byte {}, the file has {length}", offset + size);
        }
    }
    Ok(())
}

fn read_up_to(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

struct Fields<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Fields<'_> {
    fn take<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[at..at + N]);
        if !self.little {
            out.reverse();
        }
        out
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.take(at))
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.take(at))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.take(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_whole_and_its_truncation_is_refused() {
        let whole = std::env::current_exe().unwrap();
        check_complete(&whole).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.so");
        let bytes = std::fs::read(&whole).unwrap();
        std::fs::write(&cut, &bytes[..100_000.min(bytes.len() / 2)]).unwrap();
        let error = check_complete(&cut).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
        std::fs::write(&cut, b"not an ELF file").unwrap();
        check_complete(&cut).unwrap();
    }
}
