//! Fuzz target: see `meshsync_core::discovery::fuzzing::table_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::discovery::fuzzing::table_script(data);
});
