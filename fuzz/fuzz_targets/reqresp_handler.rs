//! Fuzz target: see `meshsync_core::fuzzing::reqresp_handler`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::fuzzing::reqresp_handler(data);
});
