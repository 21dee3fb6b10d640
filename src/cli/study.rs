//! `wgquant study …`: the methods' studies on synthetic data (and checkpoints), one
//! subcommand per method.

use super::CliError;
use super::{study_discretize, study_weq};

#[derive(Debug, clap::Args)]
pub struct StudyArgs {
    #[command(subcommand)]
    study: Study,
}

#[derive(Debug, clap::Subcommand)]
enum Study {
    /// WEQ against uniform and power-of-two log quantization.
    Weq(study_weq::WeqStudyArgs),
    /// Linear vs exponential discretization: best x0 and correlation, curves as SVG.
    Discretize(study_discretize::DiscretizeStudyArgs),
}

pub fn run(a: StudyArgs) -> Result<(), CliError> {
    match a.study {
        Study::Weq(a) => study_weq::run(a),
        Study::Discretize(a) => study_discretize::run(a),
    }
}
