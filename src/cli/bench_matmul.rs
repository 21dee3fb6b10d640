//! `wgquant bench matmul`: the dequantizing matmul's table, printed from the shared problems
//! in `wgquant::bench::matmul` (benches/matmul.rs times the same problems with criterion).

use wgquant::bench::matmul::{self, Plan, WeightFormat};

use super::{CliError, DeviceChoice, open_any_device};
use crate::outln;

#[derive(Debug, clap::Args)]
pub struct MatmulBenchArgs {
    /// W shapes NxK, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["4096x4096".to_string(), "11008x4096".to_string()])]
    shapes: Vec<String>,
    /// Rows of x, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = matmul::BATCHES.to_vec())]
    m: Vec<usize>,
    /// Weight formats: int4-g128, int8-channel, codebook4 (f32 is always the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = ["int4-g128".to_string(), "int8-channel".to_string(), "codebook4".to_string()])]
    formats: Vec<String>,
    /// Timed runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Skip the CPU twin.
    #[arg(long)]
    no_cpu: bool,
    /// Where to run (cpu: only the CPU twin).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

fn shape(s: &str) -> Result<(usize, usize), CliError> {
    let bad = || CliError::Other(format!("shape '{s}' is not NxK"));
    let (n, k) = s.split_once('x').ok_or_else(bad)?;
    Ok((n.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?))
}

/// Runs `wgquant bench matmul`.
pub fn run(a: MatmulBenchArgs) -> Result<(), CliError> {
    let plan = Plan {
        shapes: a
            .shapes
            .iter()
            .map(|s| shape(s))
            .collect::<Result<_, _>>()?,
        batches: a.m,
        formats: a
            .formats
            .iter()
            .map(|f| WeightFormat::parse(f))
            .collect::<Result<_, _>>()?,
        iters: a.iters,
        cpu: !a.no_cpu,
    };
    let ctx = open_any_device(a.device)?;
    let copy = match &ctx {
        Some(c) => {
            eprintln!("wgquant: bench on {}", c.adapter_summary());
            Some(matmul::copy_roofline(c, a.iters)?)
        }
        None => None,
    };
    let rows = matmul::measure(ctx.as_ref(), &plan, &mut |line| {
        eprintln!("wgquant: {line}")
    })?;
    if let Some(c) = copy {
        outln!(
            "copy shader: {c:.2} GB/s (read + written); best of {} runs per figure",
            a.iters
        );
    }
    outln!("{}", matmul::table(&rows, copy));
    Ok(())
}
