//! Comparisons, logic, `Where` and `ArgMax`/`ArgMin`. Booleans are 0/1 floats:
//!
//! - `Greater(a, b)` is `a − b > 0` (`Unary::Compare`), `Less` the same on `b − a`, the
//!   `OrEqual` forms `≥ 0`, `Equal` `= 0`: one subtraction and a univariate function, so on
//!   encrypted values one table lookup per element (fused with what follows).
//! - `Not(x)` is `x = 0`; `And`, `Or`, `Xor` are `Min`, `Max` and `|a − b|` of 0/1 values.
//! - `Where(c, x, y)`: all constant → folded; a constant condition → `x·c + y'` with each
//!   constant branch zeroed where the other is taken (no `0·∞`: an attention mask's `−∞`
//!   stays exact); a computed condition → `y + c·(x − y)`, which needs finite branches (an
//!   infinite constant branch is refused, naming the fix).
//! - `ArgMax`/`ArgMin` (opsets 1–13: `axis`, `keepdims`, `select_last_index`): indices as
//!   floats; it cannot run encrypted and stays in the client's tail after decryption.

use super::attrs::Attrs;
use super::elementwise::emit_steps;
use super::qdq::as_f32;
use super::{Cx, ImportError, Val};
use fhec_ir::{Binary, Cmp, Op, Tensor, Unary};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb;

fn out_name(n: &pb::NodeProto) -> Result<String, ImportError> {
    n.output
        .first()
        .cloned()
        .ok_or_else(|| Cx::err(n, "node has no output"))
}

/// Input `i` as a float value's name (integer and boolean tensors cast).
fn float_in(cx: &mut Cx, n: &pb::NodeProto, i: usize, out: &str) -> Result<String, ImportError> {
    let name = n
        .input
        .get(i)
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(|| Cx::err(n, format!("input {i} is missing")))?;
    let dt = cx.in_ty(n, i)?.dtype;
    as_f32(cx, n, &name, dt, &format!("{out}::in{i}"))
}

/// Greater, Less, GreaterOrEqual, LessOrEqual, Equal.
pub(super) fn compare(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let out = out_name(n)?;
    let a = float_in(cx, n, 0, &out)?;
    let b = float_in(cx, n, 1, &out)?;
    let (x, y, cmp) = match n.op_type.as_str() {
        "Greater" => (a, b, Cmp::Gt),
        "GreaterOrEqual" => (a, b, Cmp::Ge),
        "Less" => (b, a, Cmp::Gt),
        "LessOrEqual" => (b, a, Cmp::Ge),
        _ => (a, b, Cmp::Eq),
    };
    emit_steps(
        cx,
        n,
        &out,
        vec![
            ("diff", Op::Binary(Binary::Sub), vec![x, y]),
            (
                "cmp",
                Op::Unary(Unary::Compare(cmp)),
                vec![format!("{out}::diff")],
            ),
        ],
    )?;
    cx.set_elem_type(&out, pb::tensor_proto::DataType::Bool as i32);
    Ok(())
}

/// Not, And, Or, Xor on 0/1 values.
pub(super) fn logic(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let out = out_name(n)?;
    let a = float_in(cx, n, 0, &out)?;
    let steps = match n.op_type.as_str() {
        "Not" => vec![("not", Op::Unary(Unary::Compare(Cmp::Eq)), vec![a])],
        op => {
            let b = float_in(cx, n, 1, &out)?;
            match op {
                "And" => vec![("and", Op::Binary(Binary::Min), vec![a, b])],
                "Or" => vec![("or", Op::Binary(Binary::Max), vec![a, b])],
                _ => vec![
                    ("diff", Op::Binary(Binary::Sub), vec![a, b]),
                    ("xor", Op::Unary(Unary::Abs), vec![format!("{out}::diff")]),
                ],
            }
        }
    };
    emit_steps(cx, n, &out, steps)?;
    cx.set_elem_type(&out, pb::tensor_proto::DataType::Bool as i32);
    Ok(())
}

/// `c ? x : y` elementwise over arrays broadcast to `shape`.
fn pick<T: Copy>(
    c: &ndarray::ArrayViewD<f32>,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    shape: &[usize],
) -> Option<ArrayD<T>> {
    let (xb, yb) = (x.broadcast(IxDyn(shape))?, y.broadcast(IxDyn(shape))?);
    Some(ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        if c[&ix] != 0.0 {
            xb[&ix]
        } else {
            yb[&ix]
        }
    }))
}

/// `c ? x : y` over constants broadcast to `shape` (integers stay integers).
fn select(c: &Tensor, x: &Tensor, y: &Tensor, shape: &[usize]) -> Option<Tensor> {
    let c = c.to_f32();
    let cb = c.broadcast(IxDyn(shape))?;
    Some(match (x, y) {
        (Tensor::I64(xa), Tensor::I64(ya)) => Tensor::I64(pick(&cb, xa, ya, shape)?),
        _ => Tensor::F32(pick(&cb, &x.to_f32(), &y.to_f32(), shape)?),
    })
}

fn shape_of(cx: &Cx, n: &pb::NodeProto, i: usize) -> Result<Vec<usize>, ImportError> {
    Ok(cx.in_ty(n, i)?.shape)
}

pub(super) fn where_(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let out = out_name(n)?;
    if n.input.len() != 3 {
        return Err(Cx::err(n, "Where takes a condition and two values"));
    }
    let mut shape = Vec::new();
    for i in 0..3 {
        shape = fhec_ir::kernels::broadcast_shapes(&shape, &shape_of(cx, n, i)?)
            .map_err(|e| Cx::err(n, e.to_string()))?;
    }
    cx.check_elements(n, &shape)?;
    let known = |i: usize| -> Result<Option<Tensor>, ImportError> {
        Ok(match cx.req(n, i)? {
            Val::Const(t) => Some(t.clone()),
            Val::Node(_) => None,
        })
    };
    let consts = (known(0)?, known(1)?, known(2)?);
    let bad_bcast = || Cx::err(n, "the inputs do not broadcast together");
    if let (Some(c), Some(x), Some(y)) = &consts {
        cx.charge(n, &shape)?;
        let t = select(c, x, y, &shape).ok_or_else(bad_bcast)?;
        cx.bind(&out, Val::Const(t));
        return Ok(());
    }
    let zeros = Tensor::F32(ArrayD::zeros(IxDyn(&[])));
    match consts {
        (Some(c), x, y) => {
            // x·c + y·(1 − c), each constant branch selected at import time
            let cf = Tensor::F32(c.to_f32().mapv(|v| f32::from(u8::from(v != 0.0))));
            let not_c = Tensor::F32(cf.to_f32().mapv(|v| 1.0 - v));
            let mut terms = Vec::new();
            for (k, (branch, gate)) in [(x, &cf), (y, &not_c)].into_iter().enumerate() {
                let tag = if k == 0 { "then" } else { "else" };
                let name = match branch {
                    Some(b) => {
                        cx.charge(n, &shape)?;
                        let t = select(gate, &b, &zeros, &shape).ok_or_else(bad_bcast)?;
                        let name = format!("{out}::{tag}");
                        cx.bind(&name, Val::Const(t));
                        name
                    }
                    None => {
                        let v = float_in(cx, n, k + 1, &out)?;
                        let g = format!("{out}::{tag}_gate");
                        cx.bind(&g, Val::Const(gate.clone()));
                        let name = format!("{out}::{tag}");
                        emit_steps(
                            cx,
                            n,
                            &name,
                            vec![(tag, Op::Binary(Binary::Mul), vec![v, g])],
                        )?;
                        name
                    }
                };
                terms.push(name);
            }
            emit_steps(cx, n, &out, vec![("where", Op::Binary(Binary::Add), terms)])
        }
        (None, x, y) => {
            for (i, b) in [(1, &x), (2, &y)] {
                if let Some(t) = b {
                    if t.to_f32().iter().any(|v| !v.is_finite()) {
                        return Err(Cx::err(
                            n,
                            format!("input {i} holds an infinite or NaN value, and the condition is computed: an encrypted select needs finite values (replace -inf by a large finite value, e.g. the lowest score the model can produce)"),
                        ));
                    }
                }
            }
            let c = float_in(cx, n, 0, &out)?;
            let x = float_in(cx, n, 1, &out)?;
            let y = float_in(cx, n, 2, &out)?;
            emit_steps(
                cx,
                n,
                &out,
                vec![
                    ("diff", Op::Binary(Binary::Sub), vec![x, y.clone()]),
                    (
                        "gated",
                        Op::Binary(Binary::Mul),
                        vec![format!("{out}::diff"), c],
                    ),
                    (
                        "where",
                        Op::Binary(Binary::Add),
                        vec![format!("{out}::gated"), y],
                    ),
                ],
            )
        }
    }
}

/// ArgMax, ArgMin.
pub(super) fn arg_max(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank() as i64;
    let axis = a.int("axis", 0)?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) {
        return Err(Cx::err(
            n,
            format!(
                "axis {} is out of range for a rank-{rank} input",
                a.int("axis", 0)?
            ),
        ));
    }
    let op = Op::ArgMax {
        axis: axis as usize,
        keepdims: a.int("keepdims", 1)? != 0,
        select_last: a.int("select_last_index", 0)? != 0,
        min: n.op_type == "ArgMin",
    };
    cx.emit(n, op, &[0])?;
    if let Some(o) = n.output.first() {
        cx.set_elem_type(o, pb::tensor_proto::DataType::Int64 as i32);
    }
    Ok(())
}
