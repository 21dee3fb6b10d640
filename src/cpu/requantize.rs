//! CPU twin of `shaders/requantize.wgsl`: int32 accumulators to int32 outputs with gemmlowp's
//! fixed-point multipliers (numerics in `src/requant.rs`), bit-identical to the GPU.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::requant::{OutputQuant, QuantizedMultiplier, requantize as requantize_one};

/// Requantizes int32 accumulators `acc` ([rows, n]) with one multiplier per column (n) or one
/// for all, into int32 outputs.
pub fn requantize(
    acc: &[i32],
    n: usize,
    multipliers: &[QuantizedMultiplier],
    quant: OutputQuant,
    y: &mut [i32],
) -> Result<()> {
    let op = "requantize";
    for m in multipliers {
        m.validate(op)?;
    }
    if y.len() != acc.len() || n == 0 || !acc.len().is_multiple_of(n) {
        return Err(Error::shape(op, "accumulators and outputs differ"));
    }
    if !(multipliers.len() == 1 || multipliers.len() == n) {
        return Err(Error::shape(
            op,
            format!("{} multipliers for {n} columns", multipliers.len()),
        ));
    }
    y.par_iter_mut()
        .zip(acc)
        .enumerate()
        .for_each(|(e, (o, &a))| {
            let mq = multipliers[if multipliers.len() == 1 { 0 } else { e % n }];
            *o = requantize_one(a, mq, quant.zero, quant.qmin, quant.qmax);
        });
    Ok(())
}
