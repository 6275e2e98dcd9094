//! QONNX's quantization ops (Brevitas' `export_qonnx`, the qonnx package, FINN): `Quant`,
//! `BipolarQuant` and `Trunc`, in qonnx's reference semantics (`qonnx.custom_op.general`).
//!
//! A per-tensor grid becomes a `Unary::FakeQuant` (the quantize pass compiles on it); other
//! forms are elementwise chains in qonnx's order of operations, which `fuse_tlu` folds into
//! tables, ending in a `FakeQuant` of the output grid where there is one.

use super::attrs::Attrs;
use super::elementwise::{bind_scalar, sub_node as node};
use super::qdq::{bind_const, check_scale, emit_chain, output, required, scalar};
use super::{Cx, ImportError};
use fhec_ir::{Binary, DType, Op, Tensor, Unary};
use tract_onnx::pb;

/// qonnx's `resolve_rounding_mode` for the modes fhec evaluates exactly.
fn rounding(n: &pb::NodeProto, default: &str) -> Result<Unary, ImportError> {
    let mode = Attrs::of(n)
        .string("rounding_mode", default)?
        .to_uppercase();
    Ok(match mode.as_str() {
        "ROUND" | "HALF_EVEN" => Unary::Round,
        "FLOOR" => Unary::Floor,
        "CEIL" => Unary::Ceil,
        _ => {
            return Err(Cx::err(
                n,
                format!("rounding_mode {mode} is not supported (ROUND / HALF_EVEN, FLOOR and CEIL are); re-export with one of those"),
            ))
        }
    })
}

/// qonnx's `min_int` / `max_int`: the integer range of a `bits`-bit grid.
fn int_bounds(
    n: &pb::NodeProto,
    bits: f32,
    signed: bool,
    narrow: bool,
) -> Result<(f32, f32), ImportError> {
    int_bounds_upto(n, bits, signed, narrow, 16.0)
}

/// [`int_bounds`] up to `max` bits (32 for a quantizer of a constant: Brevitas' `Int32Bias`).
fn int_bounds_upto(
    n: &pb::NodeProto,
    bits: f32,
    signed: bool,
    narrow: bool,
    max: f32,
) -> Result<(f32, f32), ImportError> {
    if bits.fract() != 0.0 || !(2.0..=max).contains(&bits) {
        return Err(Cx::err(
            n,
            format!("a {bits}-bit quantizer is not supported (integer widths 2 to {max} are; 1-bit quantizers are BipolarQuant's)"),
        ));
    }
    let b = bits as u32;
    let (lo, hi) = match (signed, narrow) {
        (true, true) => (-((1i64 << (b - 1)) - 1), (1i64 << (b - 1)) - 1),
        (true, false) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
        (false, true) => (0, (1i64 << b) - 2),
        (false, false) => (0, (1i64 << b) - 1),
    };
    Ok((lo as f32, hi as f32))
}

/// A scalar constant input (a bit width, a per-tensor scale).
fn scalar_input(cx: &Cx, n: &pb::NodeProto, i: usize, what: &str) -> Result<f32, ImportError> {
    scalar(&required(cx, n, i, what)?)
        .ok_or_else(|| Cx::err(n, format!("{what} (input {i}) must be one value")))
}

/// Refuses a zero point that is not integral.
fn check_zero_point(n: &pb::NodeProto, z: &Tensor) -> Result<(), ImportError> {
    if z.to_f32()
        .iter()
        .any(|v| !v.is_finite() || v.fract() != 0.0)
    {
        return Err(Cx::err(n, "the zero point must hold integers"));
    }
    Ok(())
}

fn float_input(cx: &Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    if cx.in_ty(n, 0)?.dtype != DType::F32 {
        return Err(Cx::err(n, format!("{} needs a float input", n.op_type)));
    }
    Ok(())
}

/// QONNX's `Quant` (Brevitas' QONNX export): `(rnd(clip(x / s + z, lo, hi)) − z) · s` with
/// `lo, hi` from `bitwidth`, `signed` and `narrow` (qonnx's `int_quant`) and `rnd` the
/// rounding mode. A per-tensor grid with zero point 0 rounding half to even (Brevitas'
/// default) is one `FakeQuant`; other grids are the same steps as elementwise ops, in qonnx's
/// order.
pub(super) fn quant(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rnd = rounding(n, "ROUND")?;
    let mut signed = a.int("signed", 1)? != 0;
    let mut narrow = a.int("narrow", 0)? != 0;
    // a quantizer of a constant (weights; biases at the accumulator's scale, which Brevitas'
    // Int32Bias gives 32 bits) folds into the constant: wider grids are fine there
    let bits = scalar_input(cx, n, 3, "the bit width")?;
    let of_const = matches!(cx.input(n, 0)?, Some(crate::import::Val::Const(_)));
    // Brevitas exports some signed weight quantizers as `signed=0, narrow=1` (Concrete ML's
    // built-in networks carry them): read literally they clip every negative weight to 0.
    // Concrete ML reads them as `signed=1, narrow=0` in its own Quant; so does fhec, and
    // says so in the report
    if of_const && !signed && narrow {
        signed = true;
        narrow = false;
        cx.unsigned_narrow_weights.push(Cx::node_name(n));
    }
    let (lo, hi) = int_bounds_upto(n, bits, signed, narrow, if of_const { 32.0 } else { 16.0 })?;
    let scale = required(cx, n, 1, "the scale")?;
    let zp = required(cx, n, 2, "the zero point")?;
    check_scale(n, &scale)?;
    check_zero_point(n, &zp)?;
    float_input(cx, n)?;
    if let (Some(s), Some(0.0), Unary::Round, true) =
        (scalar(&scale), scalar(&zp), rnd, bits <= 16.0)
    {
        return cx.emit(
            n,
            Op::Unary(Unary::FakeQuant {
                scale: s,
                zero_point: 0.0,
                qmin: lo,
                qmax: hi,
            }),
            &[0],
        );
    }
    // broadcastable scale / zero point: qonnx's steps, in its order
    let out = output(n)?;
    let sn = bind_const(cx, &out, "scale", scale.to_f32());
    let zn = bind_const(cx, &out, "zero_point", zp.to_f32());
    emit_chain(
        cx,
        n,
        &n.input[0],
        &out,
        &[
            ("scaled", Op::Binary(Binary::Div), Some(&sn)),
            ("shifted", Op::Binary(Binary::Add), Some(&zn)),
            ("clipped", Op::Unary(Unary::Clip { min: lo, max: hi }), None),
            ("rounded", Op::Unary(rnd), None),
            ("centred", Op::Binary(Binary::Sub), Some(&zn)),
            ("rescaled", Op::Binary(Binary::Mul), Some(&sn)),
        ],
    )
}

/// QONNX's `BipolarQuant`: `(x ≥ 0 ? 1 : −1) · s`, as `(1 − 2·clip(ceil(−x), 0, 1)) · s` (exact
/// for every float, −0 and 0 included); with a per-tensor scale the result is marked as the
/// grid `{−s, 0, s}` for the quantize pass.
pub(super) fn bipolar_quant(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let scale = required(cx, n, 1, "the scale")?;
    check_scale(n, &scale)?;
    float_input(cx, n)?;
    let out = output(n)?;
    let m2 = bind_scalar(cx, &out, "minus_two", -2.0);
    let one = bind_scalar(cx, &out, "one", 1.0);
    let sn = bind_const(cx, &out, "scale", scale.to_f32());
    let grid = scalar(&scale);
    let last = if grid.is_some() {
        format!("{out}::signed")
    } else {
        out.clone()
    };
    emit_chain(
        cx,
        n,
        &n.input[0],
        &last,
        &[
            ("negated", Op::Unary(Unary::Neg), None),
            ("ceiled", Op::Unary(Unary::Ceil), None),
            (
                "negative",
                Op::Unary(Unary::Clip { min: 0.0, max: 1.0 }),
                None,
            ),
            ("doubled", Op::Binary(Binary::Mul), Some(&m2)),
            ("sign", Op::Binary(Binary::Add), Some(&one)),
            ("signed", Op::Binary(Binary::Mul), Some(&sn)),
        ],
    )?;
    match grid {
        Some(s) => mark_grid(cx, n, &last, &out, s, 0.0, (-1.0, 1.0)),
        None => Ok(()),
    }
}

/// `out = FakeQuant(x)` on a grid `x` is already on: the identity, which tells the quantize
/// pass the grid.
fn mark_grid(
    cx: &mut Cx,
    n: &pb::NodeProto,
    x: &str,
    out: &str,
    scale: f32,
    zero_point: f32,
    (qmin, qmax): (f32, f32),
) -> Result<(), ImportError> {
    cx.emit(
        &node(n, "FakeQuant", &[x], out, "grid"),
        Op::Unary(Unary::FakeQuant {
            scale,
            zero_point,
            qmin,
            qmax,
        }),
        &[0],
    )
}

/// QONNX's `Trunc` (Brevitas' `TruncAvgPool`): drops the low bits of a quantized value.
/// Version 2 (inputs x, scale, zero point, input bit width, output scale, output bit width;
/// what Brevitas exports): `t = 2^round(log2(s_out / s))`,
/// `y = (rnd(clip(round(x / s + z) / t, lo, hi)) − z / t) · s_out` with `lo, hi` the output
/// width's range, marked as the output grid. Version 1 (no output scale):
/// `y = (rnd(round(x / s + z) / 2^(in − out)) − z) · s`. Scales, zero point and widths are
/// per tensor.
pub(super) fn trunc(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rnd = rounding(n, "FLOOR")?;
    let v2 = n.input.len() >= 6;
    let s = scalar_input(cx, n, 1, "the scale")?;
    let z = scalar_input(cx, n, 2, "the zero point")?;
    check_scale(n, &required(cx, n, 1, "the scale")?)?;
    check_zero_point(n, &required(cx, n, 2, "the zero point")?)?;
    let in_bits = scalar_input(cx, n, 3, "the input bit width")?;
    let out_bits = scalar_input(cx, n, if v2 { 5 } else { 4 }, "the output bit width")?;
    float_input(cx, n)?;
    let out = output(n)?;
    let (t, out_scale, out_zero) = if v2 {
        let os = scalar_input(cx, n, 4, "the output scale")?;
        check_scale(n, &required(cx, n, 4, "the output scale")?)?;
        let t = 2f32.powf((os / s).log2().round_ties_even());
        (t, os, z / t)
    } else {
        if !(in_bits >= out_bits && in_bits - out_bits <= 32.0) {
            return Err(Cx::err(
                n,
                format!("input width {in_bits} is below the output width {out_bits}"),
            ));
        }
        (2f32.powf(in_bits - out_bits), s, z)
    };
    if !(t.is_finite() && t > 0.0) {
        return Err(Cx::err(
            n,
            "the truncation scale is not a finite power of two",
        ));
    }
    let sn = bind_scalar(cx, &out, "scale", s);
    let zn = bind_scalar(cx, &out, "zero_point", z);
    let tn = bind_scalar(cx, &out, "trunc_scale", t);
    let ozn = bind_scalar(cx, &out, "out_zero_point", out_zero);
    let osn = bind_scalar(cx, &out, "out_scale", out_scale);
    let mut steps = vec![
        ("scaled", Op::Binary(Binary::Div), Some(sn.as_str())),
        ("shifted", Op::Binary(Binary::Add), Some(&zn)),
        ("rounded", Op::Unary(Unary::Round), None),
        ("truncated", Op::Binary(Binary::Div), Some(&tn)),
    ];
    let bounds = if v2 {
        let signed = a.int("signed", 1)? != 0;
        let narrow = a.int("narrow", 0)? != 0;
        let (lo, hi) = int_bounds(n, out_bits, signed, narrow)?;
        steps.push(("clipped", Op::Unary(Unary::Clip { min: lo, max: hi }), None));
        Some((lo, hi))
    } else {
        None
    };
    steps.push(("integer", Op::Unary(rnd), None));
    steps.push(("centred", Op::Binary(Binary::Sub), Some(&ozn)));
    steps.push(("rescaled", Op::Binary(Binary::Mul), Some(&osn)));
    match bounds {
        Some(b) if out_zero.fract() == 0.0 => {
            let y = format!("{out}::rescaled");
            emit_chain(cx, n, &n.input[0], &y, &steps)?;
            mark_grid(cx, n, &y, &out, out_scale, out_zero, b)
        }
        _ => emit_chain(cx, n, &n.input[0], &out, &steps),
    }
}
