//! Appending to a part file with direct I/O (`O_DIRECT`): the bytes are gathered in one
//! aligned buffer, reused for the whole import, and written from it straight to the disk,
//! bypassing the page cache.
//!
//! An import writes each byte once and does not read it back, so the page cache only costs
//! here: a copy into freshly allocated pages, their writeback, and their eviction, all on the
//! two cores that also receive and hash. On a 2 GiB raw import over loopback, direct appends
//! took the server's system CPU from 2.3–2.5 s (buffered, with drop-behind) to 1.2–1.4 s, and
//! the import from 0.82–0.88 to 0.95–1.00 of the md5sum ∥ sha512sum ceiling. 4 MiB writes one
//! at a time reach ~0.9 GB/s on these disks (`dd oflag=direct bs=4M`), twice what an import
//! needs, so the writer does not wait on the disk in practice.
//!
//! Zero blocks become holes: each [`SPARSE_BLOCK`] of the region that is all zeros is not
//! written (the part file is new, so an unwritten block reads as zeros), as `qemu-img
//! convert`'s default `-S 4k` does. The stream, and so every digest, is unchanged.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Bytes per direct write: the size of the gathering buffer.
pub const DIRECT_WRITE_SIZE: usize = 4 << 20;

/// Alignment of the buffer, the offsets and the lengths of direct writes. 4 KiB covers the
/// logical block sizes in common use (512 B and 4 KiB).
const ALIGN: usize = 4096;

/// Granularity of holes: a block this size (aligned in the file) that is all zeros is left
/// unwritten. 4 KiB: `qemu-img convert`'s default (`-S 4k`) and the file systems' block size.
pub const SPARSE_BLOCK: usize = ALIGN;

/// A second, write-only descriptor on a part file, opened with `O_DIRECT`, and the aligned
/// buffer that gathers appended bytes into [`DIRECT_WRITE_SIZE`] writes.
#[derive(Debug)]
pub(super) struct DirectAppender {
    file: File,
    /// `DIRECT_WRITE_SIZE + ALIGN` bytes; the aligned region starts at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the region in use.
    filled: usize,
    /// File offset the region will be written at.
    offset: u64,
}

impl DirectAppender {
    /// Opens `path` (an empty part file) for direct writes, and checks with one aligned
    /// write of zeros that the file system takes them. `None` when it does not (the caller
    /// then writes through the page cache).
    pub(super) fn open(path: &Path) -> Option<Self> {
        let flags = OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC;
        let file = File::from(rustix::fs::open(path, flags, Mode::empty()).ok()?);
        let buf = vec![0u8; DIRECT_WRITE_SIZE.saturating_add(ALIGN)];
        let start = buf.as_ptr().align_offset(ALIGN);
        let mut appender = DirectAppender {
            file,
            buf,
            start,
            filled: 0,
            offset: 0,
        };
        // The probe write lands at offset 0, where the first real write will go, and the
        // file's length is set at commit, so it leaves no trace.
        appender.write_region(ALIGN, false).ok()?;
        appender.offset = 0;
        Some(appender)
    }

    /// Appends `data`, writing the buffer each time it fills.
    pub(super) fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = DIRECT_WRITE_SIZE
                .saturating_sub(self.filled)
                .min(data.len());
            let (now, rest) = data.split_at(n);
            let filled = self.filled;
            self.region_mut(filled, n)
                .ok_or_else(|| io::Error::other("direct write buffer overrun"))?
                .copy_from_slice(now);
            self.filled = filled.saturating_add(n);
            data = rest;
            if self.filled == DIRECT_WRITE_SIZE {
                self.write_region(DIRECT_WRITE_SIZE, true)?;
            }
        }
        Ok(())
    }

    /// Writes what is still buffered, padded with zeros to the alignment: the file is then
    /// longer than the image, and the caller truncates it to the image's length.
    pub(super) fn finish(mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let padded = self.filled.next_multiple_of(ALIGN);
        let filled = self.filled;
        self.region_mut(filled, padded.saturating_sub(filled))
            .ok_or_else(|| io::Error::other("direct write buffer overrun"))?
            .fill(0);
        self.write_region(padded, true)
    }

    /// `len` bytes of the aligned region from `from`.
    fn region_mut(&mut self, from: usize, len: usize) -> Option<&mut [u8]> {
        let begin = self.start.checked_add(from)?;
        self.buf.get_mut(begin..begin.checked_add(len)?)
    }

    /// Writes the first `len` bytes of the region at `offset` (with `holes`, only its runs of
    /// blocks that are not all zeros) and empties the region.
    fn write_region(&mut self, len: usize, holes: bool) -> io::Result<()> {
        let begin = self.start;
        let region = self
            .buf
            .get(begin..begin.saturating_add(len))
            .ok_or_else(|| io::Error::other("direct write buffer overrun"))?;
        if holes {
            for (from, run) in nonzero_runs(region) {
                let at = self
                    .offset
                    .saturating_add(u64::try_from(from).unwrap_or(u64::MAX));
                self.file.write_all_at(run, at)?;
            }
        } else {
            self.file.write_all_at(region, self.offset)?;
        }
        self.offset = self
            .offset
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.filled = 0;
        Ok(())
    }
}

/// The runs of consecutive [`SPARSE_BLOCK`]s of `region` that are not all zeros, with their
/// offsets in it (block-aligned, so direct writes stay aligned).
fn nonzero_runs(region: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut blocks = region.chunks(SPARSE_BLOCK).enumerate().peekable();
    std::iter::from_fn(move || {
        // Skip zero blocks, then take the non-zero ones that follow.
        let (first, _) = blocks.find(|(_, b)| !is_zero(b))?;
        let mut last = first;
        while let Some((i, _)) = blocks.next_if(|(_, b)| !is_zero(b)) {
            last = i;
        }
        let from = first.saturating_mul(SPARSE_BLOCK);
        let to = last
            .saturating_add(1)
            .saturating_mul(SPARSE_BLOCK)
            .min(region.len());
        Some((from, region.get(from..to).unwrap_or_default()))
    })
}

/// Whether `data` is all zeros (16 bytes at a time).
fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(16);
    let body = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    body && words.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn test_nonzero_runs_skip_zero_blocks_and_merge_neighbours() {
        let mut region = vec![0u8; 8 * SPARSE_BLOCK];
        region[SPARSE_BLOCK + 5] = 1; // block 1
        region[2 * SPARSE_BLOCK] = 1; // block 2, joins block 1
        region[6 * SPARSE_BLOCK + SPARSE_BLOCK - 1] = 1; // block 6
        let runs: Vec<(usize, usize)> = nonzero_runs(&region)
            .map(|(at, run)| (at, run.len()))
            .collect();
        assert_eq!(
            runs,
            vec![
                (SPARSE_BLOCK, 2 * SPARSE_BLOCK),
                (6 * SPARSE_BLOCK, SPARSE_BLOCK)
            ]
        );
        assert_eq!(nonzero_runs(&[0u8; 3 * SPARSE_BLOCK]).count(), 0);
    }
}
