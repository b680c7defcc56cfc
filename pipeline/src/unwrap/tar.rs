//! A small streaming tar reader (ustar, pax and GNU long names) over a blocking reader, for
//! OVA archives: member headers one after the other, each member's data read (or skipped)
//! through [`MemberData`], never seeking, never holding a member in memory.
//!
//! Why not the `tar` crate: it reads pax extensions and GNU long names whole into memory
//! whatever size their header gives (a hostile 4 GiB pax header is 4 GiB of heap), and its
//! reader API hides the member's place in the stream that the OVA reader hashes and bounds.
//! Only what an OVA needs is here: regular members, names (ustar prefix, pax `path`, GNU
//! `L`), sizes (octal, GNU base-256, pax `size`); other member types are reported with their
//! type for the caller to skip.

use std::io::{self, BufRead, Read};

use sluice_formats::ReasonCode;

use super::UnwrapError;

/// A tar block.
const BLOCK: usize = 512;

/// ustar header fields (POSIX.1-1988 `ustar` / pax interchange format).
const NAME: std::ops::Range<usize> = 0..100;
const SIZE: std::ops::Range<usize> = 124..136;
const CHECKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..263;
const PREFIX: std::ops::Range<usize> = 345..500;

/// One member's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its name (pax `path`, GNU long name, or ustar prefix/name).
    pub(crate) name: String,
    /// Bytes of data that follow the header.
    pub(crate) size: u64,
    /// The type flag: `b'0'` (or NUL) for a regular file.
    pub(crate) kind: u8,
}

impl Member {
    /// Whether this is a regular file.
    pub(crate) fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }
}

/// A corrupt-archive error.
pub(crate) fn corrupt(message: impl Into<String>) -> UnwrapError {
    UnwrapError::Ova {
        code: ReasonCode::Corrupt,
        message: message.into(),
    }
}

/// Members of a tar stream, read in order.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Stream offset (for messages).
    offset: u64,
    /// Largest extension header held (`limits.tar_max_extension`).
    max_extension: u64,
}

impl<R: BufRead> TarReader<R> {
    /// A reader holding extension headers of at most `max_extension` bytes.
    pub(crate) fn new(inner: R, max_extension: u64) -> Self {
        TarReader {
            inner,
            offset: 0,
            max_extension,
        }
    }

    /// The next member's header (pax and GNU extension members folded in), or `None` at the
    /// end-of-archive marker or a clean end of the stream at a header.
    pub(crate) fn next_member(&mut self) -> Result<Option<Member>, UnwrapError> {
        let mut long_name: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let Some(header) = self.read_header()? else {
                return Ok(None);
            };
            let size = match pax_size.take() {
                Some(size) => size,
                None => parse_size(field(&header, SIZE)).ok_or_else(|| {
                    corrupt(format!("tar header at {} has a bad size", self.offset))
                })?,
            };
            let kind = header.get(TYPEFLAG).copied().unwrap_or(0);
            match kind {
                b'x' | b'L' => {
                    let data = self.read_extension(size)?;
                    if kind == b'L' {
                        long_name = Some(cstr(&data));
                    } else {
                        for (key, value) in pax_records(&data)? {
                            match key.as_str() {
                                "path" => long_name = Some(value),
                                "size" => {
                                    pax_size = Some(value.parse().map_err(|_| {
                                        corrupt(format!("pax size {value:?} is not a number"))
                                    })?);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                // Global pax headers and GNU long link names: read within the bound, unused.
                b'g' | b'K' => {
                    self.read_extension(size)?;
                }
                _ => {
                    let name = match long_name.take() {
                        Some(name) => name,
                        None => ustar_name(&header),
                    };
                    return Ok(Some(Member { name, size, kind }));
                }
            }
        }
    }

    /// Reads what follows the end-of-archive marker (tar's record padding) to the end of the
    /// stream, refusing more than `max` bytes.
    pub(crate) fn drain(&mut self, max: u64) -> Result<(), UnwrapError> {
        let n = io::copy(
            &mut (&mut self.inner).take(max.saturating_add(1)),
            &mut io::sink(),
        )
        .map_err(tar_io)?;
        if n > max {
            return Err(corrupt(format!(
                "more than {max} bytes follow the end of the tar archive"
            )));
        }
        Ok(())
    }

    /// The data of a member of `size` bytes (read it, or drop it to skip it).
    pub(crate) fn data(&mut self, size: u64) -> MemberData<'_, R> {
        MemberData {
            tar: self,
            remaining: size,
            padding: padding(size),
        }
    }

    fn read_header(&mut self) -> Result<Option<[u8; BLOCK]>, UnwrapError> {
        let mut header = [0u8; BLOCK];
        let got = read_full(&mut self.inner, &mut header)
            .map_err(|e| corrupt(format!("reading the tar stream: {e}")))?;
        if got == 0 {
            return Ok(None);
        }
        if got < BLOCK {
            return Err(corrupt(format!(
                "tar stream is truncated: it ends inside the header at {}",
                self.offset
            )));
        }
        self.advance(BLOCK);
        if header.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let stored = parse_octal(field(&header, CHECKSUM));
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if CHECKSUM.contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != Some(sum) {
            return Err(corrupt(format!(
                "tar header at {} has a bad checksum (not a tar archive, or corrupt)",
                self.offset.saturating_sub(512)
            )));
        }
        Ok(Some(header))
    }

    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, UnwrapError> {
        if size > self.max_extension {
            return Err(UnwrapError::Ova {
                code: ReasonCode::LimitExceeded,
                message: format!(
                    "tar extension header of {size} bytes is above the limit of {} \
                     (limits.tar_max_extension)",
                    self.max_extension
                ),
            });
        }
        let mut data = Vec::new();
        self.data(size).read_to_end(&mut data).map_err(tar_io)?;
        Ok(data)
    }

    fn advance(&mut self, n: usize) {
        self.offset = self
            .offset
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// The data of one member: reads at most its size; dropping it skips the rest and the
/// padding to the next block (call [`MemberData::finish`] to see errors).
pub(crate) struct MemberData<'a, R: BufRead> {
    tar: &'a mut TarReader<R>,
    remaining: u64,
    padding: u64,
}

impl<R: BufRead> MemberData<'_, R> {
    /// Skips what is left of the member and its padding.
    ///
    /// # Errors
    /// When the stream ends first (truncated) or fails.
    pub(crate) fn finish(mut self) -> Result<(), UnwrapError> {
        let rest = self.remaining.saturating_add(self.padding);
        self.remaining = 0;
        self.padding = 0;
        let skipped =
            io::copy(&mut (&mut self.tar.inner).take(rest), &mut io::sink()).map_err(tar_io)?;
        self.tar.offset = self.tar.offset.saturating_add(skipped);
        if skipped < rest {
            return Err(corrupt(format!(
                "tar stream is truncated: it ends inside a member at {}",
                self.tar.offset
            )));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for MemberData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for MemberData<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let buf = self.tar.inner.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar stream ends inside a member",
            ));
        }
        Ok(buf.get(..remaining.min(buf.len())).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        let amt64 = u64::try_from(amt).unwrap_or(u64::MAX).min(self.remaining);
        self.remaining = self.remaining.saturating_sub(amt64);
        self.tar.inner.consume(usize::try_from(amt64).unwrap_or(0));
        self.tar.offset = self.tar.offset.saturating_add(amt64);
    }
}

impl<R: BufRead> Drop for MemberData<'_, R> {
    fn drop(&mut self) {
        if self.remaining > 0 || self.padding > 0 {
            let rest = self.remaining.saturating_add(self.padding);
            if let Ok(n) = io::copy(&mut (&mut self.tar.inner).take(rest), &mut io::sink()) {
                self.tar.offset = self.tar.offset.saturating_add(n);
            }
        }
    }
}

fn tar_io(e: io::Error) -> UnwrapError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        corrupt("tar stream is truncated: it ends inside a member")
    } else {
        corrupt(format!("reading the tar stream: {e}"))
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0usize;
    while let Some(space) = buf.get_mut(got..).filter(|s| !s.is_empty()) {
        match r.read(space) {
            Ok(0) => break,
            Ok(n) => got = got.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Padding after a member of `size` bytes, to the next block.
fn padding(size: u64) -> u64 {
    let block = u64::try_from(BLOCK).unwrap_or(512);
    size.checked_rem(block)
        .and_then(|r| block.checked_sub(r))
        .and_then(|p| p.checked_rem(block))
        .unwrap_or(0)
}

fn field(header: &[u8; BLOCK], range: std::ops::Range<usize>) -> &[u8] {
    header.get(range).unwrap_or_default()
}

/// A NUL-terminated string (lossy UTF-8).
fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// The name of a ustar header: `prefix/name` when the ustar magic is present.
fn ustar_name(header: &[u8; BLOCK]) -> String {
    let name = cstr(field(header, NAME));
    let ustar = field(header, MAGIC).starts_with(b"ustar");
    let prefix = cstr(field(header, PREFIX));
    if ustar && !prefix.is_empty() {
        format!("{prefix}/{name}")
    } else {
        name
    }
}

/// An octal number field (spaces and NULs around it allowed).
fn parse_octal(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A size field: octal, or GNU base-256 (high bit of the first byte set).
fn parse_size(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((first, rest)) if first & 0x80 != 0 => {
            let mut value = u64::from(first & 0x7f);
            for b in rest {
                value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
            }
            Some(value)
        }
        _ => parse_octal(bytes),
    }
}

/// The records of a pax extended header: `LEN KEY=VALUE\n` each.
fn pax_records(data: &[u8]) -> Result<Vec<(String, String)>, UnwrapError> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let bad = || corrupt("pax extended header has a malformed record");
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(rest.get(..space).ok_or_else(bad)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let record = rest.get(..len).ok_or_else(bad)?;
        let body = record
            .get(space.saturating_add(1)..len.saturating_sub(1))
            .ok_or_else(bad)?;
        let eq = body.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        let key = String::from_utf8_lossy(body.get(..eq).ok_or_else(bad)?).into_owned();
        let value =
            String::from_utf8_lossy(body.get(eq.saturating_add(1)..).ok_or_else(bad)?).into_owned();
        records.push((key, value));
        rest = rest.get(len..).ok_or_else(bad)?;
    }
    Ok(records)
}
