//! Fuzz target: see `meshsync_core::sync::fuzzing::lookup_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::sync::fuzzing::lookup_script(data);
});
