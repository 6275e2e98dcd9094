//! Gemm, MatMul and Conv (1-d, 2-d and n-d; groups, pads, strides, dilations, `auto_pad`),
//! opsets 7 to 27.

use super::attrs::Attrs;
use super::{Cx, ImportError};
use fhec_ir::{ConvAttrs, Op};
use tract_onnx::pb;

pub(super) fn gemm(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let op = Op::Gemm {
        alpha: a.float("alpha", 1.0)?,
        beta: a.float("beta", 1.0)?,
        trans_a: a.int("transA", 0)? != 0,
        trans_b: a.int("transB", 0)? != 0,
    };
    let inputs: &[usize] = if cx.input(n, 2)?.is_some() {
        &[0, 1, 2]
    } else {
        &[0, 1]
    };
    cx.emit(n, op, inputs)
}

pub(super) fn matmul(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    cx.emit(n, Op::MatMul, &[0, 1])
}

/// Sliding-window geometry shared by Conv and the pools: explicit pads from `pads` or
/// `auto_pad`, with defaults for strides and dilations.
pub(super) struct Window {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
}

pub(super) fn window(
    n: &pb::NodeProto,
    kernel: &[usize],
    spatial_in: &[usize],
) -> Result<Window, ImportError> {
    let a = Attrs::of(n);
    let d = kernel.len();
    if spatial_in.len() != d {
        return Err(Cx::err(
            n,
            format!(
                "a {d}-d kernel needs an input with {d} spatial axes, got {}",
                spatial_in.len()
            ),
        ));
    }
    // ranges (kernel ≥ 1, everything < 2^31) are the IR's window check, run at emit
    let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; d]);
    let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; d]);
    if strides.len() != d || dilations.len() != d || strides.contains(&0) || dilations.contains(&0)
    {
        return Err(Cx::err(
            n,
            format!("strides {strides:?} / dilations {dilations:?} must give {d} positive values"),
        ));
    }
    let auto = a.string("auto_pad", "NOTSET")?;
    let (pads_begin, pads_end) = match auto.as_str() {
        "NOTSET" => {
            let p = a.usizes("pads")?.unwrap_or_else(|| vec![0; 2 * d]);
            if p.len() != 2 * d {
                return Err(Cx::err(n, format!("pads {p:?} must give {} values", 2 * d)));
            }
            (p[..d].to_vec(), p[d..].to_vec())
        }
        "VALID" => (vec![0; d], vec![0; d]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut b = vec![0; d];
            let mut e = vec![0; d];
            for i in 0..d {
                let out = spatial_in[i].div_ceil(strides[i]);
                // in u128, whatever the attributes (the IR's window check refuses bad ones)
                let need = (out.saturating_sub(1) as u128) * strides[i] as u128
                    + (kernel[i] as u128).saturating_sub(1) * dilations[i] as u128
                    + 1;
                let need = usize::try_from(need).map_err(|_| {
                    Cx::err(n, "the SAME padding of this window overflows".to_string())
                })?;
                let total = need.saturating_sub(spatial_in[i]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    b[i] = small;
                    e[i] = total - small;
                } else {
                    b[i] = total - small;
                    e[i] = small;
                }
            }
            (b, e)
        }
        other => {
            return Err(Cx::err(
                n,
                format!("auto_pad `{other}` is not an ONNX value"),
            ))
        }
    };
    Ok(Window {
        strides,
        dilations,
        pads_begin,
        pads_end,
    })
}

pub(super) fn conv(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let w = cx.in_ty(n, 1)?;
    if w.rank() < 3 || x.rank() != w.rank() {
        return Err(Cx::err(
            n,
            format!("x {x} and weights {w} must both be [N, C, spatial…]"),
        ));
    }
    let kernel = a
        .usizes("kernel_shape")?
        .unwrap_or_else(|| w.shape[2..].to_vec());
    let win = window(n, &kernel, &x.shape[2..])?;
    let group = a.int("group", 1)?;
    if group < 1 {
        return Err(Cx::err(n, format!("group {group} must be positive")));
    }
    let op = Op::Conv(ConvAttrs {
        kernel,
        strides: win.strides,
        pads_begin: win.pads_begin,
        pads_end: win.pads_end,
        dilations: win.dilations,
        group: group as usize,
    });
    let inputs: &[usize] = if cx.input(n, 2)?.is_some() {
        &[0, 1, 2]
    } else {
        &[0, 1]
    };
    cx.emit(n, op, inputs)
}

/// `ConvTranspose` as ONNX defines it, written as what it equals: the input with `s − 1`
/// zeros inserted between neighbours along each strided axis (Reshape → Pad → Reshape →
/// Slice: moves of encrypted values and clear zeros), then a `Conv` with stride 1, the same
/// dilations, the kernel flipped in space with input and output channels swapped per group,
/// and pads `d·(k − 1) − pad` at each side (plus `output_padding` at the end); a negative pad
/// becomes a crop (Slice) after the Conv. `output_shape` and `auto_pad` give the pads by
/// ONNX's formula. The weights must be constants (they are the layer's clear weights).
pub(super) fn conv_transpose(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    use fhec_ir::{PadMode, SliceAxis, Tensor};
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let w = cx
        .const_input(n, 1)?
        .ok_or_else(|| Cx::err(n, "missing weights"))?;
    let ws: Vec<usize> = w.shape().to_vec();
    if ws.len() < 3 || x.rank() != ws.len() {
        return Err(Cx::err(
            n,
            format!("x {x} and weights {ws:?} must both be [N, C, spatial…]"),
        ));
    }
    let d = ws.len() - 2;
    let group = a.int("group", 1)?;
    if group < 1 || !ws[0].is_multiple_of(group as usize) || x.shape[1] != ws[0] {
        return Err(Cx::err(
            n,
            format!(
                "group {group} does not fit {} input channels and weights {ws:?}",
                x.shape[1]
            ),
        ));
    }
    let g = group as usize;
    let kernel = a
        .usizes("kernel_shape")?
        .unwrap_or_else(|| ws[2..].to_vec());
    let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; d]);
    let dil = a.usizes("dilations")?.unwrap_or_else(|| vec![1; d]);
    let out_pad = a.usizes("output_padding")?.unwrap_or_else(|| vec![0; d]);
    if kernel != ws[2..]
        || strides.len() != d
        || dil.len() != d
        || out_pad.len() != d
        || strides.iter().chain(&dil).any(|&v| v == 0 || v > 64)
        || out_pad
            .iter()
            .zip(strides.iter().zip(&dil))
            .any(|(&o, (&s, &dl))| o >= s.max(dl))
    {
        return Err(Cx::err(
            n,
            format!("kernel {kernel:?}, strides {strides:?}, dilations {dil:?}, output_padding {out_pad:?} do not fit weights {ws:?}"),
        ));
    }
    let spatial = &x.shape[2..];
    // the span the full transposed convolution covers along each axis
    let full: Vec<i64> = (0..d)
        .map(|i| (strides[i] * (spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1) as i64)
        .collect();
    let auto = a.string("auto_pad", "NOTSET")?;
    let output_shape = a.ints("output_shape")?;
    let (pb_, pe_): (Vec<i64>, Vec<i64>) = if let Some(os) = output_shape
        .clone()
        .map(|v| v[v.len().saturating_sub(d)..].to_vec())
        .or_else(|| {
            (auto == "SAME_UPPER" || auto == "SAME_LOWER")
                .then(|| (0..d).map(|i| (spatial[i] * strides[i]) as i64).collect())
        }) {
        if os.len() != d {
            return Err(Cx::err(
                n,
                format!("output_shape {os:?} needs {d} spatial sizes"),
            ));
        }
        // ONNX's split, with floor division (a negative total pads the end: the output
        // asked for is longer than the full span)
        let split = |t: i64| {
            let h = t.div_euclid(2);
            if auto == "SAME_UPPER" {
                (h, t - h)
            } else {
                (t - h, h)
            }
        };
        (0..d).map(|i| split(full[i] - os[i])).unzip()
    } else {
        let p = a.ints("pads")?.unwrap_or_else(|| vec![0; 2 * d]);
        if p.len() != 2 * d || p.iter().any(|&v| v < 0) {
            return Err(Cx::err(
                n,
                format!("pads {p:?} must give {} non-negative values", 2 * d),
            ));
        }
        (p[..d].to_vec(), p[d..].to_vec())
    };
    if (0..d).any(|i| full[i] - pb_[i] - pe_[i] < 1 || pb_[i] < 0) {
        return Err(Cx::err(n, "the pads leave an empty output"));
    }
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    // the steps, each reading the previous one's result (`{out}::{tag}`)
    let mut steps: Vec<(&str, Op, Vec<String>)> = Vec::new();
    let prev = |steps: &Vec<(&str, Op, Vec<String>)>| match steps.last() {
        Some((tag, _, _)) => format!("{out}::{tag}"),
        None => n.input[0].clone(),
    };
    // 1. zeros between neighbours along strided axes
    if strides.iter().any(|&s| s > 1) {
        let (nb, c) = (x.shape[0], x.shape[1]);
        let mut split = vec![nb, c];
        let mut begin = vec![0; 2];
        let mut end = vec![0; 2];
        let mut merged = vec![nb, c];
        let mut keep = Vec::new();
        for i in 0..d {
            split.extend([spatial[i], 1]);
            begin.extend([0, 0]);
            end.extend([0, strides[i] - 1]);
            merged.push(spatial[i] * strides[i]);
            keep.push(SliceAxis {
                axis: 2 + i,
                start: 0,
                step: 1,
                len: strides[i] * (spatial[i] - 1) + 1,
            });
        }
        for (tag, op) in [
            ("split", Op::Reshape { shape: split }),
            (
                "zeros",
                Op::Pad {
                    begin,
                    end,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
            ),
            ("merged", Op::Reshape { shape: merged }),
            ("spread", Op::Slice { axes: keep }),
        ] {
            let from = prev(&steps);
            steps.push((tag, op, vec![from]));
        }
    }
    // 2. the kernel flipped in space, channels swapped per group: W [C_in, C_out/g, k…] →
    // W' [C_out, C_in/g, k…]
    let (cin, cout_g) = (ws[0], ws[1]);
    let cin_g = cin / g;
    let ksize: usize = kernel.iter().product();
    let wv = w.to_f32();
    let wv: Vec<f32> = wv.iter().copied().collect();
    let mut flipped = vec![0f32; wv.len()];
    for gi in 0..g {
        for ci in 0..cin_g {
            for co in 0..cout_g {
                for k in 0..ksize {
                    // the flipped spatial position: each coordinate mirrored
                    let mut rem = k;
                    let mut fk = 0;
                    let mut stride = 1;
                    let mut coords = vec![0; d];
                    for j in (0..d).rev() {
                        coords[j] = rem % kernel[j];
                        rem /= kernel[j];
                    }
                    for j in (0..d).rev() {
                        fk += (kernel[j] - 1 - coords[j]) * stride;
                        stride *= kernel[j];
                    }
                    let src = ((gi * cin_g + ci) * cout_g + co) * ksize + k;
                    let dst = ((gi * cout_g + co) * cin_g + ci) * ksize + fk;
                    flipped[dst] = wv[src];
                }
            }
        }
    }
    let mut wshape = vec![cout_g * g, cin_g];
    wshape.extend(&kernel);
    let wname = format!("{out}::weights");
    let wt = Tensor::F32(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&wshape), flipped)
            .map_err(|e| Cx::err(n, e.to_string()))?,
    );
    cx.bind(&wname, super::Val::Const(wt));
    // 3. the Conv, then a crop where a pad was negative
    let conv_pb: Vec<i64> = (0..d)
        .map(|i| (dil[i] * (kernel[i] - 1)) as i64 - pb_[i])
        .collect();
    let conv_pe: Vec<i64> = (0..d)
        .map(|i| (dil[i] * (kernel[i] - 1)) as i64 - pe_[i] + out_pad[i] as i64)
        .collect();
    let op = Op::Conv(ConvAttrs {
        kernel: kernel.clone(),
        strides: vec![1; d],
        pads_begin: conv_pb.iter().map(|&p| p.max(0) as usize).collect(),
        pads_end: conv_pe.iter().map(|&p| p.max(0) as usize).collect(),
        dilations: dil.clone(),
        group: g,
    });
    let mut ins = vec![prev(&steps), wname];
    if cx.input(n, 2)?.is_some() {
        ins.push(n.input[2].clone());
    }
    steps.push(("conv", op, ins));
    if conv_pb.iter().chain(&conv_pe).any(|&p| p < 0) {
        let axes = (0..d)
            .map(|i| SliceAxis {
                axis: 2 + i,
                start: (-conv_pb[i]).max(0),
                step: 1,
                len: (full[i] - pb_[i] - pe_[i]) as usize,
            })
            .collect();
        let from = prev(&steps);
        steps.push(("crop", Op::Slice { axes }, vec![from]));
    }
    super::elementwise::emit_steps(cx, n, &out, steps)
}
