//! What every converter leans on, and nothing format-specific: the converter contract and its
//! errors ([`converter`]), the caller's sink ([`sink`]), placing input at output offsets with
//! zero pieces left as holes ([`placer`]), and [`is_zero`].
//!
//! This module imports no format: formats import it, and [`crate::convert`] (which knows every
//! format) dispatches to them. Inspection's shared helpers live in [`crate::stream`] and
//! [`crate::probe`].

pub(crate) mod converter;
pub(crate) mod placer;
pub(crate) mod sink;

/// Whether every byte of `data` is zero (word-wise; the compiler vectorises it). The one
/// all-zero check of the converters, the qcow2 writer and the pipeline's raw output.
pub fn is_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(16);
    let acc = words.by_ref().fold(0u128, |acc, w| {
        acc | <[u8; 16]>::try_from(w).map_or(1, u128::from_ne_bytes)
    });
    acc == 0 && words.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_is_zero_checks_every_byte() {
        for len in [0usize, 1, 15, 16, 17, 4096, 4097] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for i in 0..len {
                v[i] = 1;
                assert!(!is_zero(&v), "byte {i} of {len}");
                v[i] = 0;
            }
        }
    }
}
