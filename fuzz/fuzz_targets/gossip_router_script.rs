//! Fuzz target: see `meshsync_core::gossip::fuzzing::router_script`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshsync_core::gossip::fuzzing::router_script(data);
});
