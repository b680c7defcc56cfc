//! Harness bodies of the fuzz targets that cover `pipeline` code (`fuzz/fuzz_targets/`), so
//! each target is a one-liner. Not a stable API.

use std::io::Read;

use sluice_formats::{Inspector, Limits};

use crate::unwrap::ova::{read_ova, OvaEvent};
use crate::unwrap::{unwrap_reader, UnwrapLimits};

/// Decompressed bytes one fuzz input may produce: enough for every path of the decoders,
/// small enough that a bomb-shaped input ends well within libFuzzer's time and memory.
const FUZZ_OUTPUT_LIMIT: u64 = 16 << 20;

/// Unwraps `data` (any of the four wrappers, or none) and inspects what comes out: must end
/// with the end of the stream or an error, never panic, never yield more than the limit.
pub fn unwrap_inspect(data: &[u8]) {
    let Ok((mut reader, _wrapper)) = unwrap_reader(data, &UnwrapLimits::capped(FUZZ_OUTPUT_LIMIT))
    else {
        return;
    };
    let mut inspector = Inspector::new(None, Limits::default());
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                assert!(total <= FUZZ_OUTPUT_LIMIT, "unwrapped past the limit");
                if let Some(chunk) = buf.get(..n) {
                    let _ = inspector.feed(chunk);
                }
            }
        }
    }
    let _ = inspector.finish();
}

/// Reads `data` as an OVA (tar + OVF descriptor + one disk) and inspects the disk: must end
/// with the archive or an error, never panic, never yield more than the limit.
pub fn ova_inspect(data: &[u8]) {
    let mut inspector = Inspector::new(None, Limits::default());
    let mut total = 0u64;
    let _ = read_ova(
        data,
        None,
        &UnwrapLimits::capped(FUZZ_OUTPUT_LIMIT),
        &mut |event| {
            if let OvaEvent::Data(piece) = event {
                total = total.saturating_add(u64::try_from(piece.len()).unwrap_or(u64::MAX));
                assert!(total <= FUZZ_OUTPUT_LIMIT, "OVA disk past the limit");
                let _ = inspector.feed(&piece);
            }
            true
        },
    );
    let _ = inspector.finish();
}
