//! Free space on the data volume, and the reserve that keeps room for metadata.
//!
//! Two thresholds, both derived from one [`Reserve`]:
//! - **the reserve**: imports are refused up front, and running ones fail with
//!   `storage_full`, rather than let free space fall below it;
//! - **the metadata floor** (half the reserve): below it even metadata writes are refused,
//!   so the metadata store never meets `ENOSPC` from Sluice's own writes (see
//!   `server/src/meta/guarded.rs`).
//!
//! Free space is `statvfs`'s `f_bavail × f_frsize`: what an unprivileged process may still
//! write (blocks the file system keeps for root are not counted, so running as root only
//! adds margin). One `statvfs` costs about a microsecond; the store writer calls it once per
//! [`SPACE_CHECK_INTERVAL`] bytes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Default reserve: this percentage of the volume…
pub const DEFAULT_RESERVE_PERCENT: u8 = 5;
/// …but never more than 1 GiB: metadata needs a few MiB (an 8 MiB memtable flushed at open,
/// the WAL, a manifest), so a larger share of a big volume would only waste space, while a
/// small volume (tests, labs) needs the percentage to leave room for images at all.
pub const DEFAULT_RESERVE_MAX: u64 = 1 << 30;
/// The store writer checks free space every this many bytes (1 MiB): cheap (one `statvfs`
/// per MiB is invisible next to hashing it) and fine enough for a 64 MiB volume.
pub const SPACE_CHECK_INTERVAL: u64 = 1 << 20;

/// How much free space to keep: `"1GiB"`, `"512MiB"`, `"1048576"` (bytes) or `"5%"` of the
/// volume. The default is 5 % capped at 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// A fixed number of bytes.
    Bytes(u64),
    /// A percentage of the volume's size, optionally capped.
    Percent {
        /// 0–100.
        percent: u8,
        /// The most it may be, in bytes.
        max: Option<u64>,
    },
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve::Percent {
            percent: DEFAULT_RESERVE_PERCENT,
            max: Some(DEFAULT_RESERVE_MAX),
        }
    }
}

impl Reserve {
    /// The reserve in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(b) => b,
            Reserve::Percent { percent, max } => {
                let share = u128::from(total)
                    .saturating_mul(u128::from(percent))
                    .checked_div(100)
                    .unwrap_or(0);
                let share = u64::try_from(share).unwrap_or(u64::MAX);
                max.map_or(share, |m| share.min(m))
            }
        }
    }
}

/// Binary unit suffixes accepted by [`Reserve`]'s parser.
const UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];

impl FromStr for Reserve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let bad = || {
            format!(
                "disk reserve '{s}' is not a size (e.g. \"1GiB\", \"512MiB\", \"1048576\") or a \
                 percentage (e.g. \"5%\")"
            )
        };
        if let Some(number) = text.strip_suffix('%') {
            let percent: u8 = number.trim().parse().map_err(|_| bad())?;
            if percent > 100 {
                return Err(format!("disk reserve '{s}' is more than 100%"));
            }
            return Ok(Reserve::Percent { percent, max: None });
        }
        let (number, shift) = UNITS
            .iter()
            .find_map(|(unit, shift)| text.strip_suffix(unit).map(|n| (n, *shift)))
            .unwrap_or((text, 0));
        let n: u64 = number.trim().parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift)
            .map(Reserve::Bytes)
            .ok_or_else(|| format!("disk reserve '{s}' is too large"))
    }
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reserve::Bytes(b) => write!(f, "{b} bytes"),
            Reserve::Percent { percent, max: None } => write!(f, "{percent}%"),
            Reserve::Percent {
                percent,
                max: Some(m),
            } => write!(f, "{percent}% (at most {m} bytes)"),
        }
    }
}

/// Free and total bytes of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process may still write.
    pub free: u64,
    /// The volume's size.
    pub total: u64,
}

/// What the data volume's free space allows, from the last check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageState {
    /// At or above the reserve: everything is allowed.
    Ok,
    /// Below the reserve: imports are refused; metadata writes still go through.
    Low,
    /// Below the metadata floor: every write is refused; reads are served.
    Full,
}

impl StorageState {
    /// A stable name (`ok`, `low`, `full`) for logs and the health check.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageState::Ok => "ok",
            StorageState::Low => "low",
            StorageState::Full => "full",
        }
    }

    fn from_u8(v: u8) -> StorageState {
        match v {
            1 => StorageState::Low,
            2 => StorageState::Full,
            _ => StorageState::Ok,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            StorageState::Ok => 0,
            StorageState::Low => 1,
            StorageState::Full => 2,
        }
    }
}

/// A write refused because the data volume is (nearly) full.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Image storage media is full: {free} bytes free on the data volume, {needed} bytes needed \
     above the {what} of {limit} bytes; retry when space has been freed"
)]
pub struct SpaceError {
    /// Free bytes when checked.
    pub free: u64,
    /// Bytes the write needed on top of the threshold.
    pub needed: u64,
    /// The threshold (bytes).
    pub limit: u64,
    /// Which threshold: `reserve` or `metadata floor`.
    pub what: &'static str,
}

/// Free-space checks for the volume holding one directory.
#[derive(Debug)]
pub struct DiskSpace {
    path: PathBuf,
    reserve: Reserve,
    last: AtomicU8,
    /// Tests: the free bytes [`DiskSpace::probe`] reports instead of `statvfs`'s.
    #[cfg(test)]
    fake_free: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl DiskSpace {
    /// Checks the volume holding `path` against `reserve`.
    pub fn new(path: impl AsRef<Path>, reserve: Reserve) -> DiskSpace {
        DiskSpace {
            path: path.as_ref().to_path_buf(),
            reserve,
            last: AtomicU8::new(StorageState::Ok.to_u8()),
            #[cfg(test)]
            fake_free: None,
        }
    }

    /// Tests: checks against `reserve` as if the volume had `free` bytes free (of 1 TiB),
    /// whatever `statvfs` says; the test changes `free` to fill or empty the volume.
    #[cfg(test)]
    pub(crate) fn with_fake_free(
        path: &Path,
        reserve: Reserve,
        free: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        DiskSpace {
            fake_free: Some(free),
            ..DiskSpace::new(path, reserve)
        }
    }

    /// The configured reserve.
    pub fn reserve(&self) -> Reserve {
        self.reserve
    }

    /// Free and total bytes now (`statvfs`).
    ///
    /// # Errors
    /// When `statvfs` fails on the directory.
    pub fn probe(&self) -> io::Result<Space> {
        #[cfg(test)]
        if let Some(free) = &self.fake_free {
            return Ok(Space {
                free: free.load(Ordering::Relaxed),
                total: 1 << 40,
            });
        }
        let st = rustix::fs::statvfs(&self.path)?;
        Ok(Space {
            free: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
        })
    }

    /// The reserve and the metadata floor (half the reserve) in bytes for `space`.
    pub fn thresholds(&self, space: Space) -> (u64, u64) {
        let reserve = self.reserve.bytes(space.total);
        (reserve, reserve / 2)
    }

    /// The state now (and remembered for [`DiskSpace::last_state`]). A failing `statvfs`
    /// counts as [`StorageState::Ok`]: writes then meet the real error, if any.
    pub fn state(&self) -> StorageState {
        match self.probe() {
            Ok(space) => self.classify(space),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read free space");
                StorageState::Ok
            }
        }
    }

    /// The state found by the last check, without checking again (for health reports).
    pub fn last_state(&self) -> StorageState {
        StorageState::from_u8(self.last.load(Ordering::Relaxed))
    }

    /// Refuses `upcoming` bytes of image data that would take free space below the reserve.
    ///
    /// # Errors
    /// [`SpaceError`] naming the free space and the reserve.
    pub fn check_import(&self, upcoming: u64) -> Result<(), SpaceError> {
        self.check(upcoming, false)
    }

    /// Refuses a metadata write when free space is below the metadata floor.
    ///
    /// # Errors
    /// [`SpaceError`] naming the free space and the floor.
    pub fn check_metadata(&self) -> Result<(), SpaceError> {
        self.check(0, true)
    }

    fn check(&self, upcoming: u64, metadata: bool) -> Result<(), SpaceError> {
        let space = match self.probe() {
            Ok(space) => space,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read free space");
                return Ok(());
            }
        };
        self.classify(space);
        let (reserve, floor) = self.thresholds(space);
        let (limit, what) = if metadata {
            (floor, "metadata floor")
        } else {
            (reserve, "reserve")
        };
        if space.free.saturating_sub(upcoming) < limit || space.free < upcoming {
            return Err(SpaceError {
                free: space.free,
                needed: upcoming,
                limit,
                what,
            });
        }
        Ok(())
    }

    fn classify(&self, space: Space) -> StorageState {
        let (reserve, floor) = self.thresholds(space);
        let state = if space.free < floor {
            StorageState::Full
        } else if space.free < reserve {
            StorageState::Low
        } else {
            StorageState::Ok
        };
        let before = StorageState::from_u8(self.last.swap(state.to_u8(), Ordering::Relaxed));
        if before != state {
            let (free, reserve) = (space.free, reserve);
            match state {
                StorageState::Ok => {
                    tracing::info!(free, reserve, "data volume has room again: writes allowed")
                }
                StorageState::Low => tracing::warn!(
                    free,
                    reserve,
                    "data volume below its reserve: imports are refused"
                ),
                StorageState::Full => tracing::error!(
                    free,
                    floor,
                    "data volume full: every write is refused until space is freed"
                ),
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserve_parse_sizes_and_percentages() {
        assert_eq!("1GiB".parse(), Ok(Reserve::Bytes(1 << 30)));
        assert_eq!(" 512 MiB ".parse(), Ok(Reserve::Bytes(512 << 20)));
        assert_eq!("64KiB".parse(), Ok(Reserve::Bytes(64 << 10)));
        assert_eq!("2TiB".parse(), Ok(Reserve::Bytes(2 << 40)));
        assert_eq!("1048576".parse(), Ok(Reserve::Bytes(1 << 20)));
        assert_eq!("0".parse(), Ok(Reserve::Bytes(0)));
        assert_eq!(
            "5%".parse(),
            Ok(Reserve::Percent {
                percent: 5,
                max: None
            })
        );
    }

    #[test]
    fn test_reserve_parse_garbage_is_refused() {
        for bad in [
            "",
            "%",
            "5.5%",
            "101%",
            "-1",
            "1GB",
            "lots",
            "99999999999TiB",
        ] {
            assert!(bad.parse::<Reserve>().is_err(), "{bad}");
        }
    }

    #[test]
    fn test_reserve_bytes_percentage_is_capped() {
        let gib = 1u64 << 30;
        assert_eq!(Reserve::default().bytes(64 << 20), (64 << 20) * 5 / 100);
        assert_eq!(Reserve::default().bytes(1 << 40), gib);
        assert_eq!("10%".parse::<Reserve>().unwrap().bytes(1000), 100);
        assert_eq!(Reserve::Bytes(7).bytes(0), 7);
        assert_eq!("100%".parse::<Reserve>().unwrap().bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn test_disk_space_checks_follow_the_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let open = DiskSpace::new(dir.path(), Reserve::Bytes(0));
        assert!(open.check_import(1).is_ok());
        assert!(open.check_metadata().is_ok());
        assert_eq!(open.state(), StorageState::Ok);
        // A reserve larger than any volume: imports and metadata refused, state full.
        let full = DiskSpace::new(dir.path(), Reserve::Bytes(u64::MAX));
        let err = full.check_import(0).unwrap_err();
        assert_eq!(err.what, "reserve");
        assert!(
            err.to_string().starts_with("Image storage media is full"),
            "{err}"
        );
        assert_eq!(full.check_metadata().unwrap_err().what, "metadata floor");
        assert_eq!(full.state(), StorageState::Full);
        assert_eq!(full.last_state(), StorageState::Full);
        // More upcoming bytes than the volume has free.
        assert!(open.check_import(u64::MAX).is_err());
    }
}
