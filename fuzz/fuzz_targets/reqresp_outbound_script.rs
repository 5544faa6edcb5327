//! Fuzz target: see `meshsync_core::reqresp::fuzzing::outbound_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::reqresp::fuzzing::outbound_script(data);
});
