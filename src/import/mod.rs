//! ONNX → IR.
//!
//! The model is decoded with the prost types that `tract-onnx` exposes (`tract_onnx::pb`).
//! Nodes are converted in file order (ONNX requires topological order). A node whose inputs
//! are all constant is evaluated at import time, which folds the shape sub-graphs torch
//! exports (`Shape → Gather → Unsqueeze → Concat → Reshape`) into static shapes; every
//! other node becomes an IR node with a static type. Axis 0 of a graph input is the batch
//! axis when it is symbolic or fixed at 1: fhec compiles for one sample and runs N samples
//! one by one. Tensors stored as external data are read from the model's folder
//! ([`external`]).
//!
//! Every unsupported node is reported at once, before anything is converted.

mod attrs;
mod elementwise;
pub mod external;
mod linear;
mod logic;
mod pool;
mod qdq;
mod qonnx;
mod qop;
mod reduce;
mod shape;
mod tensor;

use fhec_ir::{Graph, IrError, Limits, NodeIndex, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use tract_onnx::pb;

pub use external::ExternalData;
pub use tensor::tensor_from_proto;

/// The opsets of the default ONNX domain fhec accepts.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 27;

/// One node the importer cannot convert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dom = if self.domain.is_empty() {
            String::new()
        } else {
            format!("{}::", self.domain)
        };
        write!(
            f,
            "`{}` ({dom}{}, opset {})",
            self.node, self.op_type, self.opset
        )?;
        // quantization forms fhec does not compile: say which, and what to export instead
        match self.op_type.as_str() {
            "FloatQuant" => f.write_str(
                " — minifloat (FP8-style) quantization: fhec compiles integer grids only; export with integer `Quant` or QuantizeLinear",
            ),
            "MultiThreshold" => f.write_str(
                " — non-uniform (threshold) quantization: fhec compiles uniform integer grids only; export before thresholds are streamlined",
            ),
            _ => Ok(()),
        }
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}`: {reason} (raise --max-elements if the model really is this large)")]
    TooLarge { path: String, reason: String },
    #[error("`{path}` is not a valid ONNX model ({source}); check that the file is complete and was written by an ONNX exporter")]
    Decode {
        path: String,
        source: prost::DecodeError,
    },
    #[error("`{path}` holds no graph; is it an ONNX model?")]
    NoGraph { path: String },
    #[error("`{path}` uses opset {opset} of the default ONNX domain; fhec supports opsets {MIN_OPSET} to {MAX_OPSET} (re-export with e.g. `opset_version=17`)")]
    Opset { path: String, opset: i64 },
    #[error("{} unsupported node(s): {}; supported ops: {}", .0.len(), list_unsupported(.0), SUPPORTED_OPS.join(", "))]
    Unsupported(Vec<UnsupportedOp>),
    #[error("node `{node}` ({op_type}): {reason}")]
    Node {
        node: String,
        op_type: String,
        reason: String,
    },
    #[error("graph input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    /// A tensor whose bytes live in a file beside the model, which cannot be read safely.
    #[error("tensor `{tensor}`, external data `{path}`: {reason}")]
    External {
        tensor: String,
        path: String,
        reason: String,
    },
    #[error("graph output `{name}` is not produced by any node")]
    MissingOutput { name: String },
    /// A name the ONNX spec lets the graph define once, defined again (SSA).
    #[error("`{path}`: value `{name}` is defined twice ({first}, then {second}); an ONNX graph defines each name once — re-export the model or run onnx.checker.check_model on it")]
    Redefined {
        path: String,
        name: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Ir(#[from] IrError),
}

fn list_unsupported(v: &[UnsupportedOp]) -> String {
    v.iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every ONNX op type (default domain) the importer converts.
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RMSNormalization",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Selu",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "SpaceToDepth",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// Domains of QONNX's `Quant` (Brevitas' export, the qonnx package, FINN).
pub const QONNX_DOMAINS: &[&str] = &[
    "qonnx.custom_op.general",
    "onnx.brevitas",
    "finn.custom_op.general",
];

/// QONNX's quantization ops (in any of [`QONNX_DOMAINS`]).
pub const QONNX_OPS: &[&str] = &["Quant", "BipolarQuant", "Trunc"];

/// A value during import: known at compile time, or computed by a graph node.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Const(Tensor),
    Node(NodeIndex),
}

/// Import state: the graph being built and what each ONNX value name is bound to.
pub(crate) struct Cx {
    pub graph: Graph,
    pub opset: i64,
    values: HashMap<String, Val>,
    materialized: HashMap<String, NodeIndex>,
    /// Elements of every tensor made so far (constants folded or read, node outputs).
    elements: u128,
    /// ONNX element types of initializers, Constant outputs and graph inputs (the IR keeps
    /// only f32 and i64; QuantizeLinear's grid is its zero point's type).
    elem_types: HashMap<String, i32>,
    /// Tensors of integer codes whose dequantized values the graph also holds (see `qdq`).
    pub(crate) coded: HashMap<String, qdq::Coded>,
    /// Where tensors stored as external data are read from.
    external: ExternalData,
    /// How the importer read something a literal reading would get wrong (see [`Imported`]).
    notes: Vec<String>,
    /// Weight quantizers exported as `signed=0, narrow=1` and read as Concrete ML reads them.
    pub(crate) unsigned_narrow_weights: Vec<String>,
}

impl Cx {
    /// The node's name for messages: its ONNX name, or its first output's.
    pub fn node_name(n: &pb::NodeProto) -> String {
        if !n.name.is_empty() {
            n.name.clone()
        } else {
            n.output
                .first()
                .cloned()
                .unwrap_or_else(|| n.op_type.clone())
        }
    }

    pub fn err(n: &pb::NodeProto, reason: impl Into<String>) -> ImportError {
        ImportError::Node {
            node: Self::node_name(n),
            op_type: n.op_type.clone(),
            reason: reason.into(),
        }
    }

    /// Input `i` of `n`, or `None` when it is absent or empty (an omitted optional input).
    pub fn input(&self, n: &pb::NodeProto, i: usize) -> Result<Option<&Val>, ImportError> {
        match n.input.get(i) {
            None => Ok(None),
            Some(name) if name.is_empty() => Ok(None),
            Some(name) => self.values.get(name).map(Some).ok_or_else(|| {
                Self::err(
                    n,
                    format!("input `{name}` is not produced by any earlier node"),
                )
            }),
        }
    }

    /// The value bound to `name`, which `n` reads (an error naming `n` if there is none).
    pub fn req_named(&self, n: &pb::NodeProto, name: &str) -> Result<Val, ImportError> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| Self::err(n, format!("`{name}` is not produced by any earlier node")))
    }

    /// Input `i`, which must be present.
    pub fn req(&self, n: &pb::NodeProto, i: usize) -> Result<&Val, ImportError> {
        self.input(n, i)?
            .ok_or_else(|| Self::err(n, format!("missing required input {i}")))
    }

    /// Input `i` as a constant, if present; an error if it is computed at run time.
    pub fn const_input(&self, n: &pb::NodeProto, i: usize) -> Result<Option<Tensor>, ImportError> {
        match self.input(n, i)? {
            None => Ok(None),
            Some(Val::Const(t)) => Ok(Some(t.clone())),
            Some(Val::Node(_)) => Err(Self::err(
                n,
                format!(
                    "input {i} (`{}`) must be known at compile time (an initializer or a constant expression); fhec compiles static graphs",
                    n.input[i]
                ),
            )),
        }
    }

    pub fn ty(&self, v: &Val) -> TensorType {
        match v {
            Val::Const(t) => t.ty(),
            Val::Node(i) => self.graph.g[*i].ty.clone(),
        }
    }

    /// Type of input `i` (which must be present).
    pub fn in_ty(&self, n: &pb::NodeProto, i: usize) -> Result<TensorType, ImportError> {
        Ok(self.ty(self.req(n, i)?))
    }

    /// The ONNX element type of a value, where the model states it.
    pub fn elem_type(&self, name: &str) -> Option<i32> {
        self.elem_types.get(name).copied()
    }

    pub fn set_elem_type(&mut self, name: &str, code: i32) {
        self.elem_types.insert(name.to_string(), code);
    }

    pub fn bind(&mut self, name: &str, v: Val) {
        self.values.insert(name.to_string(), v);
    }

    fn limits(&self) -> &Limits {
        &self.graph.limits
    }

    /// Decodes an initializer or constant, reading its bytes from the model's folder when
    /// it is stored as external data.
    pub fn tensor(&self, t: &pb::TensorProto) -> Result<Tensor, ImportError> {
        if external::is_external(t) {
            tensor_from_proto(&external::resolve(t, &self.external, self.limits())?)
        } else {
            tensor_from_proto(t)
        }
    }

    /// Refuses a tensor of `shape` over the per-tensor limit, before it is allocated;
    /// returns its element count.
    pub fn check_elements(&self, n: &pb::NodeProto, shape: &[usize]) -> Result<usize, ImportError> {
        self.limits()
            .check_tensor("its output", shape)
            .map_err(|e| Self::err(n, e.to_string()))
    }

    /// Counts a new tensor of `shape` against the per-model limit.
    pub fn charge(&mut self, n: &pb::NodeProto, shape: &[usize]) -> Result<(), ImportError> {
        let len = self.check_elements(n, shape)? as u128;
        self.elements = self.elements.saturating_add(len);
        let max = self.limits().max_total_elements;
        if self.elements > max as u128 {
            return Err(Self::err(
                n,
                format!(
                    "the model's tensors would exceed the limit of {max} elements in all (raise it with --max-elements if the model really is this large)"
                ),
            ));
        }
        Ok(())
    }

    /// Emits `op` over the given inputs (`None` = omitted optional input, which must be
    /// trailing) and binds the node's first output. Constant inputs only → folded, after
    /// the output's size has been checked against the limits.
    pub fn emit(&mut self, n: &pb::NodeProto, op: Op, inputs: &[usize]) -> Result<(), ImportError> {
        let mut vals = Vec::with_capacity(inputs.len());
        for &i in inputs {
            vals.push((i, self.req(n, i)?.clone()));
        }
        let out = n
            .output
            .first()
            .ok_or_else(|| Self::err(n, "node has no output"))?
            .clone();
        if vals.iter().all(|(_, v)| matches!(v, Val::Const(_))) {
            // the output's size is checked before the fold allocates it
            let tys: Vec<TensorType> = vals.iter().map(|(_, v)| self.ty(v)).collect();
            let ty_refs: Vec<&TensorType> = tys.iter().collect();
            let out_ty = fhec_ir::kernels::infer_with(&op, &ty_refs, self.limits())
                .map_err(|e| Self::err(n, e.to_string()))?;
            self.charge(n, &out_ty.shape)?;
            let ts: Vec<&Tensor> = vals
                .iter()
                .map(|(_, v)| match v {
                    Val::Const(t) => t,
                    Val::Node(_) => unreachable!("invariant: all constant"),
                })
                .collect();
            let t = fhec_ir::kernels::eval(&op, &ts).map_err(|e| Self::err(n, e.to_string()))?;
            self.bind(&out, Val::Const(t));
            return Ok(());
        }
        let mut idx = Vec::with_capacity(vals.len());
        for (i, v) in vals {
            idx.push(match v {
                Val::Node(x) => x,
                Val::Const(t) => self.materialize(&n.input[i], t),
            });
        }
        // add_op checks the output against the limits
        let node = self.graph.add_op(&Self::node_name(n), op, &idx)?;
        let shape = self.graph.g[node].ty.shape.clone();
        self.charge(n, &shape)?;
        self.bind(&out, Val::Node(node));
        Ok(())
    }

    fn materialize(&mut self, name: &str, t: Tensor) -> NodeIndex {
        if let Some(&i) = self.materialized.get(name) {
            return i;
        }
        let i = self.graph.add_const(name, t);
        self.materialized.insert(name.to_string(), i);
        i
    }
}

/// Reads and imports an ONNX file.
///
/// # Errors
/// Unreadable or malformed file, unsupported ops or opset, inconsistent shapes; each error
/// names the file, node or tensor at fault.
pub fn import_file(path: &Path) -> Result<Graph, ImportError> {
    import_file_with(path, &ImportOptions::default())
}

/// Reads and imports an ONNX file with options (limits, frozen inputs).
///
/// # Errors
/// As [`import_file`].
pub fn import_file_with(path: &Path, opts: &ImportOptions) -> Result<Graph, ImportError> {
    Ok(import_file_noted(path, opts)?.graph)
}

/// An imported model, with how the importer read what a literal reading would get wrong.
#[derive(Clone, Debug)]
pub struct Imported {
    pub graph: Graph,
    /// One line each, for the compile report (e.g. Brevitas' `signed=0, narrow=1` weight
    /// quantizers read as Concrete ML reads them).
    pub notes: Vec<String>,
}

/// [`import_file_with`], with the importer's notes.
///
/// # Errors
/// As [`import_file`].
pub fn import_file_noted(path: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let p = path.display().to_string();
    // protobuf caps a message at 2 GiB; within that, a model's file holds at most its
    // elements at 8 bytes (double) plus the graph around them
    let cap = (opts.limits.max_total_elements as u64)
        .saturating_mul(8)
        .saturating_add(1 << 24)
        .min((1 << 31) - 1);
    let bytes =
        crate::fsio::read_capped(path, cap, "an ONNX model").map_err(|reason| match reason {
            crate::fsio::ReadError::Open(source) | crate::fsio::ReadError::Read(source) => {
                ImportError::Io {
                    path: p.clone(),
                    source,
                }
            }
            too_large => ImportError::TooLarge {
                path: p.clone(),
                reason: too_large.to_string(),
            },
        })?;
    // external data is read from the model's own folder, unless the caller says otherwise
    let folder;
    let opts = match opts.external {
        ExternalData::None => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            folder = ImportOptions {
                external: ExternalData::Dir(dir.map_or_else(|| ".".into(), Path::to_path_buf)),
                ..opts.clone()
            };
            &folder
        }
        _ => opts,
    };
    import_bytes_noted(&bytes, &p, opts)
}

/// Imports an ONNX model from memory with options; `source` names it in errors.
///
/// # Errors
/// As [`import_file`].
pub fn import_bytes_with(
    bytes: &[u8],
    source: &str,
    opts: &ImportOptions,
) -> Result<Graph, ImportError> {
    Ok(import_bytes_noted(bytes, source, opts)?.graph)
}

/// [`import_bytes_with`], with the importer's notes.
///
/// # Errors
/// As [`import_file`].
pub fn import_bytes_noted(
    bytes: &[u8],
    source: &str,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    use prost::Message;
    let model = pb::ModelProto::decode(bytes).map_err(|e| ImportError::Decode {
        path: source.to_string(),
        source: e,
    })?;
    import_model_noted(&model, source, opts)
}

/// Imports an ONNX model from memory; `source` names it in errors.
///
/// # Errors
/// As [`import_file`].
pub fn import_bytes(bytes: &[u8], source: &str) -> Result<Graph, ImportError> {
    import_bytes_with(bytes, source, &ImportOptions::default())
}

/// How to import a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Graph inputs bound to known values at compile time (e.g. a shape or axes input that
    /// an exporter left as a graph input). They stop being inputs of the compiled graph.
    pub frozen_inputs: HashMap<String, Tensor>,
    /// Size limits (`--max-elements`); the graph keeps enforcing them in later passes.
    pub limits: Limits,
    /// Where tensors stored as external data are read from ([`import_file`]: the model's
    /// folder).
    pub external: ExternalData,
}

/// Imports a decoded model.
///
/// # Errors
/// As [`import_file`].
pub fn import_model(model: &pb::ModelProto, source: &str) -> Result<Graph, ImportError> {
    import_model_with(model, source, &ImportOptions::default())
}

/// Imports a decoded model with options.
///
/// # Errors
/// As [`import_file`]; a frozen input whose value does not match its declared type.
pub fn import_model_with(
    model: &pb::ModelProto,
    source: &str,
    opts: &ImportOptions,
) -> Result<Graph, ImportError> {
    Ok(import_model_noted(model, source, opts)?.graph)
}

/// [`import_model_with`], with the importer's notes.
///
/// # Errors
/// As [`import_file`].
pub fn import_model_noted(
    model: &pb::ModelProto,
    source: &str,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let graph = model.graph.as_ref().ok_or_else(|| ImportError::NoGraph {
        path: source.to_string(),
    })?;
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(ImportError::NoGraph {
            path: source.to_string(),
        });
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Opset {
            path: source.to_string(),
            opset,
        });
    }

    // Report every unsupported node at once, before converting anything.
    let unsupported: Vec<UnsupportedOp> = graph
        .node
        .iter()
        .filter(|n| {
            let default = n.domain.is_empty() || n.domain == "ai.onnx";
            let qonnx = QONNX_DOMAINS.contains(&n.domain.as_str())
                && QONNX_OPS.contains(&n.op_type.as_str());
            let ms = n.domain == "com.microsoft" && qop::MS_OPS.contains(&n.op_type.as_str());
            !(qonnx || ms || default && SUPPORTED_OPS.contains(&n.op_type.as_str()))
        })
        .map(|n| UnsupportedOp {
            node: Cx::node_name(n),
            op_type: n.op_type.clone(),
            domain: n.domain.clone(),
            opset,
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported(unsupported));
    }

    check_names(graph, source)?;
    let mut cx = Cx {
        graph: Graph::with_limits(opts.limits),
        opset,
        values: HashMap::new(),
        materialized: HashMap::new(),
        elements: 0,
        elem_types: HashMap::new(),
        coded: HashMap::new(),
        external: opts.external.clone(),
        notes: Vec::new(),
        unsigned_narrow_weights: Vec::new(),
    };
    for vi in &graph.input {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            cx.set_elem_type(&vi.name, t.elem_type);
        }
    }
    for init in &graph.initializer {
        cx.set_elem_type(&init.name, init.data_type);
        // the model's total is checked before the tensor is read (external data included)
        let declared = init
            .dims
            .iter()
            .try_fold(1u128, |n, &d| n.checked_mul(u128::try_from(d).ok()?))
            .unwrap_or(u128::MAX);
        let max = opts.limits.max_total_elements as u128;
        if cx.elements.saturating_add(declared) > max {
            return Err(ImportError::Tensor {
                name: init.name.clone(),
                reason: format!(
                    "the model's initializers exceed the limit of {max} elements in all (raise it with --max-elements if the model really is this large)"
                ),
            });
        }
        let t = cx.tensor(init)?;
        cx.elements = cx.elements.saturating_add(t.len() as u128);
        cx.bind(&init.name, Val::Const(t));
    }
    for vi in &graph.input {
        if cx.values.contains_key(&vi.name) {
            continue; // an initializer listed as input (IR version < 4)
        }
        let (ty, batched) = input_type(vi)?;
        opts.limits
            .check_tensor("its declared type", &ty.shape)
            .map_err(|e| ImportError::Input {
                name: vi.name.clone(),
                reason: e.to_string(),
            })?;
        if let Some(t) = opts.frozen_inputs.get(&vi.name) {
            if t.dtype() != ty.dtype
                || (!batched && t.shape() != ty.shape.as_slice())
                || t.shape().len() != ty.rank()
            {
                return Err(ImportError::Input {
                    name: vi.name.clone(),
                    reason: format!(
                        "frozen value {} does not match the declared type {ty}",
                        t.ty()
                    ),
                });
            }
            cx.bind(&vi.name, Val::Const(t.clone()));
            continue;
        }
        let node = cx.graph.add_input(&vi.name, ty, batched);
        cx.bind(&vi.name, Val::Node(node));
    }
    for n in &graph.node {
        convert(&mut cx, n)?;
    }
    for o in &graph.output {
        let v = cx
            .values
            .get(&o.name)
            .cloned()
            .ok_or_else(|| ImportError::MissingOutput {
                name: o.name.clone(),
            })?;
        let node = match v {
            Val::Node(i) => i,
            Val::Const(t) => cx.materialize(&o.name, t),
        };
        cx.graph.add_output(&o.name, node);
    }
    cx.graph.verify()?;
    if !cx.unsigned_narrow_weights.is_empty() {
        let names = &cx.unsigned_narrow_weights;
        cx.notes.push(format!(
            "{} weight quantizer(s) exported with signed=0, narrow=1 (a Brevitas export quirk) read as signed=1, narrow=0, as Concrete ML reads them: {}",
            names.len(),
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Imported {
        graph: cx.graph,
        notes: cx.notes,
    })
}

/// The ONNX spec's single assignment: every initializer, graph input and node output is
/// defined once (an initializer may also be listed as a graph input: its default value).
///
/// # Errors
/// [`ImportError::Redefined`] naming the value and both definitions.
fn check_names(graph: &pb::GraphProto, source: &str) -> Result<(), ImportError> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let definitions = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), "an initializer".to_string()))
        .chain(
            graph
                .input
                .iter()
                .filter(|vi| !inits.contains(vi.name.as_str()))
                .map(|vi| (vi.name.as_str(), "a graph input".to_string())),
        )
        .chain(graph.node.iter().flat_map(|n| {
            n.output.iter().map(move |o| {
                (
                    o.as_str(),
                    format!("node `{}` ({})", Cx::node_name(n), n.op_type),
                )
            })
        }));
    let mut defined: HashMap<&str, String> = HashMap::new();
    for (name, by) in definitions {
        if name.is_empty() {
            continue; // an omitted optional output
        }
        if let Some(first) = defined.get(name) {
            return Err(ImportError::Redefined {
                path: source.to_string(),
                name: name.to_string(),
                first: first.clone(),
                second: by,
            });
        }
        defined.insert(name, by);
    }
    Ok(())
}

fn input_type(vi: &pb::ValueInfoProto) -> Result<(TensorType, bool), ImportError> {
    use pb::tensor_shape_proto::dimension::Value as Dv;
    let bad = |reason: String| ImportError::Input {
        name: vi.name.clone(),
        reason,
    };
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        None => {
            return Err(bad(
                "has no tensor type; fhec needs typed, shaped inputs".into()
            ))
        }
    };
    let dtype = tensor::ir_dtype(tt.elem_type).ok_or_else(|| {
        bad(format!(
            "element type {} is not supported",
            tensor::elem_type_name(tt.elem_type)
        ))
    })?;
    let shape = tt
        .shape
        .as_ref()
        .ok_or_else(|| bad("has no shape; export the model with a known input shape".into()))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    let mut batched = false;
    for (axis, d) in shape.dim.iter().enumerate() {
        match &d.value {
            Some(Dv::DimValue(v)) if *v >= 0 => dims.push(*v as usize),
            Some(Dv::DimValue(v)) => return Err(bad(format!("axis {axis} has negative size {v}"))),
            _ if axis == 0 => {
                batched = true;
                dims.push(1);
            }
            _ => {
                return Err(bad(format!(
                    "axis {axis} is symbolic; fhec needs static shapes except the batch axis (export with fixed sizes)"
                )))
            }
        }
    }
    // a leading axis fixed at 1 is the batch too (torch's legacy exporter, Brevitas and
    // Concrete ML write one): the model is compiled for one sample either way, and N
    // samples run one by one
    if dims.first() == Some(&1) {
        batched = true;
    }
    Ok((TensorType::new(dtype, dims), batched))
}

fn convert(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    convert_op(cx, n)?;
    if qdq::FOLLOWS_CODES.contains(&n.op_type.as_str()) {
        qdq::follow_codes(cx, n)?;
    }
    Ok(())
}

fn convert_op(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    match n.op_type.as_str() {
        "Gemm" => linear::gemm(cx, n),
        "MatMul" => linear::matmul(cx, n),
        "Conv" => linear::conv(cx, n),
        "ConvTranspose" => linear::conv_transpose(cx, n),
        "AveragePool" | "MaxPool" => pool::pool(cx, n),
        "GlobalAveragePool" => cx.emit(n, Op::GlobalAveragePool, &[0]),
        "BatchNormalization" => pool::batch_norm(cx, n),
        "Softmax" => reduce::softmax(cx, n),
        "LayerNormalization" => reduce::layer_norm(cx, n),
        "RMSNormalization" => reduce::rms_norm(cx, n),
        "Gelu" => elementwise::gelu(cx, n),
        "ReduceSum" | "ReduceMean" | "ReduceMax" => reduce::reduce(cx, n),
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => shape::reshape_like(cx, n),
        "Transpose" => shape::transpose(cx, n),
        "Concat" => shape::concat(cx, n),
        "Gather" => shape::gather(cx, n),
        "Slice" => shape::slice(cx, n),
        "Pad" => shape::pad(cx, n),
        "Shape" => shape::shape(cx, n),
        "Cast" => shape::cast(cx, n),
        "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "Equal" => logic::compare(cx, n),
        "Not" | "And" | "Or" | "Xor" => logic::logic(cx, n),
        "Where" => logic::where_(cx, n),
        "ArgMax" | "ArgMin" => logic::arg_max(cx, n),
        "Constant" => shape::constant(cx, n),
        "ConstantOfShape" => shape::constant_of_shape(cx, n),
        "Expand" => shape::expand(cx, n),
        "Resize" | "Upsample" => shape::resize(cx, n),
        "DepthToSpace" | "SpaceToDepth" => shape::depth_space(cx, n),
        "Identity" | "Dropout" => shape::identity(cx, n),
        "QuantizeLinear" => qdq::quantize_linear(cx, n),
        "DequantizeLinear" => qdq::dequantize_linear(cx, n),
        "Quant" => qonnx::quant(cx, n),
        "BipolarQuant" => qonnx::bipolar_quant(cx, n),
        "Trunc" => qonnx::trunc(cx, n),
        "QLinearConv" | "QLinearMatMul" | "MatMulInteger" | "ConvInteger" => qop::convert(cx, n),
        op if qop::MS_OPS.contains(&op) => qop::convert(cx, n),
        _ => elementwise::convert(cx, n),
    }
}
