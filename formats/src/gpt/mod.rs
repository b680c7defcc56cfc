//! Gpt probe (placeholder until the gpt inspector lands).

use crate::probe::{Detection, Probe};
use crate::stream::Tail;
use crate::{Format, Reason};

/// Recognises gpt images.
#[derive(Debug)]
pub(crate) struct GptProbe;

impl GptProbe {
    pub(crate) fn new() -> Self {
        GptProbe
    }
}

impl Probe for GptProbe {
    fn candidates(&self) -> &'static [Format] {
        &[Format::Gpt]
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
