//! AveragePool, MaxPool (ceil mode, dilations, `auto_pad`) and inference-mode
//! BatchNormalization, opsets 7 to 27.

use super::attrs::Attrs;
use super::linear::window;
use super::{Cx, ImportError};
use fhec_ir::{Op, PoolAttrs};
use tract_onnx::pb;

pub(super) fn pool(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(Cx::err(
            n,
            "the Indices output of MaxPool is not supported; export without return_indices",
        ));
    }
    let x = cx.in_ty(n, 0)?;
    let kernel = a
        .usizes("kernel_shape")?
        .ok_or_else(|| Cx::err(n, "missing attribute `kernel_shape`"))?;
    if x.rank() != kernel.len() + 2 {
        return Err(Cx::err(
            n,
            format!("input {x} does not match a {}-d kernel", kernel.len()),
        ));
    }
    if a.int("storage_order", 0)? != 0 {
        return Err(Cx::err(
            n,
            "storage_order=1 (column-major indices) is not supported",
        ));
    }
    let win = window(n, &kernel, &x.shape[2..])?;
    let attrs = PoolAttrs {
        kernel,
        strides: win.strides,
        pads_begin: win.pads_begin,
        pads_end: win.pads_end,
        dilations: win.dilations,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
        count_include_pad: a.int("count_include_pad", 0)? != 0,
    };
    let op = if n.op_type == "MaxPool" {
        Op::MaxPool(attrs)
    } else {
        Op::AveragePool(attrs)
    };
    cx.emit(n, op, &[0])
}

pub(super) fn batch_norm(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    if a.int("training_mode", 0)? != 0 || n.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(Cx::err(
            n,
            "training-mode BatchNormalization is not supported; export the model in eval() mode",
        ));
    }
    cx.emit(
        n,
        Op::BatchNorm {
            epsilon: a.float("epsilon", 1e-5)?,
        },
        &[0, 1, 2, 3, 4],
    )
}
