//! The trained network as a QONNX graph (opset 13 + `qonnx.custom_op.general` `Quant`), the
//! form Brevitas' `export_qonnx` writes and fhec's importer reads:
//!
//! ```text
//! x → Sub(mean) → Div(std)                        standardization (float, on the client)
//!   → Quant(s_in, signed)                          the input grid
//!   → MatMul(Quant(W·s_w, narrow)) → Add(b)       per layer, integer weights × scale
//!   → Relu / Sigmoid / Tanh → Quant(s_a)          between layers
//!   → [Mul(y_std) → Add(y_mean)]                   regression: back to the target's units
//! ```

use super::net::Net;
use prost::Message;
use tract_onnx::pb;

/// Standardization and target scaling around the network.
pub struct Affine {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

const QONNX: &str = "qonnx.custom_op.general";

struct Builder {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_str(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("batch".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Builder {
    fn init(&mut self, name: &str, dims: &[usize], v: Vec<f32>) -> String {
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            float_data: v,
            ..Default::default()
        });
        name.into()
    }

    fn node(
        &mut self,
        name: &str,
        op: &str,
        domain: &str,
        ins: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) -> String {
        let out = format!("{name}_output_0");
        self.nodes.push(pb::NodeProto {
            name: name.into(),
            op_type: op.into(),
            domain: domain.into(),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// `Quant(x, scale, 0, bits)` named `name`.
    fn quant(
        &mut self,
        name: &str,
        x: &str,
        scale: f32,
        bits: u32,
        signed: bool,
        narrow: bool,
    ) -> String {
        let s = self.init(&format!("{name}.scale"), &[], vec![scale]);
        let z = self.init(&format!("{name}.zero_point"), &[], vec![0.0]);
        let b = self.init(&format!("{name}.bit_width"), &[], vec![bits as f32]);
        self.node(
            name,
            "Quant",
            QONNX,
            &[x, &s, &z, &b],
            vec![
                attr_int("signed", i64::from(signed)),
                attr_int("narrow", i64::from(narrow)),
                attr_str("rounding_mode", "ROUND"),
            ],
        )
    }
}

/// Per layer, the neurons that reach an output: every output neuron, and for a hidden layer
/// those some live neuron of the next layer reads with a non-zero integer weight. A dead
/// neuron's table lookup would cost a bootstrap for nothing; leaving it out changes no
/// output.
pub fn live_neurons(net: &Net) -> candle_core::Result<Vec<Vec<usize>>> {
    let n = net.layers.len();
    let mut live: Vec<Vec<usize>> = vec![Vec::new(); n];
    let last = net.weight_ints(n - 1)?;
    live[n - 1] = (0..last.len()).collect();
    for i in (1..n).rev() {
        let w = net.weight_ints(i)?;
        let fan_in = w.first().map_or(0, Vec::len);
        live[i - 1] = (0..fan_in)
            .filter(|&k| live[i].iter().any(|&o| w[o][k] != 0))
            .collect();
    }
    Ok(live)
}

/// Encodes the trained `net` as an ONNX model (bytes). `input` standardizes the features;
/// `target`, for regression, maps outputs back to the target's units.
pub fn to_onnx(
    net: &Net,
    input: &Affine,
    target: Option<&Affine>,
    a_bits: u32,
) -> candle_core::Result<Vec<u8>> {
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let f = input.mean.len();
    let mean = b.init("standardize.mean", &[f], input.mean.clone());
    let std = b.init("standardize.std", &[f], input.std.clone());
    let h = b.node("/standardize/Sub", "Sub", "", &["input", &mean], vec![]);
    let h = b.node("/standardize/Div", "Div", "", &[&h, &std], vec![]);
    let mut h = b.quant(
        "/input_quant/Quant",
        &h,
        net.input_q.scale()?,
        a_bits,
        true,
        false,
    );
    let live = live_neurons(net)?;
    for (i, layer) in net.layers.iter().enumerate() {
        // only live neurons, reading only live inputs
        let all = net.weight_ints(i)?;
        let ins: Vec<usize> = match i {
            0 => (0..all.first().map_or(0, Vec::len)).collect(),
            _ => live[i - 1].clone(),
        };
        let ints: Vec<Vec<i64>> = live[i]
            .iter()
            .map(|&o| ins.iter().map(|&k| all[o][k]).collect())
            .collect();
        let bias_all = layer.b.as_tensor().to_vec1::<f32>()?;
        let bias: Vec<f32> = live[i].iter().map(|&o| bias_all[o]).collect();
        let s = net.weight_scale(i)?;
        let (fo, fi) = (ints.len(), ins.len());
        // MatMul takes [in, out]
        let mut wt = vec![0f32; fi * fo];
        for (o, row) in ints.iter().enumerate() {
            for (k, &w) in row.iter().enumerate() {
                wt[k * fo + o] = w as f32 * s;
            }
        }
        let w = b.init(&format!("fc{i}.weight"), &[fi, fo], wt);
        let wq = b.quant(
            &format!("/fc{i}/weight_quant/Quant"),
            &w,
            s,
            net.w_bits,
            true,
            true,
        );
        let mm = b.node(&format!("/fc{i}/MatMul"), "MatMul", "", &[&h, &wq], vec![]);
        let bias = b.init(&format!("fc{i}.bias"), &[fo], bias);
        h = b.node(&format!("/fc{i}/Add"), "Add", "", &[&mm, &bias], vec![]);
        if let Some(q) = net.act_q.get(i) {
            let op = net.activation.onnx_op();
            let a = b.node(&format!("/act{i}/{op}"), op, "", &[&h], vec![]);
            h = b.quant(
                &format!("/act{i}/act_quant/Quant"),
                &a,
                q.scale()?,
                a_bits,
                q.lo < 0,
                false,
            );
        }
    }
    if let Some(t) = target {
        let k = t.mean.len();
        let sd = b.init("target.std", &[k], t.std.clone());
        let mu = b.init("target.mean", &[k], t.mean.clone());
        let m = b.node("/target/Mul", "Mul", "", &[&h, &sd], vec![]);
        b.node("/target/Add", "Add", "", &[&m, &mu], vec![]);
    }
    // the last node writes the graph output
    let outputs = live.last().map_or(0, Vec::len);
    if let Some(last) = b.nodes.last_mut() {
        last.output = vec!["output".into()];
    }
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "fhec train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            },
            pb::OperatorSetIdProto {
                domain: QONNX.into(),
                version: 1,
            },
        ],
        graph: Some(pb::GraphProto {
            name: "fhec_train".into(),
            node: b.nodes,
            initializer: b.inits,
            input: vec![value_info("input", &[None, Some(f as i64)])],
            output: vec![value_info("output", &[None, Some(outputs as i64)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
