//! Elementwise ops: Abs, Ceil, Elu, Erf, Exp, Floor, HardSigmoid, HardSwish, LeakyRelu, Log,
//! Neg, Reciprocal, Relu, Selu, Sigmoid, Softplus, Sqrt, Tanh, Clip (bounds as attributes
//! before opset 11, as constant inputs from 11); Add, Sub, Mul, Div, Pow, PRelu, and variadic
//! Max, Min. Opsets 7 to 23.

use super::attrs::Attrs;
use super::{Cx, ImportError, Val};
use fhec_ir::{Binary, Op, Unary};
use tract_onnx::pb;

pub(super) fn convert(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let unary = match n.op_type.as_str() {
        "Abs" => Some(Unary::Abs),
        "Ceil" => Some(Unary::Ceil),
        "Elu" => Some(Unary::Elu {
            alpha: a.float("alpha", 1.0)?,
        }),
        "Erf" => Some(Unary::Erf),
        "Exp" => Some(Unary::Exp),
        "Floor" => Some(Unary::Floor),
        "HardSigmoid" => Some(Unary::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        }),
        "HardSwish" => Some(Unary::HardSwish),
        "LeakyRelu" => Some(Unary::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        }),
        "Log" => Some(Unary::Log),
        "Neg" => Some(Unary::Neg),
        "Reciprocal" => Some(Unary::Reciprocal),
        "Relu" => Some(Unary::Relu),
        "Round" => Some(Unary::Round),
        "Selu" => Some(Unary::Selu {
            alpha: a.float("alpha", 1.673_263_2)?,
            gamma: a.float("gamma", 1.050_701)?,
        }),
        "Sigmoid" => Some(Unary::Sigmoid),
        "Softplus" => Some(Unary::Softplus),
        "Sqrt" => Some(Unary::Sqrt),
        "Tanh" => Some(Unary::Tanh),
        "Clip" => match clip(cx, n)? {
            Some(c) => Some(c),
            None => return clip_runtime(cx, n),
        },
        _ => None,
    };
    if let Some(u) = unary {
        return cx.emit(n, Op::Unary(u), &[0]);
    }
    let binary = match n.op_type.as_str() {
        "Add" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        "PRelu" => Binary::PRelu,
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        other => {
            unreachable!("invariant: {other} passed the supported-op check but has no converter")
        }
    };
    if matches!(binary, Binary::Max | Binary::Min) && n.input.len() != 2 {
        return variadic(cx, n, binary);
    }
    if binary == Binary::Pow {
        // Pow's exponent may be of another type than its base: cast it to the base's type.
        let base = cx.in_ty(n, 0)?.dtype;
        if cx.in_ty(n, 1)?.dtype != base {
            let cast_out = format!("{}::cast_exponent", n.input[1]);
            let cast = sub_node(n, "Cast", &[&n.input[1]], &cast_out, "cast_exponent");
            cx.emit(&cast, Op::Cast { to: base }, &[0])?;
            let pow = pb::NodeProto {
                input: vec![n.input[0].clone(), cast_out],
                ..n.clone()
            };
            return cx.emit(&pow, Op::Binary(binary), &[0, 1]);
        }
    }
    cx.emit(n, Op::Binary(binary), &[0, 1])
}

/// A helper node derived from `n`, for lowering one ONNX node to several IR ops.
pub(super) fn sub_node(
    n: &pb::NodeProto,
    op_type: &str,
    inputs: &[&str],
    output: &str,
    suffix: &str,
) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: format!("{}#{suffix}", Cx::node_name(n)),
        op_type: op_type.to_string(),
        ..Default::default()
    }
}

/// Emits `steps` of node `n` in order, each `(tag, op, inputs)` writing `{out}::{tag}`, the
/// last one writing `out` itself (a decomposition into IR ops).
pub(super) fn emit_steps(
    cx: &mut Cx,
    n: &pb::NodeProto,
    out: &str,
    steps: Vec<(&str, Op, Vec<String>)>,
) -> Result<(), ImportError> {
    let last = steps.len().saturating_sub(1);
    for (k, (tag, op, ins)) in steps.into_iter().enumerate() {
        let dst = if k == last {
            out.to_string()
        } else {
            format!("{out}::{tag}")
        };
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        let ports: Vec<usize> = (0..refs.len()).collect();
        cx.emit(&sub_node(n, op.name(), &refs, &dst, tag), op, &ports)?;
    }
    Ok(())
}

/// Binds the scalar constant `v` as `{out}::{tag}`; returns the name.
pub(super) fn bind_scalar(cx: &mut Cx, out: &str, tag: &str, v: f32) -> String {
    let name = format!("{out}::{tag}");
    cx.bind(&name, Val::Const(fhec_ir::Tensor::scalar_f32(v)));
    name
}

/// Clip whose bounds are computed at run time: `Min(Max(x, min), max)`.
fn clip_runtime(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    let has_min = cx.input(n, 1)?.is_some();
    let has_max = cx.input(n, 2)?.is_some();
    if !has_min && !has_max {
        return cx.emit(n, Op::Identity, &[0]);
    }
    let mut cur = n.input[0].clone();
    if has_min {
        let o = if has_max {
            format!("{out}::clip_min")
        } else {
            out.clone()
        };
        cx.emit(
            &sub_node(n, "Max", &[&cur, &n.input[1]], &o, "min"),
            Op::Binary(Binary::Max),
            &[0, 1],
        )?;
        cur = o;
    }
    if has_max {
        cx.emit(
            &sub_node(n, "Min", &[&cur, &n.input[2]], &out, "max"),
            Op::Binary(Binary::Min),
            &[0, 1],
        )?;
    }
    Ok(())
}

/// Clip with bounds known at compile time, or `None` when a bound is computed at run time
/// (or the input is not float).
fn clip(cx: &mut Cx, n: &pb::NodeProto) -> Result<Option<Unary>, ImportError> {
    let a = Attrs::of(n);
    if cx.opset < 11 {
        return Ok(Some(Unary::Clip {
            min: a.float("min", f32::NEG_INFINITY)?,
            max: a.float("max", f32::INFINITY)?,
        }));
    }
    let is_const = |v: Option<&Val>| matches!(v, None | Some(Val::Const(_)));
    if cx.in_ty(n, 0)?.dtype != fhec_ir::DType::F32
        || !is_const(cx.input(n, 1)?)
        || !is_const(cx.input(n, 2)?)
    {
        return Ok(None);
    }
    let scalar = |t: Option<fhec_ir::Tensor>, d: f32| {
        t.and_then(|t| t.f32_values().first().copied()).unwrap_or(d)
    };
    Ok(Some(Unary::Clip {
        min: scalar(cx.const_input(n, 1)?, f32::NEG_INFINITY),
        max: scalar(cx.const_input(n, 2)?, f32::INFINITY),
    }))
}

/// Max/Min over 1 or more than 2 inputs: a chain of binary ops.
fn variadic(cx: &mut Cx, n: &pb::NodeProto, b: Binary) -> Result<(), ImportError> {
    let ins: Vec<usize> = (0..n.input.len())
        .filter(|&i| !n.input[i].is_empty())
        .collect();
    let first = *ins
        .first()
        .ok_or_else(|| Cx::err(n, "needs at least one input"))?;
    if ins.len() == 1 {
        return cx.emit(n, Op::Identity, &[first]);
    }
    // Fold pairwise through temporary value names.
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    let mut acc_name = n.input[first].clone();
    for (k, &i) in ins.iter().enumerate().skip(1) {
        let tmp = if k + 1 == ins.len() {
            out.clone()
        } else {
            format!("{out}::{}#{k}", n.op_type)
        };
        let step = pb::NodeProto {
            input: vec![acc_name.clone(), n.input[i].clone()],
            output: vec![tmp.clone()],
            name: format!("{}#{k}", Cx::node_name(n)),
            op_type: n.op_type.clone(),
            ..Default::default()
        };
        cx.emit(&step, Op::Binary(b), &[0, 1])?;
        acc_name = tmp;
    }
    Ok(())
}

/// Gelu (opset 20): `x · ½(1 + erf(x/√2))`, or with `approximate = "tanh"`
/// `x · ½(1 + tanh(√(2/π)(x + 0.044715 x³)))`, as the elementwise ops torch writes at older
/// opsets; on an encrypted value the whole is one table (a function of `x` read twice).
pub(super) fn gelu(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let approx = Attrs::of(n).string("approximate", "none")?;
    let out = super::qdq::output(n)?;
    let x = n.input[0].clone();
    let t = |tag: &str| format!("{out}::{tag}");
    let mut c = |tag: &str, v: f32| bind_scalar(cx, &out, tag, v);
    let (one, half) = (c("one", 1.0), c("half", 0.5));
    let mut steps: Vec<(&str, Op, Vec<String>)> = match approx.as_str() {
        "none" => {
            let r2 = c("sqrt2", std::f32::consts::SQRT_2);
            vec![
                ("scaled", Op::Binary(Binary::Div), vec![x.clone(), r2]),
                ("erf", Op::Unary(Unary::Erf), vec![t("scaled")]),
            ]
        }
        "tanh" => {
            let (three, k, s) = (
                c("three", 3.0),
                c("k", 0.044_715),
                c("s", (2.0 / std::f32::consts::PI).sqrt()),
            );
            vec![
                ("cube", Op::Binary(Binary::Pow), vec![x.clone(), three]),
                ("kcube", Op::Binary(Binary::Mul), vec![t("cube"), k]),
                (
                    "inner",
                    Op::Binary(Binary::Add),
                    vec![x.clone(), t("kcube")],
                ),
                ("scaled", Op::Binary(Binary::Mul), vec![t("inner"), s]),
                ("erf", Op::Unary(Unary::Tanh), vec![t("scaled")]),
            ]
        }
        other => {
            return Err(Cx::err(
                n,
                format!("approximate = \"{other}\" is not a Gelu mode (none, tanh)"),
            ))
        }
    };
    steps.extend([
        ("shifted", Op::Binary(Binary::Add), vec![t("erf"), one]),
        ("halved", Op::Binary(Binary::Mul), vec![t("shifted"), half]),
        (
            "product",
            Op::Binary(Binary::Mul),
            vec![x.clone(), t("halved")],
        ),
    ]);
    emit_steps(cx, n, &out, steps)
}
