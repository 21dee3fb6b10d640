//! Every composed shader parsed by naga's WGSL front end, validated, and translated to
//! SPIR-V, MSL, HLSL and GLSL for each compute entry point, so a shader that would break on
//! Vulkan, Metal, DX12 or GL fails here; the set of `shaders/*.wgsl` files on disk equals the
//! set the composed shaders cover; and every entry point compiles on the test device.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgquant::gpu::{Shader, all_shaders};

/// Shared snippets: composed into kernels, never compiled alone.
const SNIPPETS: [&str; 12] = [
    "common.wgsl",
    "weq.wgsl",
    "weq_act.wgsl",
    "affine.wgsl",
    "segments.wgsl",
    "tiles.wgsl",
    "pack.wgsl",
    "unpack.wgsl",
    "real_f32.wgsl",
    "real_f16.wgsl",
    "bitstream.wgsl",
    "fixed_point.wgsl",
];

/// Targets a shader needing a capability is not translated to, each with its reason. A
/// shader is still parsed, validated and translated to every other target.
const TARGET_EXCEPTIONS: [(&str, Capabilities, &str, &str); 1] = [(
    "qmatmul",
    Capabilities::SHADER_FLOAT16,
    "glsl",
    "naga's GLSL back end has no f16, and wgpu's GL backend never reports SHADER_F16, so the \
     f16 build of qmatmul is never requested there (Context::has_f16 gates it)",
)];

/// The documented exception for `shader` needing `caps` on `target`, if any.
fn target_exception(shader: &str, caps: Capabilities, target: &str) -> Option<&'static str> {
    TARGET_EXCEPTIONS
        .iter()
        .find(|(s, c, t, _)| *s == shader && caps.contains(*c) && target.starts_with(t))
        .map(|e| e.3)
}

/// Capabilities a shader's source asks for: the WGSL `enable` directives and the builtins
/// that need a device feature. Anything else must validate under WebGPU's baseline.
fn needed_capabilities(src: &str) -> Capabilities {
    let mut caps = Capabilities::empty();
    if src.contains("enable f16") {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if src.contains("enable subgroups") || src.contains("subgroup") {
        caps |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    }
    if src.contains("i64") || src.contains("u64") {
        caps |= Capabilities::SHADER_INT64;
    }
    caps
}

/// The parsed module and its validation info, or a message naming the shader.
fn parse_and_validate(
    shader: &Shader,
    caps: Capabilities,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let src = shader.source();
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| {
        format!(
            "shader '{}': WGSL parse error:\n{}",
            shader.name,
            e.emit_to_string(&src)
        )
    })?;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            format!(
                "shader '{}': validation failed with capabilities {caps:?}:\n{}",
                shader.name,
                e.emit_to_string(&src)
            )
        })?;
    Ok((module, info))
}

/// The compute entry points of a module.
fn compute_entries(module: &naga::Module) -> Vec<String> {
    module
        .entry_points
        .iter()
        .filter(|ep| ep.stage == naga::ShaderStage::Compute)
        .map(|ep| ep.name.clone())
        .collect()
}

/// A target back end: its name, the capabilities it supports and how it translates one
/// entry point of a (validated, overrides resolved) module.
struct Target {
    name: &'static str,
    supported: Capabilities,
    translate: fn(&naga::Module, &naga::valid::ModuleInfo, &str) -> Result<(), String>,
}

fn to_spirv(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Result<(), String> {
    let options = spv::Options {
        lang_version: (1, 3),
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    let words =
        spv::write_vec(module, info, &options, Some(&pipeline)).map_err(|e| e.to_string())?;
    if words.first() != Some(&0x0723_0203) {
        return Err("output does not start with the SPIR-V magic number".into());
    }
    Ok(())
}

fn to_msl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Result<(), String> {
    let options = msl::Options {
        lang_version: (2, 1),
        ..msl::Options::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
        ..msl::PipelineOptions::default()
    };
    let (text, tr) =
        msl::write_string(module, info, &options, &pipeline).map_err(|e| e.to_string())?;
    for name in tr.entry_point_names {
        name.map_err(|e| e.to_string())?;
    }
    if !text.contains("kernel void") {
        return Err("no `kernel void` function in the output".into());
    }
    Ok(())
}

fn to_hlsl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Result<(), String> {
    let options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_0,
        ..hlsl::Options::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
    };
    let mut text = String::new();
    let mut writer = hlsl::Writer::new(&mut text, &options, &pipeline);
    let reflection = writer
        .write(module, info, None)
        .map_err(|e| e.to_string())?;
    for name in reflection.entry_point_names {
        name.map_err(|e| e.to_string())?;
    }
    if !text.contains("[numthreads(") {
        return Err("no [numthreads(..)] entry point in the output".into());
    }
    Ok(())
}

fn glsl(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    version: glsl::Version,
) -> Result<(), String> {
    let options = glsl::Options {
        version,
        ..glsl::Options::default()
    };
    let pipeline = glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry.to_string(),
        multiview: None,
    };
    let mut text = String::new();
    let mut writer = glsl::Writer::new(
        &mut text,
        module,
        info,
        &options,
        &pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .map_err(|e| e.to_string())?;
    writer.write().map_err(|e| e.to_string())?;
    if !text.contains("layout(local_size_x") {
        return Err("no compute layout in the output".into());
    }
    Ok(())
}

/// GLSL ES 3.10, what wgpu's GL back end targets on GLES/EGL.
fn to_glsl_es(m: &naga::Module, i: &naga::valid::ModuleInfo, entry: &str) -> Result<(), String> {
    glsl(m, i, entry, glsl::Version::new_gles(310))
}

/// Desktop GLSL 4.30, the first core version with compute shaders.
fn to_glsl_core(m: &naga::Module, i: &naga::valid::ModuleInfo, entry: &str) -> Result<(), String> {
    glsl(m, i, entry, glsl::Version::Desktop(430))
}

fn targets() -> [Target; 5] {
    [
        Target {
            name: "spir-v 1.3",
            supported: spv::supported_capabilities(),
            translate: to_spirv,
        },
        Target {
            name: "msl 2.1",
            supported: msl::supported_capabilities(),
            translate: to_msl,
        },
        Target {
            name: "hlsl sm6.0",
            supported: hlsl::supported_capabilities(),
            translate: to_hlsl,
        },
        Target {
            name: "glsl es 310",
            supported: glsl::supported_capabilities(),
            translate: to_glsl_es,
        },
        Target {
            name: "glsl 430",
            supported: glsl::supported_capabilities(),
            translate: to_glsl_core,
        },
    ]
}

#[test]
fn every_shader_validates_and_translates_to_every_target() {
    let mut failures = Vec::new();
    let mut count = 0;
    let shaders = all_shaders();
    assert!(!shaders.is_empty(), "all_shaders() lists no shader");
    for shader in &shaders {
        let caps = needed_capabilities(&shader.source());
        let (module, info) = match parse_and_validate(shader, caps) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let entries = compute_entries(&module);
        if entries.is_empty() {
            failures.push(format!("shader '{}': no compute entry point", shader.name));
        }
        for target in targets() {
            if let Some(reason) = target_exception(shader.name, caps, target.name) {
                common::say(&format!(
                    "shader '{}' ({caps:?}) not translated to {}: {reason}",
                    shader.name, target.name
                ));
                continue;
            }
            if !target.supported.contains(caps) {
                failures.push(format!(
                    "shader '{}' target {}: needs capabilities {:?} the target lacks",
                    shader.name,
                    target.name,
                    caps.difference(target.supported)
                ));
                continue;
            }
            for entry in &entries {
                count += 1;
                // Resolve `override` constants to their defaults, as a pipeline without
                // explicit constants would, then translate that entry point alone.
                let constants = naga::back::PipelineConstants::default();
                let resolved = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, entry)),
                    &constants,
                );
                let r = match resolved {
                    Ok((m, i)) => (target.translate)(&m, &i, entry),
                    Err(e) => Err(format!("resolving overrides: {e}")),
                };
                if let Err(e) = r {
                    failures.push(format!(
                        "shader '{}' entry point '{entry}' target {}: {e}",
                        shader.name, target.name
                    ));
                }
            }
        }
    }
    common::finish(
        "every_shader_validates_and_translates_to_every_target",
        count,
        failures,
    );
}

/// Every `shaders/*.wgsl` file is part of some composed shader (a kernel file is the last
/// part of the shader of its name; snippets are earlier parts), and every part is a file on
/// disk with the same text, so no kernel is left untested and no stale copy is compiled.
#[test]
fn shader_files_on_disk_equal_the_composed_set() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk = BTreeSet::new();
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("shaders/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            texts.push((
                name.clone(),
                std::fs::read_to_string(&path).expect("readable"),
            ));
            on_disk.insert(name);
        }
    }
    let file_of = |part: &str| -> Option<String> {
        texts
            .iter()
            .find(|(_, text)| text == part)
            .map(|(name, _)| name.clone())
    };
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for shader in all_shaders() {
        let own = format!("{}.wgsl", shader.name);
        for (k, part) in shader.parts.iter().enumerate() {
            let last = k + 1 == shader.parts.len();
            match file_of(part) {
                None => failures.push(format!(
                    "shader '{}': part {k} matches no file in shaders/ (stale or inline WGSL)",
                    shader.name
                )),
                Some(name) => {
                    if last && name != own {
                        failures.push(format!(
                            "shader '{}': last part is {name}, expected its own file {own}",
                            shader.name
                        ));
                    }
                    if !last && !SNIPPETS.contains(&name.as_str()) {
                        failures.push(format!(
                            "shader '{}': part {k} is {name}, which is not a known snippet {SNIPPETS:?}",
                            shader.name
                        ));
                    }
                    covered.insert(name);
                }
            }
        }
    }
    for name in on_disk.difference(&covered) {
        failures.push(format!(
            "shaders/{name} is part of no composed shader in wgquant::gpu::all_shaders()"
        ));
    }
    for name in SNIPPETS {
        if !on_disk.contains(name) {
            failures.push(format!("known snippet shaders/{name} is missing"));
        }
    }
    common::finish(
        "shader_files_on_disk_equal_the_composed_set",
        on_disk.len(),
        failures,
    );
}

/// Every compute entry point of every shader compiles into a pipeline on the test device
/// (through the device's own shader compiler, inside a validation error scope).
#[test]
fn every_entry_point_compiles_on_the_device() {
    let Some(ctx) = common::gpu() else { return };
    let mut failures = Vec::new();
    let mut count = 0;
    for shader in all_shaders() {
        let caps = needed_capabilities(&shader.source());
        // A build needing f16 is only ever requested on devices with shader-f16.
        if caps.contains(Capabilities::SHADER_FLOAT16) && !ctx.has_f16() {
            common::say(&format!(
                "shader '{}' needs f16, which {} lacks: not compiled on it",
                shader.name,
                ctx.adapter_summary()
            ));
            continue;
        }
        let entries = match parse_and_validate(&shader, caps) {
            Ok((module, _)) => compute_entries(&module),
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for entry in entries {
            count += 1;
            if let Err(e) = ctx.pipeline(&shader, &entry) {
                failures.push(format!(
                    "shader '{}' entry point '{entry}' on {}: {e}",
                    shader.name,
                    ctx.adapter_summary()
                ));
            }
        }
    }
    common::finish("every_entry_point_compiles_on_the_device", count, failures);
}

#[test]
fn precompile_builds_every_default_pipeline() {
    let Some(ctx) = common::gpu() else { return };
    let built = ctx.precompile().expect("every kernel compiles");
    // Every compute entry point of every composed shader (f16 ones only where supported).
    let entries: usize = all_shaders()
        .iter()
        .filter(|s| ctx.has_f16() || !s.source().contains("enable f16;"))
        .map(|s| {
            let module = naga::front::wgsl::parse_str(&s.source()).expect("parses");
            module
                .entry_points
                .iter()
                .filter(|e| e.stage == naga::ShaderStage::Compute)
                .count()
        })
        .sum();
    assert_eq!(built, entries);
    assert!(built > 20, "only {built} pipelines");
}
