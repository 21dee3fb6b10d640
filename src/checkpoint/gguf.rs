//! Exporting a checkpoint as GGUF: float tensors encoded as F16, Q8_0 or Q4_0 blocks (format
//! in `format::gguf`), integer tensors copied, streamed row block by row block after a header
//! that already knows every offset, into a temporary file renamed at the end.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use safetensors::Dtype;

use super::file::{TensorEntry, check_distinct, plain_os_error, to_f32};
use super::quantize::{DEFAULT_BLOCK_BYTES, device_label};
use super::report::{ErrorStats, Report, TensorReport, Totals};
use super::source::{Source, SourceTensor};
use crate::error::{Error, Result};
use crate::format::gguf::{self, GgmlType, TensorInfo, Value};
use crate::quant::Backend;

/// The GGUF type a tensor gets: the requested block type for float tensors of two or more
/// axes whose innermost axis fills whole blocks; F16 for other float matrices and F32 for
/// 1-D floats (as llama.cpp's converter keeps norms); integers as they are.
fn choose(source: &Source, t: &SourceTensor, wanted: GgmlType) -> Result<GgmlType> {
    // llama.cpp's reader refuses the whole file for either, so refuse before writing.
    if t.name.len() >= gguf::MAX_NAME_BYTES {
        return Err(source.tensor_error(
            t,
            format!(
                "name is {} bytes; GGUF readers accept fewer than {}",
                t.name.len(),
                gguf::MAX_NAME_BYTES
            ),
        ));
    }
    if t.shape.len() > gguf::MAX_DIMS {
        return Err(source.tensor_error(
            t,
            format!(
                "has {} axes; GGUF allows at most {}",
                t.shape.len(),
                gguf::MAX_DIMS
            ),
        ));
    }
    let inner = t.shape.last().copied().unwrap_or(1);
    Ok(match t.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            if t.shape.len() < 2 {
                GgmlType::F32
            } else if inner % wanted.block_size() == 0 {
                wanted
            } else {
                GgmlType::F16
            }
        }
        Dtype::I8 => GgmlType::I8,
        Dtype::I16 => GgmlType::I16,
        Dtype::I32 => GgmlType::I32,
        Dtype::I64 => GgmlType::I64,
        Dtype::F64 => GgmlType::F64,
        other => return Err(source.tensor_error(t, format!("GGUF has no type for {other:?}"))),
    })
}

/// The float encodings `--format gguf` offers, by ggml name in either case (`q4_0`, `Q8_0`).
pub fn parse_type(s: &str) -> Option<GgmlType> {
    GgmlType::from_name(s).filter(|ty| {
        matches!(
            ty,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::F16 | GgmlType::F32
        )
    })
}

/// Writes `input` as a GGUF file with float matrices in `wanted`; returns the report.
pub fn export_gguf(
    input: &Path,
    output: &Path,
    wanted: GgmlType,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Report> {
    let start = Instant::now();
    check_distinct(input, output)?;
    let source = Source::open(input)?;
    let tensors = source.tensors();
    let types = tensors
        .iter()
        .map(|t| choose(&source, t, wanted))
        .collect::<Result<Vec<_>>>()?;
    let sizes: Vec<usize> = tensors
        .iter()
        .zip(&types)
        .map(|(t, ty)| {
            ty.bytes(t.numel())
                .ok_or_else(|| source.tensor_error(t, "does not fill whole blocks"))
        })
        .collect::<Result<_>>()?;
    let (offsets, _) = gguf::offsets(&sizes);
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .zip(&types)
        .zip(&offsets)
        .map(|((t, ty), &offset)| TensorInfo {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ty: *ty,
            offset,
        })
        .collect();
    let kv = vec![
        (
            "general.architecture".to_string(),
            Value::String("wgquant".into()),
        ),
        (
            "general.name".to_string(),
            Value::String(
                input
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ),
        ),
        ("general.quantization_version".to_string(), Value::U32(2)),
        (
            "general.alignment".to_string(),
            Value::U32(gguf::ALIGNMENT as u32),
        ),
    ];
    let io = |e: std::io::Error| Error::io(output, plain_os_error(e));
    let tmp = super::output::TempOutput::create(output)?;
    let mut out = std::io::BufWriter::with_capacity(4 << 20, tmp.reopen()?);
    out.write_all(&gguf::header(&kv, &infos)).map_err(io)?;
    if let Some(pb) = progress {
        pb.set_length(tensors.iter().map(|t| t.bytes() as u64).sum());
    }
    let mut reports = Vec::new();
    let mut total_err = ErrorStats::default();
    let mut written = 0u64;
    for ((t, ty), size) in tensors.iter().zip(&types).zip(&sizes) {
        let t0 = Instant::now();
        let mut err = ErrorStats::default();
        let data = source.data(t);
        let is_float = matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);
        if is_float {
            let elem = t.dtype.bitsize() / 8;
            // Whole blocks per piece: a multiple of the innermost axis, which fills blocks.
            let unit = t.shape.last().copied().unwrap_or(1).max(1);
            let per = (DEFAULT_BLOCK_BYTES / 4 / unit).max(1) * unit;
            for piece in data.chunks(per * elem) {
                let entry = TensorEntry {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: vec![piece.len() / elem],
                    data: piece,
                };
                let values = to_f32(source.shard(t), &entry)?;
                let bytes = gguf::encode(*ty, &values)
                    .ok_or_else(|| source.tensor_error(t, "does not fill whole blocks"))?;
                if let Some(back) = gguf::decode(*ty, &bytes) {
                    err.add(&ErrorStats::measure(&values, &back));
                }
                out.write_all(&bytes).map_err(io)?;
                source.shard(t).release(piece);
            }
        } else {
            out.write_all(data).map_err(io)?;
        }
        written += *size as u64;
        let padded = written.next_multiple_of(gguf::ALIGNMENT);
        out.write_all(&vec![0u8; (padded - written) as usize])
            .map_err(io)?;
        written = padded;
        if let Some(pb) = progress {
            pb.inc(t.bytes() as u64);
        }
        let quantized = is_float && matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0);
        if quantized {
            total_err.add(&err);
        }
        reports.push(TensorReport {
            name: t.name.clone(),
            shape: t.shape.clone(),
            scheme: format!("gguf {}", ty.name()),
            bits_per_weight: *size as f64 * 8.0 / t.numel().max(1) as f64,
            sqnr_db: if is_float { err.sqnr_db() } else { None },
            rel_err: if is_float { err.rel_err() } else { 0.0 },
            bytes_in: t.bytes() as u64,
            bytes_out: *size as u64,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    drop(out);
    tmp.persist()?;
    let q: Vec<&TensorReport> = reports
        .iter()
        .filter(|r| r.scheme.ends_with("q8_0") || r.scheme.ends_with("q4_0"))
        .collect();
    let q_bytes: u64 = q.iter().map(|r| r.bytes_out).sum();
    let q_elems: u64 = q
        .iter()
        .map(|r| r.shape.iter().product::<usize>() as u64)
        .sum();
    Ok(Report {
        input: input.display().to_string(),
        output: output.display().to_string(),
        device: format!(
            "{} (GGUF blocks are encoded on the CPU)",
            device_label(&Backend::Cpu)
        ),
        totals: Totals {
            quantized: q.len(),
            passed_through: reports.len() - q.len(),
            bytes_in: reports.iter().map(|r| r.bytes_in).sum(),
            bytes_out: reports.iter().map(|r| r.bytes_out).sum(),
            bits_per_weight: q_bytes as f64 * 8.0 / q_elems.max(1) as f64,
            sqnr_db: total_err.sqnr_db(),
            rel_err: total_err.rel_err(),
            seconds: start.elapsed().as_secs_f64(),
        },
        tensors: reports,
    })
}
