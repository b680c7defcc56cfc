//! Vhd probe (placeholder until the vhd inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, Reason};

/// Recognises vhd images.
#[derive(Debug)]
pub(crate) struct VhdProbe;

impl VhdProbe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        VhdProbe
    }
}

impl Probe for VhdProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vhd]
    }
    fn feed(&mut self, _pos: u64, _data: &[u8]) {}
    fn finish(&mut self, _tail: &Tail) {}
    fn detection(&self) -> Detection {
        Detection::No
    }
    fn wants(&self, _pos: u64) -> bool {
        false
    }
    fn virtual_size(&self) -> Option<u64> {
        None
    }
    fn findings(&self) -> &[Reason] {
        &[]
    }
}
