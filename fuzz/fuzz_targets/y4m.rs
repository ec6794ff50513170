//! libFuzzer target; what one input does is `targets::y4m` (fuzz/targets.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    targets::y4m(bytes);
});
