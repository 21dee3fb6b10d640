//! The `wgquant` command line: quantize, dequantize and inspect safetensors checkpoints, and a
//! demo. Library errors become one-line messages and a non-zero exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_headless_vulkan();
    report_file_size_limits();
    use_every_core_on_lavapipe();
    remove_outputs_on_signals();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error's own text holds.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("wgquant: error: {}", cli::terminal_safe(&line.join("; ")));
            ExitCode::FAILURE
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP remove the temporary outputs and exit with 128 + the signal's
/// number, as a shell reports a process the signal killed; final names are never touched.
fn remove_outputs_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            wgquant::checkpoint::output::remove_pending();
            std::process::exit(128 + sig);
        }
    });
}

/// On a headless machine (no XDG_RUNTIME_DIR), Mesa's Vulkan device-select layer tries to
/// reach a Wayland display and prints an error line on every run. It only matters for picking
/// the GPU that drives a display, which compute does not need, so it is switched off there.
/// A user's own setting is respected.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// A write past the file-size limit (RLIMIT_FSIZE, e.g. a quota) would kill the process with
/// SIGXFSZ; ignored, the write fails with EFBIG and the error is reported like a full disk,
/// with the temporary output removed.
fn report_file_size_limits() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// lavapipe (Mesa's software Vulkan device) runs compute dispatches on one thread unless
/// `LP_NUM_THREADS` asks for more (measured with Mesa 22.3 on 2 cores: a 16M-element
/// codebook_assign or k-means pass takes 1.8x as long); let it use every core this process
/// may. A user's own setting is respected; other drivers ignore the variable.
fn use_every_core_on_lavapipe() {
    if std::env::var_os("LP_NUM_THREADS").is_none()
        && let Ok(n) = std::thread::available_parallelism()
    {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("LP_NUM_THREADS", n.get().to_string()) };
    }
}
