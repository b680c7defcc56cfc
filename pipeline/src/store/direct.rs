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
        appender.write_region(ALIGN).ok()?;
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
                self.write_region(DIRECT_WRITE_SIZE)?;
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
        self.write_region(padded)
    }

    /// `len` bytes of the aligned region from `from`.
    fn region_mut(&mut self, from: usize, len: usize) -> Option<&mut [u8]> {
        let begin = self.start.checked_add(from)?;
        self.buf.get_mut(begin..begin.checked_add(len)?)
    }

    /// Writes the first `len` bytes of the region at `offset` and empties the region.
    fn write_region(&mut self, len: usize) -> io::Result<()> {
        let begin = self.start;
        let region = self
            .buf
            .get(begin..begin.saturating_add(len))
            .ok_or_else(|| io::Error::other("direct write buffer overrun"))?;
        self.file.write_all_at(region, self.offset)?;
        self.offset = self
            .offset
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.filled = 0;
        Ok(())
    }
}
