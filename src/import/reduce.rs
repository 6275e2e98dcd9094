//! ReduceSum, ReduceMean (axes as attribute or input, by opset) and Softmax (opset < 13
//! flattening semantics and the per-axis semantics of opset 13+).

use super::attrs::{axis, Attrs};
use super::{Cx, ImportError};
use fhec_ir::{Op, ReduceKind};
use tract_onnx::pb;

pub(super) fn reduce(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let kind = if n.op_type == "ReduceSum" {
        ReduceKind::Sum
    } else {
        ReduceKind::Mean
    };
    // axes became an input: ReduceSum at opset 13, ReduceMean at opset 18
    let axes_as_input = match kind {
        ReduceKind::Sum => cx.opset >= 13,
        ReduceKind::Mean => cx.opset >= 18,
    };
    let raw = if axes_as_input {
        cx.const_input(n, 1)?.map(|t| t.i64_values())
    } else {
        a.ints("axes")?
    };
    let noop_empty = a.int("noop_with_empty_axes", 0)? != 0;
    let raw = raw.unwrap_or_default();
    if raw.is_empty() && noop_empty {
        return cx.emit(n, Op::Identity, &[0]);
    }
    let mut axes = if raw.is_empty() {
        (0..rank).collect()
    } else {
        raw.iter()
            .map(|&x| axis(n, x, rank))
            .collect::<Result<Vec<_>, _>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    cx.emit(
        n,
        Op::Reduce {
            kind,
            axes,
            keepdims: a.int("keepdims", 1)? != 0,
        },
        &[0],
    )
}

pub(super) fn softmax(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let legacy = cx.opset < 13;
    let ax = a.int("axis", if legacy { 1 } else { -1 })?;
    let ax = axis(n, ax, rank)?;
    cx.emit(
        n,
        Op::Softmax {
            axis: ax,
            flatten: legacy,
        },
        &[0],
    )
}
