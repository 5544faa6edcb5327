//! Fuzz target: see `meshsync_core::fuzzing::frame_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::fuzzing::frame_decode(data);
});
