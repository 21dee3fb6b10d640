//! libFuzzer target: the GGUF header reader (byte form and calls in tests/readers/case.rs).
#![no_main]

#[path = "../../tests/readers/case.rs"]
mod case;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Refusals are fine; a defect short of a panic is turned into one.
    if let Err(defect) = case::run_gguf(data) {
        panic!("{defect}");
    }
});
