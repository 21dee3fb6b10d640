use wgquant::affine::AffineSegment;
use wgquant::gpu::{Context, GpuTensor};
fn main() -> wgquant::Result<()> {
    for a in wgquant::gpu::list_adapters() {
        println!("found {}", wgquant::gpu::describe_adapter(&a));
    }
    let ctx = Context::new()?;
    println!("using {}", ctx.adapter_summary());
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let seg = AffineSegment {
        src: 0,
        dst: 0,
        len: n as u32,
        group_len: 100,
        group_phase: 0,
        param: 0,
        qmin: -8,
        qmax: 7,
        bits: 4,
    };
    let scale: Vec<f32> = (0..10).map(|g| 0.1 + g as f32 * 0.01).collect();
    let zero = vec![0i32; 10];
    let gx = GpuTensor::from_f32(&ctx, &x, &[n])?;
    let gy = GpuTensor::zeros(&ctx, &[n], wgquant::gpu::ElemType::F32)?;
    let gs = GpuTensor::from_f32(&ctx, &scale, &[10])?;
    let gz = GpuTensor::from_i32(&ctx, &zero, &[10])?;
    wgquant::gpu::fake_quant::fake_quant(&ctx, &gx, &gy, &gs, &gz, &[seg])?;
    let y = gy.to_f32(&ctx)?;
    let mut yc = vec![0f32; n];
    wgquant::cpu::fake_quant::fake_quant(&x, &mut yc, &scale, &zero, &[seg])?;
    let diff = y.iter().zip(&yc).filter(|(a, b)| a != b).count();
    println!("diffs {diff}; y[0..5]={:?} yc={:?}", &y[..5], &yc[..5]);
    let words = seg.packed_words();
    let gc = GpuTensor::zeros(&ctx, &[words], wgquant::gpu::ElemType::U32)?;
    wgquant::gpu::quantize_pack::quantize_pack(&ctx, &gx, &gc, &gs, &gz, &[seg])?;
    let c = gc.to_u32(&ctx)?;
    let mut cc = vec![0u32; words];
    wgquant::cpu::quantize_pack::quantize_pack(&x, &mut cc, &scale, &zero, &[seg])?;
    println!(
        "pack diffs {}",
        c.iter().zip(&cc).filter(|(a, b)| a != b).count()
    );
    let gd = GpuTensor::zeros(&ctx, &[n], wgquant::gpu::ElemType::F32)?;
    wgquant::gpu::dequantize::dequantize(&ctx, &gc, &gd, &gs, &gz, &[seg])?;
    let d = gd.to_f32(&ctx)?;
    println!(
        "dequant vs fq diffs {}",
        d.iter().zip(&yc).filter(|(a, b)| a != b).count()
    );
    Ok(())
}
