//! The float reference interpreter: the meaning of an imported (float) graph.

use crate::error::IrError;
use crate::graph::Graph;
use crate::kernels;
use crate::op::Op;
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// Evaluates `graph` on `inputs` (one tensor per graph input, in order) and returns one
/// tensor per graph output.
///
/// # Errors
/// Inputs of the wrong number, dtype or shape, or non-finite inputs; an op failing on its data.
pub fn eval_f32(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    let values = eval_all(graph, inputs)?;
    Ok(graph
        .outputs
        .iter()
        .map(|o| values[&o.node].clone())
        .collect())
}

/// Evaluates every node; returns the value of each (calibration reads intermediate values).
///
/// # Errors
/// As [`eval_f32`].
pub fn eval_all(graph: &Graph, inputs: &[Tensor]) -> Result<HashMap<NodeIndex, Tensor>, IrError> {
    graph.check_inputs(inputs)?;
    let mut values: HashMap<NodeIndex, Tensor> = HashMap::new();
    for n in graph.topo()? {
        let node = &graph.g[n];
        let v = match &node.op {
            Op::Input { index } => inputs[*index].clone(),
            op => {
                let ins_idx = graph.inputs_of(n);
                let ins: Vec<&Tensor> = ins_idx.iter().map(|i| &values[i]).collect();
                kernels::eval(op, &ins).map_err(|source| IrError::Node {
                    node: node.name.clone(),
                    op: op.name(),
                    source,
                })?
            }
        };
        values.insert(n, v);
    }
    Ok(values)
}
