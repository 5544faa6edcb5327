//! Fuzz target: see `meshsync_core::fuzzing::handshake_responder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::fuzzing::handshake_responder(data);
});
