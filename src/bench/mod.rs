//! Benchmark problems shared by `benches/` (criterion) and `wgquant bench` (a printed table):
//! the same inputs, the same result checks before anything is timed, the same units.

pub mod matmul;

use std::time::Instant;

/// Seconds of the fastest of `iters` runs of `f` after one untimed warm-up run (the fastest
/// run is the least disturbed by other work on a shared machine).
pub fn best_of<E>(iters: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}
