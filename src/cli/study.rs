//! `wgquant study …`: the methods' studies on synthetic data, one subcommand per method.

use super::CliError;
use super::study_discretize;

#[derive(Debug, clap::Args)]
pub struct StudyArgs {
    #[command(subcommand)]
    study: Study,
}

#[derive(Debug, clap::Subcommand)]
enum Study {
    /// Linear vs exponential discretization: best x0 and correlation, curves as SVG.
    Discretize(study_discretize::DiscretizeStudyArgs),
}

pub fn run(a: StudyArgs) -> Result<(), CliError> {
    match a.study {
        Study::Discretize(a) => study_discretize::run(a),
    }
}
