//! Fuzz target: see `meshsync_core::chain::fuzzing::decode_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::chain::fuzzing::decode_block(data);
});
