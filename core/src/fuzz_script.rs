//! The fuzzer's bytes read as a script, shared by the fuzz entry points of
//! every module. A leaf: a protocol module's fuzzing code imports it without
//! importing the node-level entry points in `crate::fuzzing`.

/// Reads the fuzzer's bytes as a script: one byte or a run of bytes at a
/// time, with nothing once the input is used up. Shared by the script-driven
/// harnesses of every module.
pub(crate) struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Script<'a> {
        Script { data }
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    /// Up to `count` bytes (fewer at the end of the input).
    pub(crate) fn bytes(&mut self, count: usize) -> &'a [u8] {
        let count = count.min(self.data.len());
        let (taken, rest) = self.data.split_at(count);
        self.data = rest;
        taken
    }
}
