//! The clear integer interpreter: the meaning of a compiled model. Encrypted execution must
//! equal it bit for bit (up to the configured table-lookup error probability).

use crate::error::IrError;
use crate::eval_f32::eval_all;
use crate::graph::Graph;
use crate::tensor::{DType, Tensor};

/// Evaluates a quantized graph on integer inputs (already quantized by the client) and
/// returns its outputs: integers at the encrypted boundary, or floats computed from them
/// (dequantization and the client-side ops), whichever the graph's outputs are.
///
/// # Errors
/// Inputs of the wrong number, dtype or shape; an op failing on its data.
pub fn eval_int(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    for (gi, t) in graph.inputs.iter().zip(inputs) {
        if t.dtype() != DType::I64 {
            return Err(IrError::InputDType {
                name: gi.name.clone(),
                expected: DType::I64,
                actual: t.dtype(),
            });
        }
    }
    let values = eval_all(graph, inputs)?;
    Ok(graph
        .outputs
        .iter()
        .map(|o| values[&o.node].clone())
        .collect())
}
