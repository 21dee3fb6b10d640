//! `wgquant plot levels` end to end: the SVG is written and holds the histogram and each
//! requested method's series (legend labels, level lines in the method's colour), for the
//! synthetic tensor and a checkpoint tensor; bad requests give one line and a non-zero exit.
//! Text checks only, no pixel comparisons.

use std::borrow::Cow;
use std::collections::HashMap;
use std::process::{Command, Output};

use safetensors::Dtype;
use wgquant::checkpoint::file::{OutTensor, write_atomic};

const BIN: &str = env!("CARGO_BIN_EXE_wgquant");

fn wgquant(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the wgquant binary runs")
}

/// Runs a plot that must succeed and returns the SVG text.
fn plot(args: &[&str], out: &std::path::Path) -> String {
    let mut all = vec![
        "plot",
        "levels",
        "--device",
        "cpu",
        "-o",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = wgquant(&all);
    assert!(
        o.status.success(),
        "wgquant {all:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(out).expect("the SVG exists")
}

/// Stroke colours of the methods (plot.rs's palette), as plotters writes them.
const WEQ: &str = "#D62728";
const POW2: &str = "#FF7F0E";

/// Lines drawn in `color`: the levels plus one legend swatch.
fn lines_in(svg: &str, color: &str) -> usize {
    svg.lines()
        .filter(|l| (l.starts_with("<line") || l.starts_with("<polyline")) && l.contains(color))
        .count()
}

#[test]
fn synthetic_plot_has_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("levels.svg");
    let svg = plot(&["--scheme", "all", "--bits", "3"], &out);
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for label in [
        "synthetic Laplace (65536 values): histogram and 3-bit levels",
        "weights",
        "WEQ (8 levels, SQNR",
        "uniform absmax (8 levels, SQNR",
        "uniform MSE-clip (8 levels, SQNR",
        "power-of-two log (8 levels, SQNR",
    ] {
        assert!(svg.contains(label), "no '{label}' in the SVG");
    }
    assert_eq!(
        lines_in(&svg, WEQ),
        8 + 1,
        "WEQ level lines + legend swatch"
    );
    // The histogram: at least one filled bar per non-empty bin.
    assert!(svg.matches("fill=\"#AAAAAA\"").count() > 50);
}

#[test]
fn scheme_selects_methods_and_bits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weq4.svg");
    let svg = plot(&["--scheme", "weq4,pow2", "--numel", "5000"], &out);
    assert!(svg.contains("WEQ (16 levels"));
    assert!(svg.contains("power-of-two log (16 levels"));
    assert!(!svg.contains("uniform absmax"));
    assert_eq!(lines_in(&svg, WEQ), 16 + 1);
    assert_eq!(lines_in(&svg, POW2), 16 + 1);
}

#[test]
fn checkpoint_tensor_plot() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("m.safetensors");
    let w: Vec<u8> = (0..32 * 16)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![(
        "layer.weight".to_string(),
        OutTensor {
            dtype: Dtype::F32,
            shape: vec![32, 16],
            data: Cow::Owned(w),
        },
    )];
    write_atomic(&ckpt, &tensors, HashMap::new()).unwrap();
    let out = dir.path().join("ckpt.svg");
    let ck = ckpt.to_str().unwrap();
    let svg = plot(
        &[
            "--checkpoint",
            ck,
            "--tensor",
            "layer.weight",
            "--scheme",
            "weq2",
        ],
        &out,
    );
    assert!(svg.contains("layer.weight ([32, 16]): histogram and 2-bit levels"));
    assert!(svg.contains("WEQ (4 levels"));
    assert_eq!(lines_in(&svg, WEQ), 4 + 1);

    // A missing tensor and contradictory bits: one line, non-zero exit, no file.
    let bad = dir.path().join("bad.svg");
    let b = bad.to_str().unwrap();
    for args in [
        vec![
            "plot",
            "levels",
            "--checkpoint",
            ck,
            "--tensor",
            "nope",
            "-o",
            b,
        ],
        vec!["plot", "levels", "--scheme", "weq4", "--bits", "3", "-o", b],
        vec!["plot", "levels", "--scheme", "kmeans", "-o", b],
    ] {
        let o = wgquant(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!bad.exists());
    }
}
