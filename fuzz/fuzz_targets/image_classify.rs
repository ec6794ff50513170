//! libFuzzer target; what one input does is `targets::image_classify` (fuzz/targets.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    targets::image_classify(bytes);
});
