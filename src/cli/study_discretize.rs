//! `wgquant study discretize`: for Gaussian and Laplace vectors of 10,000 numbers (fixed seed)
//! and b = 2..6, the best x0 and correlation of the linear and exponential partitions
//! (ALGORITHMS.md §4), printed as a table or JSON, and the correlation-vs-x0 curves drawn as
//! SVG, one file per distribution with a panel per bit width.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use wgquant::quant::discretize::Partition;
use wgquant::quant::discretize_study::{self, STUDY_BITS, StudyDistribution, StudyRow};

use super::{CliError, DeviceChoice, backend, open_device};
use crate::outln;

#[derive(Debug, clap::Args)]
pub struct DiscretizeStudyArgs {
    /// Directory for the SVG curves (created if missing).
    #[arg(long, default_value = "study-discretize")]
    out_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the Gaussian vector (the Laplace one uses seed + 1).
    #[arg(long, default_value_t = 2019)]
    seed: u64,
    /// x0 values per curve.
    #[arg(long, default_value_t = 199)]
    points: u32,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

pub fn run(a: DiscretizeStudyArgs) -> Result<(), CliError> {
    if a.points == 0 {
        return Err(CliError::Other("--points must be at least 1".into()));
    }
    let ctx = open_device(a.device)?;
    let rows = discretize_study::run(&backend(&ctx), a.seed, a.points)?;
    std::fs::create_dir_all(&a.out_dir).map_err(|e| wgquant::Error::io(&a.out_dir, e))?;
    let mut files = Vec::new();
    for dist in StudyDistribution::ALL {
        let path = a.out_dir.join(format!("discretize-{}.svg", dist.name()));
        plot(&path, dist, &rows)?;
        files.push(path.display().to_string());
    }
    if a.json {
        let out = serde_json::json!({ "length": discretize_study::STUDY_LEN, "seed": a.seed, "rows": rows, "svg": files });
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| CliError::Other(e.to_string()))?;
        outln!("{text}");
        return Ok(());
    }
    outln!(
        "discretization study: {} numbers per vector, seed {}, {} x0 per curve",
        discretize_study::STUDY_LEN,
        a.seed,
        a.points
    );
    outln!(
        "{:<9} {:>4} {:>10} {:>11} {:>10} {:>11} {:>11}",
        "data",
        "bits",
        "lin x0",
        "lin corr",
        "exp x0",
        "exp corr",
        "exp − lin"
    );
    for dist in StudyDistribution::ALL {
        for bits in STUDY_BITS {
            let find = |p: Partition| {
                rows.iter()
                    .find(|r| r.distribution == dist && r.partition == p && r.bits == bits)
            };
            if let (Some(l), Some(e)) = (find(Partition::Linear), find(Partition::Exponential)) {
                outln!(
                    "{:<9} {:>4} {:>10.5} {:>11.6} {:>10.5} {:>11.6} {:>+11.6}",
                    dist.name(),
                    bits,
                    l.best_x0,
                    l.correlation,
                    e.best_x0,
                    e.correlation,
                    e.correlation - l.correlation
                );
            }
        }
    }
    outln!("curves: {}", files.join(", "));
    Ok(())
}

/// Left end of the x axis: below the finest sweep's first point.
const X_MIN: f32 = 1e-4;

/// Draws one distribution's curves: a panel per bit width, linear and exponential together,
/// the y-range around the peaks so the maxima stay visible at high bit widths.
fn plot(path: &Path, dist: StudyDistribution, rows: &[StudyRow]) -> Result<(), CliError> {
    let err = |e: &dyn std::fmt::Display| CliError::Other(format!("{}: {e}", path.display()));
    let root = SVGBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            &format!(
                "{}: correlation of weights and discretized weights vs x0",
                dist.name()
            ),
            ("sans-serif", 22),
        )
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((2, 3));
    for (panel, bits) in panels.iter().zip(STUDY_BITS) {
        let curves: Vec<&StudyRow> = rows
            .iter()
            .filter(|r| r.distribution == dist && r.bits == bits)
            .collect();
        let peak = curves
            .iter()
            .map(|r| r.correlation)
            .fold(f32::MIN, f32::max);
        let lowest = curves
            .iter()
            .flat_map(|r| r.curve.iter().map(|p| p.1))
            .fold(f32::MAX, f32::min);
        let lo = lowest.max(peak - 12.0 * (1.0 - peak)).min(peak - 1e-6);
        let hi = peak + 0.5 * (1.0 - peak).max(1e-6);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("b = {bits}"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((X_MIN..1f32).log_scale(), lo..hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("x0 (log scale)")
            .y_desc("correlation")
            .draw()
            .map_err(|e| err(&e))?;
        for r in curves {
            let color = match r.partition {
                Partition::Linear => BLUE,
                Partition::Exponential => RED,
            };
            let pts: Vec<(f32, f32)> = r
                .curve
                .iter()
                .copied()
                .filter(|p| p.1 >= lo && p.0 >= X_MIN)
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!(
                    "{} (best x0 {:.4})",
                    r.partition.short(),
                    r.best_x0
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
