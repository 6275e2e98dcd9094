//! ONNX `TensorProto` → [`Tensor`]: typed fields or little-endian `raw_data`.

use super::ImportError;
use fhec_ir::Tensor;
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as D;

/// Decodes an initializer or constant. Floating types become `f32`, integer and bool types `i64`.
///
/// # Errors
/// [`ImportError::Tensor`] naming the tensor: external data, unsupported element type, or a
/// payload that does not match the declared shape.
pub fn tensor_from_proto(t: &pb::TensorProto) -> Result<Tensor, ImportError> {
    let name = if t.name.is_empty() {
        "<unnamed>".to_string()
    } else {
        t.name.clone()
    };
    let bad = |reason: String| ImportError::Tensor {
        name: name.clone(),
        reason,
    };
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err(bad("stored as external data, which this call does not read; import the model from its file, or give its external files (`fhec::import::ExternalData`)".into()));
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?);
    }
    let count = fhec_ir::checked_len(&shape).ok_or_else(|| {
        bad(format!(
            "its shape {:?} has more elements than this machine can address",
            shape
        ))
    })?;
    let raw = &t.raw_data;
    let dt = D::try_from(t.data_type)
        .map_err(|_| bad(format!("unknown element type {}", t.data_type)))?;
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    let floats: Option<Vec<f32>> = match dt {
        D::Float if !raw.is_empty() => Some(chunks::<4>(raw).map(f32::from_le_bytes).collect()),
        D::Float => Some(t.float_data.clone()),
        D::Double if !raw.is_empty() => Some(
            chunks::<8>(raw)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
        ),
        D::Double => Some(t.double_data.iter().map(|&v| v as f32).collect()),
        D::Float16 if !raw.is_empty() => Some(
            chunks::<2>(raw)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        D::Float16 => Some(
            t.int32_data
                .iter()
                .map(|&v| half::f16::from_bits(v as u16).to_f32())
                .collect(),
        ),
        D::Bfloat16 if !raw.is_empty() => Some(
            chunks::<2>(raw)
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        D::Bfloat16 => Some(
            t.int32_data
                .iter()
                .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                .collect(),
        ),
        _ => None,
    };
    let ints: Option<Vec<i64>> = match dt {
        D::Int64 if !raw.is_empty() => Some(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
        D::Int64 => Some(t.int64_data.clone()),
        D::Int32 if !raw.is_empty() => Some(
            chunks::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
        ),
        D::Int16 if !raw.is_empty() => Some(
            chunks::<2>(raw)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
        ),
        D::Uint16 if !raw.is_empty() => Some(
            chunks::<2>(raw)
                .map(|b| u16::from_le_bytes(b) as i64)
                .collect(),
        ),
        D::Int8 if !raw.is_empty() => Some(raw.iter().map(|&b| b as i8 as i64).collect()),
        D::Uint8 | D::Bool if !raw.is_empty() => Some(raw.iter().map(|&b| b as i64).collect()),
        D::Int32 | D::Int16 | D::Uint16 | D::Int8 | D::Uint8 | D::Bool => {
            Some(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        D::Uint32 if !raw.is_empty() => Some(
            chunks::<4>(raw)
                .map(|b| u32::from_le_bytes(b) as i64)
                .collect(),
        ),
        D::Uint32 | D::Uint64 if raw.is_empty() => {
            Some(t.uint64_data.iter().map(|&v| v as i64).collect())
        }
        D::Uint64 => Some(
            chunks::<8>(raw)
                .map(|b| u64::from_le_bytes(b) as i64)
                .collect(),
        ),
        _ => None,
    };
    let check = |len: usize| {
        if len == count {
            Ok(())
        } else {
            Err(bad(format!(
                "holds {len} values but its shape {:?} needs {count}",
                shape
            )))
        }
    };
    if let Some(v) = floats {
        check(v.len())?;
        return Ok(Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| bad(e.to_string()))?,
        ));
    }
    if let Some(v) = ints {
        check(v.len())?;
        return Ok(Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| bad(e.to_string()))?,
        ));
    }
    Err(bad(format!(
        "element type {} is not supported",
        dt.as_str_name()
    )))
}

/// The IR element type an ONNX element type is computed in: floats in f32, integers and bools
/// in i64; `None` for types fhec does not read (strings, float8, int4, complex, …).
pub fn ir_dtype(code: i32) -> Option<fhec_ir::DType> {
    match D::try_from(code).ok()? {
        D::Float | D::Double | D::Float16 | D::Bfloat16 => Some(fhec_ir::DType::F32),
        D::Int64
        | D::Int32
        | D::Int16
        | D::Int8
        | D::Uint8
        | D::Uint16
        | D::Uint32
        | D::Uint64
        | D::Bool => Some(fhec_ir::DType::I64),
        _ => None,
    }
}

/// The ONNX name of an element type code.
pub fn elem_type_name(code: i32) -> String {
    D::try_from(code).map_or_else(
        |_| format!("unknown element type {code}"),
        |d| d.as_str_name().to_string(),
    )
}
