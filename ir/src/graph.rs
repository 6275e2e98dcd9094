//! The graph: a `petgraph::StableDiGraph` of ops whose edges carry the input port.

use crate::error::{IrError, OpError};
use crate::kernels;
use crate::limits::Limits;
use crate::op::Op;
use crate::tensor::{saturating_len, ShapeFmt, Tensor, TensorType};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;
use std::fmt::Write as _;

/// One node: an op, the name it had in the source model, and its output type.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub ty: TensorType,
}

/// A named graph input. `batched` says axis 0 is the batch (symbolic in the source model,
/// or fixed at 1): fhec compiles for one sample (axis 0 = 1) and runs a batch sample by
/// sample.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphInput {
    pub name: String,
    pub node: NodeIndex,
    pub batched: bool,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphOutput {
    pub name: String,
    pub node: NodeIndex,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub g: StableDiGraph<Node, usize>,
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<GraphOutput>,
    /// Size limits that [`Graph::add_op`] and [`Graph::verify`] enforce. Not stored: a
    /// loaded graph gets the defaults (or what the loader sets), never the file's own.
    #[serde(skip)]
    pub limits: Limits,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty graph enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Adds a graph input of type `ty`.
    pub fn add_input(&mut self, name: &str, ty: TensorType, batched: bool) -> NodeIndex {
        let index = self.inputs.len();
        let node = self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Input { index },
            ty,
        });
        self.inputs.push(GraphInput {
            name: name.to_string(),
            node,
            batched,
        });
        node
    }

    pub fn add_const(&mut self, name: &str, t: Tensor) -> NodeIndex {
        let ty = t.ty();
        self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Const(t),
            ty,
        })
    }

    /// Adds `op` fed by `inputs` (in port order), inferring its output type.
    ///
    /// # Errors
    /// [`IrError::Node`] when the op rejects the input types.
    pub fn add_op(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[NodeIndex],
    ) -> Result<NodeIndex, IrError> {
        let tys: Vec<&TensorType> = inputs.iter().map(|&i| &self.g[i].ty).collect();
        let ty = kernels::infer_with(&op, &tys, &self.limits).map_err(|source| IrError::Node {
            node: name.to_string(),
            op: op.name(),
            source,
        })?;
        let n = self.g.add_node(Node {
            name: name.to_string(),
            op,
            ty,
        });
        for (port, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, n, port);
        }
        Ok(n)
    }

    pub fn add_output(&mut self, name: &str, node: NodeIndex) {
        self.outputs.push(GraphOutput {
            name: name.to_string(),
            node,
        });
    }

    /// The producers of `n`'s inputs, in port order.
    pub fn inputs_of(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<(usize, NodeIndex)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort_unstable();
        e.into_iter().map(|(_, s)| s).collect()
    }

    /// The consumers of `n` (with repetition when one consumer reads it on two ports).
    pub fn users_of(&self, n: NodeIndex) -> Vec<NodeIndex> {
        self.g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| e.target())
            .collect()
    }

    /// Makes the consumers of `old` for which `pick` holds read `new` instead, on the same
    /// ports (graph outputs are left alone); returns how many edges moved.
    pub fn redirect_uses(
        &mut self,
        old: NodeIndex,
        new: NodeIndex,
        pick: impl Fn(&Node) -> bool,
    ) -> usize {
        let edges: Vec<(NodeIndex, usize, petgraph::stable_graph::EdgeIndex)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .filter(|e| e.target() != new && pick(&self.g[e.target()]))
            .map(|e| (e.target(), *e.weight(), e.id()))
            .collect();
        for &(t, port, id) in &edges {
            self.g.remove_edge(id);
            self.g.add_edge(new, t, port);
        }
        edges.len()
    }

    /// Makes every consumer of `old` (and every graph output pointing at it) use `new`.
    pub fn replace_uses(&mut self, old: NodeIndex, new: NodeIndex) {
        let edges: Vec<(NodeIndex, usize, petgraph::stable_graph::EdgeIndex)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight(), e.id()))
            .collect();
        for (t, port, id) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(new, t, port);
        }
        for o in &mut self.outputs {
            if o.node == old {
                o.node = new;
            }
        }
    }

    /// Removes every node that no graph output depends on (graph inputs stay).
    pub fn remove_dead(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|o| o.node).collect();
        stack.extend(self.inputs.iter().map(|i| i.node));
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeIndex> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    /// Whether the graph carries quantization grids of its own (`Unary::FakeQuant`: QDQ
    /// pairs, QOperator ops, QONNX `Quant`).
    pub fn carries_grids(&self) -> bool {
        self.g
            .node_weights()
            .any(|n| matches!(n.op, Op::Unary(crate::op::Unary::FakeQuant { .. })))
    }

    /// The integer table lookup `table` reads (its layer's accumulator), through an optional
    /// `Round`, and the most bits that `Round` drops; through the integer bias a power-of-two
    /// requantization moved into the accumulator, too.
    pub fn table_source(&self, table: NodeIndex) -> (NodeIndex, u32) {
        let x = self.inputs_of(table)[0];
        let (x, k) = match self.g[x].op {
            Op::Round { ref bits } => (
                self.inputs_of(x)[0],
                bits.iter().copied().max().unwrap_or(0),
            ),
            _ => (x, 0),
        };
        match self.g[x].op {
            Op::Binary(crate::op::Binary::Add) => {
                let ins = self.inputs_of(x);
                match ins
                    .iter()
                    .position(|&i| matches!(self.g[i].op, Op::Const(_)))
                {
                    Some(c) if ins.len() == 2 => (ins[1 - c], k),
                    _ => (x, k),
                }
            }
            _ => (x, k),
        }
    }

    /// Node indices in a deterministic topological order (ties broken by index).
    ///
    /// # Errors
    /// [`IrError::Invalid`] on a cycle.
    pub fn topo(&self) -> Result<Vec<NodeIndex>, IrError> {
        let mut indeg: HashMap<NodeIndex, usize> = HashMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: std::collections::BTreeSet<NodeIndex> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                // a deserialized graph may hold an edge to a vacant node index
                let Some(d) = indeg.get_mut(&e.target()) else {
                    return Err(IrError::Invalid {
                        what: format!("an edge of `{}` leads to a missing node", self.g[n].name),
                    });
                };
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.g.node_count() {
            return Err(IrError::Invalid {
                what: "the graph has a cycle".into(),
            });
        }
        Ok(order)
    }

    /// Checks the graph's invariants: acyclic, ports dense, arity and types consistent with
    /// every op's shape rules, inputs and outputs present, sizes within [`Graph::limits`].
    ///
    /// # Errors
    /// [`IrError::Invalid`] or [`IrError::Node`] naming the first offending node;
    /// [`IrError::TooLarge`] when all tensors together exceed the limit.
    pub fn verify(&self) -> Result<(), IrError> {
        self.topo()?;
        let total = self
            .g
            .node_weights()
            .map(|n| saturating_len(&n.ty.shape))
            .fold(0u64, u64::saturating_add);
        if total > self.limits.max_total_elements as u64 {
            return Err(IrError::TooLarge {
                elements: total,
                limit: self.limits.max_total_elements as u64,
            });
        }
        for (i, inp) in self.inputs.iter().enumerate() {
            match self.g.node_weight(inp.node).map(|n| &n.op) {
                Some(Op::Input { index }) if *index == i => {}
                _ => {
                    return Err(IrError::Invalid {
                        what: format!("graph input `{}` is not an Input node #{i}", inp.name),
                    })
                }
            }
        }
        for o in &self.outputs {
            if !self.g.contains_node(o.node) {
                return Err(IrError::Invalid {
                    what: format!("graph output `{}` points to a removed node", o.name),
                });
            }
        }
        for n in self.g.node_indices() {
            let node = &self.g[n];
            let mut ports: Vec<usize> = self
                .g
                .edges_directed(n, Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            ports.sort_unstable();
            if ports.iter().enumerate().any(|(i, &p)| i != p) {
                return Err(IrError::Invalid {
                    what: format!("node `{}` has input ports {ports:?}", node.name),
                });
            }
            if let Op::Input { index } = node.op {
                if self.inputs.get(index).map(|i| i.node) != Some(n) || !ports.is_empty() {
                    return Err(IrError::Invalid {
                        what: format!("node `{}` is not graph input #{index}", node.name),
                    });
                }
                self.limits
                    .check_tensor("an input tensor", &node.ty.shape)
                    .map_err(|source| IrError::Node {
                        node: node.name.clone(),
                        op: "Input",
                        source,
                    })?;
                continue;
            }
            let ins = self.inputs_of(n);
            let tys: Vec<&TensorType> = ins.iter().map(|&i| &self.g[i].ty).collect();
            let ty = kernels::infer_with(&node.op, &tys, &self.limits).map_err(|source| {
                IrError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    source,
                }
            })?;
            if ty != node.ty {
                return Err(IrError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    source: OpError::shape(format!(
                        "recorded type {} but the op computes {}",
                        node.ty, ty
                    )),
                });
            }
        }
        Ok(())
    }

    /// A stable text dump: one line per node in topological order.
    pub fn dump(&self) -> String {
        let order = match self.topo() {
            Ok(o) => o,
            Err(e) => return format!("<{e}>"),
        };
        let num: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut s = String::new();
        for &n in &order {
            let node = &self.g[n];
            let args: Vec<String> = self
                .inputs_of(n)
                .iter()
                .map(|i| format!("%{}", num[i]))
                .collect();
            let attrs = node.op.attrs();
            let _ = match &node.op {
                Op::Input { .. } => {
                    writeln!(s, "%{} = Input \"{}\" : {}", num[&n], node.name, node.ty)
                }
                Op::Const(_) => writeln!(s, "%{} = Const \"{}\" : {}", num[&n], node.name, node.ty),
                op => writeln!(
                    s,
                    "%{} = {}{}{}{} : {}  # {}",
                    num[&n],
                    op.name(),
                    if attrs.is_empty() { "" } else { "{" },
                    if attrs.is_empty() {
                        String::new()
                    } else {
                        format!("{attrs}}}")
                    },
                    if args.is_empty() {
                        String::new()
                    } else {
                        format!("({})", args.join(", "))
                    },
                    node.ty,
                    node.name
                ),
            };
        }
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "output \"{}\" = %{}",
                o.name,
                num.get(&o.node).copied().unwrap_or(usize::MAX)
            );
        }
        s
    }

    /// Checks that `inputs` match the graph inputs in number, dtype and shape.
    ///
    /// # Errors
    /// The matching [`IrError`] variant, naming the input.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), IrError> {
        if inputs.len() != self.inputs.len() {
            return Err(IrError::InputCount {
                expected: self.inputs.len(),
                actual: inputs.len(),
            });
        }
        for (gi, t) in self.inputs.iter().zip(inputs) {
            let ty = &self.g[gi.node].ty;
            if t.dtype() != ty.dtype {
                return Err(IrError::InputDType {
                    name: gi.name.clone(),
                    expected: ty.dtype,
                    actual: t.dtype(),
                });
            }
            if t.shape() != ty.shape.as_slice() {
                return Err(IrError::InputShape {
                    name: gi.name.clone(),
                    expected: ShapeFmt(&ty.shape).to_string(),
                    actual: ShapeFmt(t.shape()).to_string(),
                });
            }
        }
        Ok(())
    }
}
