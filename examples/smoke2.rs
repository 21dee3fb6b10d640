use wgquant::affine::{AffineMode, AffineScheme, GroupRange};
use wgquant::cpu;
use wgquant::gpu::{self, Context, GpuTensor};
fn main() -> wgquant::Result<()> {
    let ctx = Context::new()?;
    println!("using {}", ctx.adapter_summary());
    for &(n, gl) in &[
        (1000usize, 100usize),
        (1 << 20, 1 << 20),
        (300000, 30000),
        (4096, 32),
    ] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.37).sin() * 3.0).powi(3) + (i % 7) as f32 * 0.01)
            .collect();
        let gx = GpuTensor::from_f32(&ctx, &x, &[n])?;
        let g = n / gl;
        let t = std::time::Instant::now();
        let r_gpu = gpu::minmax::group_ranges(&ctx, &gx, gl)?;
        let r_cpu = cpu::minmax::group_ranges(&x, gl)?;
        println!(
            "n={n} gl={gl} minmax equal: {} ({:?}) {:?}",
            r_gpu == r_cpu,
            t.elapsed(),
            &r_gpu[0]
        );
        let scheme = AffineScheme::new(4, AffineMode::Asymmetric)?;
        let ranges = gpu::minmax::ranges_tensor(&ctx, g)?;
        ranges.write(&ctx, &r_cpu)?;
        let best = gpu::minmax::ranges_tensor(&ctx, g)?;
        ctx.run("clip", |enc| {
            gpu::clip_search::encode(&ctx, enc, &gx, gl, &ranges, &scheme, 100, &best)
        })?;
        let b_gpu: Vec<GroupRange> = best.download(&ctx)?;
        let b_cpu = cpu::clip_search::clip_search(&x, gl, &r_cpu, &scheme, 100)?;
        println!("  clip gpu {:?} cpu {:?}", b_gpu[0], b_cpu[0]);
        let clipped = gpu::minmax::ranges_tensor(&ctx, g)?;
        ctx.run("pct", |enc| {
            gpu::histogram::encode(&ctx, enc, &gx, gl, &ranges, 99.0, false, &clipped)
        })?;
        let p_gpu: Vec<GroupRange> = clipped.download(&ctx)?;
        let bins = gpu::histogram::bins_for(gl);
        let h = cpu::histogram::group_histograms(&x, gl, &r_cpu, bins, false)?;
        let p_cpu = cpu::histogram::percentile_select(
            &h,
            &r_cpu,
            bins,
            false,
            gpu::histogram::quantiles(99.0),
        );
        println!(
            "  pct equal {} gpu {:?} cpu {:?}",
            p_gpu == p_cpu,
            p_gpu[0],
            p_cpu[0]
        );
        let scale = GpuTensor::zeros(&ctx, &[g], gpu::ElemType::F32)?;
        let zero = GpuTensor::zeros(&ctx, &[g], gpu::ElemType::I32)?;
        ctx.run("ap", |enc| {
            gpu::affine_params::encode(&ctx, enc, &scheme, &ranges, &scale, &zero)
        })?;
        let (sc, zc) = cpu::affine_params::affine_params(&scheme, &r_cpu);
        println!(
            "  params equal {} {}",
            scale.to_f32(&ctx)? == sc,
            zero.to_i32(&ctx)? == zc
        );
    }
    Ok(())
}
