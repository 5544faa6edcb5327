//! Fuzz target: see `meshsync_core::chain::fuzzing::store_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::chain::fuzzing::store_script(data);
});
