//! monolithicSparse (and hosted sparse) VMDKs whose header says "grain directory at end"
//! (`gdOffset` = `GD_AT_END`): the real header is a footer in the last sectors, as VMware
//! writes it and QEMU reads it (`vmdk_open_vmdk4`: the 1536 bytes before the end are a footer
//! marker, the footer header and an end-of-stream marker).
//!
//! The footer arrives last, after the grain directory and tables it names, so in one pass
//! the inspector holds the end of the stream: a window of the last bytes, sized from the
//! header to hold the footer, the directory and every grain table the capacity needs
//! (bounded by `Limits::vmdk_max_footer_window` (default [`VMDK_MAX_FOOTER_WINDOW`](crate::VMDK_MAX_FOOTER_WINDOW))). At end of stream it checks the footer against the
//! header, the directory and tables inside the file and inside the window, and every grain
//! outside the metadata (header and descriptor area, directory, tables, footer) and inside the
//! file.
//!
//! Memory: the window, at most `Limits::vmdk_max_footer_window` (default [`VMDK_MAX_FOOTER_WINDOW`](crate::VMDK_MAX_FOOTER_WINDOW)) bytes, plus 16 bytes per grain
//! table at end of stream.

use std::collections::VecDeque;

use super::header::{VmdkHeader, GD_AT_END, SECTOR, VMDK4_MAGIC};
use crate::probe::PlacedFindings;
use crate::stream::{le_u32, le_u64, u64_of, usize_of};
use crate::ReasonCode;

/// The footer marker sector, the footer header sector and the end-of-stream marker sector.
const FOOTER_LEN: u64 = 3 * SECTOR;
/// Marker types (`MARKER_FOOTER`, `MARKER_END_OF_STREAM`).
const MARKER_FOOTER: u32 = 3;
const MARKER_EOS: u32 = 0;
/// Bytes per directory or table entry.
const ENTRY: u64 = 4;

/// The end-of-stream window of a footer VMDK and the checks made at the end.
#[derive(Debug)]
pub(crate) struct VmdkFooterWalk {
    header: VmdkHeader,
    window: VecDeque<u8>,
    cap: usize,
}

/// Bytes from the end of the stream a footer VMDK with `header` needs held: its directory,
/// every grain table it can name and the footer.
pub(crate) fn window_need(header: &VmdkHeader) -> u64 {
    let gd_entries = header.gd_entries().unwrap_or(u64::MAX);
    let table_bytes = u64::from(header.gtes_per_gt)
        .saturating_mul(ENTRY)
        .div_ceil(SECTOR)
        .saturating_mul(SECTOR);
    gd_entries
        .saturating_mul(ENTRY)
        .div_ceil(SECTOR)
        .saturating_mul(SECTOR)
        .saturating_add(gd_entries.saturating_mul(table_bytes))
        .saturating_add(FOOTER_LEN)
}

impl VmdkFooterWalk {
    /// A walk for `header` (a `GD_AT_END` sparse header that passed its checks).
    ///
    /// # Errors
    /// The window the header needs is above `max_window`
    /// (`Limits::vmdk_max_footer_window`): `limit_exceeded`.
    pub(crate) fn new(header: &VmdkHeader, max_window: u64) -> Result<Self, String> {
        let need = window_need(header);
        if need > max_window {
            return Err(format!(
                "VMDK with its grain directory at the end needs {need} bytes of metadata held \
                 from the end of the stream, above the limit of {max_window} \
                 (limits.vmdk_max_footer_window)"
            ));
        }
        Ok(VmdkFooterWalk {
            header: *header,
            window: VecDeque::new(),
            cap: usize_of(need),
        })
    }

    /// Keeps the last bytes of the stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        let keep = data.len().min(self.cap);
        let tail = data.get(data.len().saturating_sub(keep)..).unwrap_or(&[]);
        let over = self
            .window
            .len()
            .saturating_add(tail.len())
            .saturating_sub(self.cap);
        self.window.drain(..over.min(self.window.len()));
        self.window.extend(tail);
    }

    /// End of stream at `len` bytes: every check (see the module documentation).
    pub(crate) fn finish(&mut self, len: u64, findings: &mut PlacedFindings) {
        let window = self.window.make_contiguous();
        let start = len.saturating_sub(u64_of(window.len()));
        let view = Window {
            bytes: window,
            start,
        };
        if let Err((code, message)) = check(&self.header, &view, len, None).map(drop) {
            findings.push(code, u64::MAX, message);
        }
    }
}

/// The held end of the stream: `bytes` from stream offset `start`.
struct Window<'a> {
    bytes: &'a [u8],
    start: u64,
}

impl Window<'_> {
    /// Bytes `[at, at + n)` of the stream, if held.
    fn get(&self, at: u64, n: u64) -> Option<&[u8]> {
        let from = usize_of(at.checked_sub(self.start)?);
        self.bytes.get(from..from.checked_add(usize_of(n))?)
    }
}

type Problem = (ReasonCode, String);

fn corrupt(message: String) -> Problem {
    (ReasonCode::Corrupt, message)
}

/// The footer, directory, tables and grains of a `GD_AT_END` image of `len` bytes.
///
/// Returns every allocated grain as `(host offset, guest offset)`, in directory order.
/// With `collect`, returns every allocated grain as `(host offset, guest offset)` (at most
/// `collect` of them, else `limit_exceeded`); without, an empty list (inspection holds none).
fn check(
    h: &VmdkHeader,
    w: &Window<'_>,
    len: u64,
    collect: Option<usize>,
) -> Result<Vec<(u64, u64)>, Problem> {
    let footer_at = len
        .checked_sub(FOOTER_LEN)
        .filter(|at| *at >= h.overhead.saturating_mul(SECTOR))
        .ok_or_else(|| {
            (
                ReasonCode::Truncated,
                format!("VMDK with its grain directory at the end has no room for a footer in {len} bytes"),
            )
        })?;
    let footer = w
        .get(footer_at, FOOTER_LEN)
        .ok_or_else(|| corrupt("VMDK footer is not held".into()))?;
    let (marker, rest) = footer.split_at(usize_of(SECTOR));
    let (sector, eos) = rest.split_at(usize_of(SECTOR));
    let marker_ok = le_u32(marker, 8) == Some(0) && le_u32(marker, 12) == Some(MARKER_FOOTER);
    let eos_ok = le_u64(eos, 0) == Some(0)
        && le_u32(eos, 8) == Some(0)
        && le_u32(eos, 12) == Some(MARKER_EOS);
    if !marker_ok || !eos_ok || !sector.starts_with(VMDK4_MAGIC) {
        return Err(corrupt(format!(
            "VMDK says its grain directory is at the end, but the last {FOOTER_LEN} bytes are \
             not a footer marker, a footer and an end-of-stream marker"
        )));
    }
    let f = VmdkHeader::parse(sector).ok_or_else(|| corrupt("VMDK footer is cut short".into()))?;
    let same = f.version == h.version
        && f.flags == h.flags
        && f.capacity == h.capacity
        && f.grain_size == h.grain_size
        && f.desc_offset == h.desc_offset
        && f.desc_size == h.desc_size
        && f.gtes_per_gt == h.gtes_per_gt
        && f.overhead == h.overhead
        && f.compress == h.compress;
    if !same {
        return Err(corrupt(
            "VMDK footer disagrees with the header (geometry, descriptor or flags)".into(),
        ));
    }
    let meta_start = h.overhead.saturating_mul(SECTOR);
    let gd_entries = h.gd_entries().unwrap_or(u64::MAX);
    let gd = f
        .gd_offset
        .checked_mul(SECTOR)
        .filter(|_| f.gd_offset != GD_AT_END)
        .ok_or_else(|| corrupt("VMDK footer has no grain directory".into()))?;
    let gd_end = gd.saturating_add(gd_entries.saturating_mul(ENTRY));
    if gd < meta_start || gd_end > footer_at {
        return Err(corrupt(format!(
            "VMDK grain directory at {gd:#x}..{gd_end:#x} is not between the metadata area \
             ({meta_start:#x}) and the footer ({footer_at:#x})"
        )));
    }
    let directory = w.get(gd, gd_end.saturating_sub(gd)).ok_or_else(|| {
        (
            ReasonCode::LimitExceeded,
            format!("VMDK grain directory at {gd:#x} is further from the end than the metadata the header needs"),
        )
    })?;
    let table_len = u64::from(h.gtes_per_gt).saturating_mul(ENTRY);
    // Metadata ranges: the directory, each table, the footer.
    let mut meta: Vec<(u64, u64)> = vec![(gd, gd_end), (footer_at, len)];
    let mut tables = Vec::new();
    for (i, e) in directory.chunks_exact(4).enumerate() {
        let sector = u64::from(le_u32(e, 0).unwrap_or(0));
        if sector == 0 {
            continue;
        }
        let at = sector.saturating_mul(SECTOR);
        let end = at.saturating_add(table_len);
        if at < meta_start || end > footer_at {
            return Err(corrupt(format!(
                "VMDK grain directory entry {i} names a grain table at {at:#x} outside the \
                 area between the metadata and the footer"
            )));
        }
        meta.push((at, end));
        tables.push((u64_of(i), at));
    }
    meta.sort_unstable();
    if meta.windows(2).any(|p| matches!(p, [a, b] if b.0 < a.1)) {
        return Err(corrupt(
            "VMDK grain directory and tables overlap each other".into(),
        ));
    }
    let grain_len = h.grain_size.saturating_mul(SECTOR);
    let mut grains = Vec::new();
    for (gd_index, table) in tables {
        let entries = w.get(table, table_len).ok_or_else(|| {
            (
                ReasonCode::LimitExceeded,
                format!("VMDK grain table at {table:#x} is further from the end than the metadata the header needs"),
            )
        })?;
        for (i, e) in entries.chunks_exact(4).enumerate() {
            let sector = u64::from(le_u32(e, 0).unwrap_or(0));
            if sector == 0 || (sector == 1 && h.zero_grain()) {
                continue;
            }
            let at = sector.saturating_mul(SECTOR);
            let end = at.saturating_add(grain_len);
            let into_meta = at < meta_start || end > footer_at || {
                let k = meta.partition_point(|m| m.1 <= at);
                meta.get(k).is_some_and(|m| m.0 < end)
            };
            if into_meta {
                return Err(corrupt(format!(
                    "VMDK grain table at {table:#x} entry {i} places a grain at {at:#x} inside \
                     the image's metadata"
                )));
            }
            let grain = gd_index
                .saturating_mul(u64::from(h.gtes_per_gt))
                .saturating_add(u64_of(i));
            if let Some(max) = collect {
                if grains.len() >= max {
                    return Err((
                        ReasonCode::LimitExceeded,
                        format!("VMDK image has more than {max} grains to place"),
                    ));
                }
                grains.push((at, grain.saturating_mul(grain_len)));
            }
        }
    }
    Ok(grains)
}

/// The grains of a footer VMDK of `len` bytes, from its first sector `head` and its last
/// bytes `tail` (at least what the header needs, at most `max_window`): `(host offset, guest offset)` sorted by host offset, after every check of the
/// inspector.
///
/// # Errors
/// Not such a VMDK, or a check failed: the reason code and message.
pub(crate) fn footer_grains(
    head: &[u8],
    tail: &[u8],
    len: u64,
    max_grains: usize,
    max_window: u64,
) -> Result<(VmdkHeader, Vec<(u64, u64)>), Problem> {
    let h = head
        .starts_with(VMDK4_MAGIC)
        .then(|| VmdkHeader::parse(head))
        .flatten()
        .ok_or_else(|| corrupt("VMDK sparse extent header is missing or cut short".into()))?;
    if h.check()? != super::header::VmdkSubformat::MonolithicSparse || h.gd_offset != GD_AT_END {
        return Err((
            ReasonCode::UnsupportedSubformat,
            "VMDK is not monolithicSparse with its grain directory at the end".into(),
        ));
    }
    VmdkFooterWalk::new(&h, max_window).map_err(|m| (ReasonCode::LimitExceeded, m))?;
    let start = len.saturating_sub(u64_of(tail.len()));
    let mut grains = check(&h, &Window { bytes: tail, start }, len, Some(max_grains))?;
    grains.sort_unstable();
    Ok((h, grains))
}
