//! libFuzzer target: a safetensors file through the checkpoint readers, inspect and (for small
//! files) dequantize (calls in tests/readers/case.rs).
#![no_main]

#[path = "../../tests/readers/case.rs"]
mod case;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Elements up to which a file is also dequantized.
const DEQUANTIZE_MAX: usize = 1 << 20;

/// Per-process input and output paths, in memory where the system offers it.
fn paths() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let id = std::process::id();
        (
            dir.join(format!("wgquant-fuzz-{id}.safetensors")),
            dir.join(format!("wgquant-fuzz-{id}.out.safetensors")),
        )
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (input, out) = paths();
    if std::fs::write(input, data).is_err() {
        return;
    }
    let result = case::run_safetensors(input, out, DEQUANTIZE_MAX);
    let _ = std::fs::remove_file(out);
    if let Err(defect) = result {
        panic!("{defect}");
    }
});
