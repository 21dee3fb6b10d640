//! What a quantization run did, per tensor and in total: sizes, bits per weight, SQNR and
//! relative error, time. Serialised as REPORT.json and printed as a table.

use serde::Serialize;

/// Error of a reconstruction `approx` of `exact`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Σ x².
    pub signal: f64,
    /// Σ (x − x̂)².
    pub noise: f64,
}

impl ErrorStats {
    /// Sums over two equally long slices, in f64.
    pub fn measure(exact: &[f32], approx: &[f32]) -> Self {
        let (signal, noise) = crate::quant::squared_difference(exact, approx);
        Self { signal, noise }
    }

    /// Signal-to-quantization-noise ratio in dB; `None` for an exact reconstruction.
    pub fn sqnr_db(&self) -> Option<f64> {
        (self.noise > 0.0).then(|| 10.0 * (self.signal / self.noise).log10())
    }

    /// ‖x − x̂‖ / ‖x‖ (0 for an all-zero tensor reproduced exactly).
    pub fn rel_err(&self) -> f64 {
        if self.signal > 0.0 {
            (self.noise / self.signal).sqrt()
        } else {
            self.noise.sqrt()
        }
    }

    /// Accumulates another tensor's sums.
    pub fn add(&mut self, o: &ErrorStats) {
        self.signal += o.signal;
        self.noise += o.noise;
    }
}

/// One tensor of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Method label, or "none (…)" for tensors passed through.
    pub scheme: String,
    /// Effective bits per weight after quantization.
    pub bits_per_weight: f64,
    /// SQNR in dB (null when exact or passed through).
    pub sqnr_db: Option<f64>,
    /// ‖w − ŵ‖ / ‖w‖.
    pub rel_err: f64,
    /// Bytes in the input.
    pub bytes_in: u64,
    /// Bytes written for this tensor (codes and parameters).
    pub bytes_out: u64,
    /// Wall seconds attributed to it: from the previous tensor's completion to its own, so
    /// the tensors' seconds add up to no more than the run's.
    pub seconds: f64,
}

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Tensors quantized.
    pub quantized: usize,
    /// Tensors passed through unchanged.
    pub passed_through: usize,
    /// Bytes of all input tensors.
    pub bytes_in: u64,
    /// Bytes of all output tensors.
    pub bytes_out: u64,
    /// Bits per weight over the quantized tensors.
    pub bits_per_weight: f64,
    /// SQNR over all quantized weights together (Σ signal / Σ noise).
    pub sqnr_db: Option<f64>,
    /// Relative error over all quantized weights together.
    pub rel_err: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Input file.
    pub input: String,
    /// Output file.
    pub output: String,
    /// "gpu (adapter)" or "cpu".
    pub device: String,
    /// Per tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Totals.
    pub totals: Totals,
}

impl Report {
    /// The report as pretty JSON (what `--report` writes).
    pub fn to_json(&self) -> crate::error::Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| crate::error::Error::param("report", e.to_string()))
    }

    /// A plain-text table, one line per tensor and a total line.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<48} {:>16} {:>28} {:>8} {:>9} {:>10} {:>10}\n",
            "tensor", "shape", "scheme", "bits/w", "SQNR dB", "bytes in", "bytes out"
        );
        let fmt_sqnr = |v: Option<f64>| v.map_or("-".to_string(), |d| format!("{d:.2}"));
        for t in &self.tensors {
            s += &format!(
                "{:<48} {:>16} {:>28} {:>8.3} {:>9} {:>10} {:>10}\n",
                t.name,
                format!("{:?}", t.shape),
                t.scheme,
                t.bits_per_weight,
                fmt_sqnr(t.sqnr_db),
                t.bytes_in,
                t.bytes_out
            );
        }
        let tot = &self.totals;
        s += &format!(
            "total: {} quantized, {} passed through; {} -> {} bytes ({:.2}x); {:.3} bits/weight; SQNR {} dB; {:.2} s on {}\n",
            tot.quantized,
            tot.passed_through,
            tot.bytes_in,
            tot.bytes_out,
            tot.bytes_in as f64 / tot.bytes_out.max(1) as f64,
            tot.bits_per_weight,
            fmt_sqnr(tot.sqnr_db),
            tot.seconds,
            self.device
        );
        s
    }
}
