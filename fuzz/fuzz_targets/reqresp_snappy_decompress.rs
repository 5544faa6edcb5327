//! Fuzz target: see `meshsync_core::reqresp::fuzzing::snappy_decompress`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::reqresp::fuzzing::snappy_decompress(data);
});
