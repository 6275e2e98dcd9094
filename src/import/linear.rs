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
