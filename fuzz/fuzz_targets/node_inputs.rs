//! Fuzz target: see `meshsync_core::fuzzing::node_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::fuzzing::node_inputs(data);
});
