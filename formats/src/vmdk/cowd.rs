//! The legacy ESX 2 sparse extent (`COWD`, VMDK3): recognised, never ingested. Its header
//! (QEMU's `VMDK3Header`: little-endian `u32`s after the magic) is checked for consistency
//! so that the one rule of reason codes holds: a header that contradicts itself is `corrupt`
//! (a file that merely starts with `COWD`), a consistent one is `unsupported_format`.

use super::header::{SECTOR, VMDK_MAX_GD_ENTRIES, VMDK_MAX_GRAIN_SECTORS};
use crate::stream::le_u32;
use crate::ReasonCode;

/// Bytes of the header that are checked: magic, version, flags, disk sectors, granularity,
/// directory offset and size.
const COWD_CHECKED_LEN: usize = 28;

/// Entries per grain table: fixed at 4096 in this layout (QEMU's `vmdk_open_vmfs_sparse`).
const COWD_GTES_PER_GT: u64 = 4096;

/// The only version ESX wrote.
const COWD_VERSION: u32 = 1;

/// The virtual size of the consistent `COWD` header `bytes`, or why it is not consistent.
///
/// # Errors
/// `truncated` when the header is cut short, `corrupt` when its fields contradict each other.
pub(crate) fn check(bytes: &[u8]) -> Result<u64, (ReasonCode, String)> {
    if bytes.len() < COWD_CHECKED_LEN {
        return Err((
            ReasonCode::Truncated,
            format!(
                "legacy VMDK3 (COWD) header is cut short at {} bytes",
                bytes.len()
            ),
        ));
    }
    let field = |at: usize| u64::from(le_u32(bytes, at).unwrap_or(0));
    let (version, sectors, grain, gd_offset, gd_entries) =
        (field(4), field(12), field(16), field(20), field(24));
    let corrupt = |what: String| Err((ReasonCode::Corrupt, format!("legacy VMDK3 (COWD) {what}")));
    if version != u64::from(COWD_VERSION) {
        return corrupt(format!("header has version {version}, not {COWD_VERSION}"));
    }
    if sectors == 0 {
        return corrupt("header gives a disk of 0 sectors".into());
    }
    if !grain.is_power_of_two() || grain > VMDK_MAX_GRAIN_SECTORS {
        return corrupt(format!(
            "grain of {grain} sectors is not a power of two up to {VMDK_MAX_GRAIN_SECTORS}"
        ));
    }
    if gd_offset == 0 {
        return corrupt("grain directory is placed on the header".into());
    }
    let needed = sectors.div_ceil(grain.saturating_mul(COWD_GTES_PER_GT));
    if gd_entries < needed || gd_entries > VMDK_MAX_GD_ENTRIES {
        return corrupt(format!(
            "grain directory of {gd_entries} entries does not fit a disk of {sectors} sectors \
             ({needed} needed, at most {VMDK_MAX_GD_ENTRIES})"
        ));
    }
    Ok(sectors.saturating_mul(SECTOR))
}
