//! Fuzz target: see `meshsync_core::reqresp::fuzzing::inbound_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::reqresp::fuzzing::inbound_script(data);
});
