// The device's roofline: u32 words src -> dst with fake_quant's access pattern (4 words per
// thread strided by WORKGROUP_SIZE, folded 2-D grid) and no arithmetic, so a kernel's GB/s can
// be read against it. Needs common.wgsl before it.

// Mirrors `CopyParams` in src/gpu/copy.rs (16 bytes).
struct CopyParams {
    len: u32,            // words in this dispatch
    src_base: u32,       // index of the first word in the bound src window
    dst_base: u32,       // index of the first word in the bound dst window
    num_workgroups: u32, // workgroups the dispatch covers (the folded grid may have a few more)
}

const ELEMS_PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn copy_words(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let first = wg * WORKGROUP_SIZE * ELEMS_PER_THREAD;
    for (var k = 0u; k < ELEMS_PER_THREAD; k++) {
        let i = first + k * WORKGROUP_SIZE + lid;
        if (i < params.len) {
            dst[params.dst_base + i] = src[params.src_base + i];
        }
    }
}
