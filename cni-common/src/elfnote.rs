//! Build identity notes: an ELF note (name `cnirs`) in a plugin executable that says which plugin
//! and which build of its code it is, so that a plugin which links the same code can tell, by
//! reading the first page of a file found in `CNI_PATH`, that running it would run exactly what it
//! already has (see [`crate::invoke::Builtin`]).
//!
//! - [`identity_note!`](crate::identity_note) puts the note into an executable (`.note.cnirs`,
//!   which the linker places in a `PT_NOTE` segment at the start of the file).
//! - [`segments`] and [`notes`] parse an ELF64 little-endian image; pure.
//! - [`read_identities`] reads a file's notes of our name.

use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The note name, NUL-terminated as the ELF format wants.
pub const NAME: &[u8] = b"cnirs\0";
/// The note type of a build identity.
pub const KIND_IDENTITY: u32 = 1;
/// How much of a file is read for its program headers; our notes sit in this first page.
const HEAD: usize = 4096;
/// Largest note segment read from beyond [`HEAD`].
const MAX_SEGMENT: u64 = 64 << 10;

const PT_NOTE: u32 = 4;

/// `s` as a NUL-padded array of `N` bytes (`N` ≥ `s.len()`), for the note's fields.
pub const fn pad<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() <= N, "note field longer than its array");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Round `n` up to a multiple of 4, the alignment of the note's fields.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Put a build identity note with the text `$identity` (a `&'static str` constant) into the
/// executable being built. Use it in a binary's `main.rs`, not in a library, so that only that
/// executable carries it.
#[macro_export]
macro_rules! identity_note {
    ($identity:expr) => {
        const _: () = {
            const DESC: &str = $identity;
            const DESC_LEN: usize = $crate::elfnote::align4(DESC.len());
            #[repr(C, align(4))]
            struct Note {
                namesz: u32,
                descsz: u32,
                kind: u32,
                name: [u8; 8],
                desc: [u8; DESC_LEN],
            }
            #[used]
            #[link_section = ".note.cnirs"]
            static NOTE: Note = Note {
                namesz: $crate::elfnote::NAME.len() as u32,
                descsz: DESC.len() as u32,
                kind: $crate::elfnote::KIND_IDENTITY,
                name: *b"cnirs\0\0\0",
                desc: $crate::elfnote::pad::<DESC_LEN>(DESC),
            };
        };
    };
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A note segment of a file: where it is and how its entries are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteSegment {
    pub offset: u64,
    pub size: u64,
    /// 4 or 8.
    pub align: usize,
}

/// The `PT_NOTE` segments listed by the program headers in `head` (the start of a file). Empty for
/// anything that is not an ELF64 little-endian file, or whose program headers are not in `head`.
pub fn segments(head: &[u8]) -> Vec<NoteSegment> {
    let ident_ok = head.len() >= 64 && head[..4] == *b"\x7fELF" && head[4] == 2 && head[5] == 1;
    if !ident_ok {
        return Vec::new();
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(head, 0x20), u16_at(head, 0x36), u16_at(head, 0x38)) else {
        return Vec::new();
    };
    let (phentsize, phnum) = (usize::from(phentsize), usize::from(phnum));
    if phentsize < 56 {
        return Vec::new();
    }
    let Ok(phoff) = usize::try_from(phoff) else { return Vec::new() };
    (0..phnum)
        .filter_map(|i| {
            let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
            if u32_at(head, ph)? != PT_NOTE {
                return None;
            }
            let align = if u64_at(head, ph + 48)? == 8 { 8 } else { 4 };
            Some(NoteSegment { offset: u64_at(head, ph + 8)?, size: u64_at(head, ph + 32)?, align })
        })
        .collect()
}

/// One note: its name (with the NUL), type and descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

/// The notes of a note segment's bytes, up to the first malformed one.
pub fn notes(segment: &[u8], align: usize) -> Vec<Note<'_>> {
    let up = |n: usize| n.checked_add(align - 1).map(|v| v & !(align - 1));
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 12 <= segment.len() {
        let (Some(namesz), Some(descsz), Some(kind)) = (u32_at(segment, at), u32_at(segment, at + 4), u32_at(segment, at + 8))
        else {
            break;
        };
        let name_at = at + 12;
        let Some(desc_at) = up(name_at + namesz as usize) else { break };
        let Some(end) = desc_at.checked_add(descsz as usize) else { break };
        let (Some(name), Some(desc)) = (segment.get(name_at..name_at + namesz as usize), segment.get(desc_at..end)) else {
            break;
        };
        out.push(Note { name, kind, desc });
        match up(end) {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    out
}

/// The identity notes (name `cnirs`, type [`KIND_IDENTITY`]) of the file at `path`. Reads its first
/// page, and a note segment that lies beyond it.
pub fn read_identities(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut head = Vec::with_capacity(HEAD);
    (&file).take(HEAD as u64).read_to_end(&mut head)?;
    let mut out = Vec::new();
    for seg in segments(&head) {
        let inside = usize::try_from(seg.offset + seg.size).ok().filter(|&end| end <= head.len());
        let owned;
        let bytes: &[u8] = match inside {
            Some(end) => &head[seg.offset as usize..end],
            None if seg.size <= MAX_SEGMENT => {
                let mut buf = vec![0u8; seg.size as usize];
                file.read_exact_at(&mut buf, seg.offset)?;
                owned = buf;
                &owned
            }
            None => continue,
        };
        out.extend(
            notes(bytes, seg.align)
                .into_iter()
                .filter(|n| n.name == NAME && n.kind == KIND_IDENTITY)
                .map(|n| n.desc.to_vec()),
        );
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The identity this test executable carries (the invoke tests use it too).
    pub(crate) const TEST_IDENTITY: &str = "cni-common-tests 1 unit";
    crate::identity_note!(TEST_IDENTITY);

    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let up = |n: usize| (n + align - 1) & !(align - 1);
        let mut v = Vec::new();
        v.extend((name.len() as u32).to_le_bytes());
        v.extend((desc.len() as u32).to_le_bytes());
        v.extend(kind.to_le_bytes());
        v.extend(name);
        v.resize(up(v.len()), 0);
        v.extend(desc);
        v.resize(up(v.len()), 0);
        v
    }

    /// A minimal ELF64 image: header, `phdrs` program headers at 64, then `body` at `body_at`.
    fn image(phdrs: &[(u32, u64, u64, u64)], body_at: usize, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        v[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        v[0x38..0x3a].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(kind, offset, size, align) in phdrs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            ph[48..56].copy_from_slice(&align.to_le_bytes());
            v.extend(ph);
        }
        v.resize(body_at, 0);
        v.extend(body);
        v
    }

    #[test]
    fn finds_notes_in_note_segments_only() {
        let mut body = note(b"GNU\0", 3, &[0xab; 20], 4);
        body.extend(note(NAME, KIND_IDENTITY, b"host-local 0.1.0 abc", 4));
        let len = body.len() as u64;
        let img = image(&[(1, 0, 4096, 4096), (PT_NOTE, 512, len, 4)], 512, &body);
        let segs = segments(&img);
        assert_eq!(segs, vec![NoteSegment { offset: 512, size: len, align: 4 }]);
        let found = notes(&img[512..512 + len as usize], 4);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, b"GNU\0");
        assert_eq!(found[1], Note { name: NAME, kind: KIND_IDENTITY, desc: b"host-local 0.1.0 abc" });
    }

    #[test]
    fn eight_byte_aligned_segments_pad_to_eight() {
        let body = note(b"GNU\0", 5, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 8);
        let n = notes(&body, 8);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].desc.len(), 12);
    }

    #[test]
    fn rejects_what_is_not_elf64_le_and_stops_at_garbage() {
        assert!(segments(b"#!/bin/sh\necho hi\n").is_empty());
        let mut img = image(&[(PT_NOTE, 512, 16, 4)], 512, &[0; 16]);
        img[4] = 1; // 32-bit
        assert!(segments(&img).is_empty());
        // A note whose sizes point past the segment ends the walk.
        let mut bad = note(NAME, KIND_IDENTITY, b"x", 4);
        bad[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(notes(&bad, 4).is_empty());
        assert!(notes(&[0u8; 7], 4).is_empty());
    }

    #[test]
    fn the_macro_puts_the_note_into_the_executable() {
        let exe = std::fs::read_link("/proc/self/exe").expect("the test executable's path");
        let ids = read_identities(&exe).expect("read the test executable");
        assert!(ids.iter().any(|d| d == TEST_IDENTITY.as_bytes()), "no identity note in {}: {ids:?}", exe.display());
        let shell = read_identities(Path::new("/bin/sh")).expect("read /bin/sh");
        assert!(shell.is_empty());
    }
}
