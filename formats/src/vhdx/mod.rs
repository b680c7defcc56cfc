//! Vhdx probe (placeholder until the vhdx inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Limits, Reason};

/// Recognises vhdx images.
#[derive(Debug)]
pub(crate) struct VhdxProbe;

impl VhdxProbe {
    pub(crate) fn new(_limits: &Limits) -> Self {
        VhdxProbe
    }
}

impl Probe for VhdxProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Vhdx]
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
