//! The compile report: per layer (accumulator widths proven, observed and used, rounding,
//! table lookups), per construction, what the client runs, and what compile decided on its
//! own; as text (`fhec compile`) and JSON (`--report`).

use crate::error::Result;
use fhec_ir::{DType, Graph, Interval, NodeIndex, Op, ShapeFmt};
use fhec_passes::{PassContext, QuantConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One row of the compile report: a layer (integer accumulator) or a table-lookup group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub layer: String,
    pub op: String,
    pub shape: Vec<usize>,
    /// Accumulator width, worst case (bits of `hi − lo`, widest element).
    pub acc_bits: Option<u32>,
    /// Accumulator width observed on the calibration set (widest element).
    pub acc_bits_observed: Option<u32>,
    /// Accumulator width the tables were sized for (the range policy's interval, before
    /// rounding; the proven width under `--ranges proven`).
    #[serde(default)]
    pub acc_bits_used: Option<u32>,
    /// Low bits dropped by rounding before the tables.
    pub rounded_bits: u32,
    /// Table lookups (programmable bootstraps) fed by this layer.
    pub tlu_count: usize,
    /// Distinct tables among them.
    pub tables: usize,
    /// Table input width after rounding.
    pub tlu_input_bits: Option<u32>,
    /// A layer's own precision: weight bits, input activation bits, rounding bits (`None`
    /// for table-only rows; rounding `None` = exact).
    pub precision: Option<(u32, u32, Option<u32>)>,
}

/// The compile report (also written as JSON with `--report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    pub model: String,
    pub config: QuantConfig,
    pub layers: Vec<LayerReport>,
    /// Total table lookups per sample = programmable bootstraps per sample.
    pub pbs_count: usize,
    /// Widest table-lookup input.
    pub max_tlu_bits: u32,
    /// Integers the client decrypts, with their widths.
    pub outputs: Vec<(String, u32)>,
    /// What runs on the client after decryption (op → count).
    pub client_ops: BTreeMap<String, usize>,
    /// What runs on the client before quantizing (the float head), node by node.
    pub client_head: Vec<String>,
    /// Power-of-two requantizations folded into rounding (`round`): the layer, the shift in
    /// bits, and whether its integer bias moved into the accumulator.
    pub shifts: Vec<(String, u32, bool)>,
    /// Weights zeroed by pruning, per layer.
    pub pruned: Vec<(String, usize)>,
    /// Top-1 agreement of clear mode with float on the calibration set (classifiers).
    pub calib_agreement: Option<f64>,
    /// How the importer read what a literal reading would get wrong.
    #[serde(default)]
    pub import_notes: Vec<String>,
    /// What compile chose on its own (a fallback plan, raised precision), one line each.
    #[serde(default)]
    pub auto: Vec<String>,
}

pub(crate) fn build_report(source: &str, g: &Graph, cx: &PassContext) -> Result<CompileReport> {
    let order = g.topo()?;
    let iv = |n: NodeIndex| cx.analysis.intervals.get(&n).copied();
    let source_of = |t: NodeIndex| g.table_source(t);
    // a report row for node `n`, whose accumulator is `acc`
    let new_row = |n: NodeIndex, op: String, acc: NodeIndex| LayerReport {
        layer: cx
            .quant
            .origin
            .get(&n)
            .cloned()
            .unwrap_or_else(|| g.g[n].name.clone()),
        op,
        shape: g.g[n].ty.shape.clone(),
        // per-element widths (each element is read by its own table)
        acc_bits: cx.analysis.bounds.get(&acc).map(|b| b.max_bits()),
        acc_bits_observed: cx.analysis.observed_elems.get(&acc).map(|b| b.max_bits()),
        acc_bits_used: None,
        rounded_bits: 0,
        tlu_count: 0,
        tables: 0,
        tlu_input_bits: None,
        precision: None,
    };
    let mut rows: Vec<LayerReport> = Vec::new();
    let mut by_src: BTreeMap<NodeIndex, usize> = BTreeMap::new();
    for &n in &order {
        if let Op::IntLinear(_) = g.g[n].op {
            by_src.insert(n, rows.len());
            let mut row = new_row(n, g.g[n].op.name().to_string(), n);
            let c = &cx.config;
            row.precision = Some((
                cx.quant
                    .weight_bits
                    .get(&row.layer)
                    .copied()
                    .unwrap_or_else(|| c.weight_bits(&row.layer)),
                c.input_bits(&row.layer),
                c.rounding_for(&row.layer),
            ));
            rows.push(row);
        }
    }
    let mut pbs = 0;
    let mut max_bits = 0;
    for &n in &order {
        let Op::Tlu(t) = &g.g[n].op else { continue };
        let (src, k) = source_of(n);
        let len = g.g[n].ty.len();
        // the width this layer's tables need (each element is shifted by its own lower
        // bound); the program reads every table at the widest
        let choice = cx.round.domains.get(&n);
        let in_bits = match choice {
            Some(d) => Some(d.input_bits),
            None => cx
                .analysis
                .bounds
                .get(&g.inputs_of(n)[0])
                .map(|b| b.max_bits()),
        };
        let used = choice.map(|d| d.used_bits);
        pbs += len;
        max_bits = max_bits.max(in_bits.unwrap_or(0));
        let row = match by_src.get(&src) {
            Some(&r) => r,
            None => {
                by_src.insert(src, rows.len());
                rows.push(new_row(n, format!("Tlu({})", g.g[src].op.name()), src));
                rows.len() - 1
            }
        };
        let r = &mut rows[row];
        r.rounded_bits = r.rounded_bits.max(k);
        r.acc_bits_used = r.acc_bits_used.max(used);
        r.tlu_count += len;
        r.tables += t.distinct_tables(len);
        r.tlu_input_bits = r.tlu_input_bits.max(in_bits);
    }
    // decrypted accumulators read in a calibrated window: the window is the width used
    for &n in &order {
        if let Op::Wrap { bits, .. } = g.g[n].op {
            let src = g.inputs_of(n)[0];
            if let Some(&r) = by_src.get(&src) {
                rows[r].acc_bits_used = Some(bits);
            }
        }
    }
    // the encrypted boundary: integers read by client-side float ops
    let mut outputs = Vec::new();
    let mut decrypted = std::collections::BTreeSet::new();
    let mut client_ops: BTreeMap<String, usize> = BTreeMap::new();
    for &n in &order {
        let node = &g.g[n];
        if node.ty.dtype != DType::F32 || matches!(node.op, Op::Const(_)) {
            continue;
        }
        *client_ops.entry(node.op.name().to_string()).or_default() += 1;
        for i in g.inputs_of(n) {
            // each integer once, however many client ops read it
            if g.g[i].ty.dtype == DType::I64 && decrypted.insert(i) {
                // per element (each decrypts in its own window)
                let bits = cx.analysis.bounds.get(&i).map_or_else(
                    || iv(i).map_or(0, |x: Interval| x.bits()),
                    fhec_passes::bitwidth::Bounds::max_bits,
                );
                outputs.push((
                    cx.quant
                        .origin
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| g.g[i].name.clone()),
                    bits,
                ));
            }
        }
    }
    Ok(CompileReport {
        model: source.to_string(),
        config: cx.config.clone(),
        layers: rows,
        pbs_count: pbs,
        max_tlu_bits: max_bits,
        outputs,
        client_ops,
        client_head: Vec::new(),
        shifts: cx.round.shifts.clone(),
        pruned: cx.pruned.clone(),
        calib_agreement: None,
        import_notes: Vec::new(),
        auto: Vec::new(),
    })
}

/// The table lookups one decomposed construction costs (a LayerNorm, an encrypted MatMul, a
/// Softmax, …: an ONNX node the importer or canonicalize wrote as several ops, whose report
/// rows are named `node#step` or `node:step`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstructionCost {
    pub node: String,
    pub tlu_count: usize,
    /// Elements of the widest tensor among its rows, and that shape.
    pub shape: Vec<usize>,
    /// Widest table input among its rows.
    pub tlu_bits: Option<u32>,
}

impl ConstructionCost {
    /// Table lookups per element of the construction's widest tensor.
    pub fn per_element(&self) -> f64 {
        self.tlu_count as f64 / self.shape.iter().product::<usize>().max(1) as f64
    }
}

impl CompileReport {
    /// The cost of every decomposed construction (two or more report rows, at least one
    /// table lookup), in report order.
    pub fn constructions(&self) -> Vec<ConstructionCost> {
        let mut out: Vec<(ConstructionCost, usize)> = Vec::new();
        for r in &self.layers {
            let Some(cut) = r.layer.find(['#', ':']) else {
                continue;
            };
            let node = &r.layer[..cut];
            let len = |s: &[usize]| s.iter().product::<usize>();
            match out.iter_mut().find(|(c, _)| c.node == node) {
                Some((c, rows)) => {
                    c.tlu_count += r.tlu_count;
                    if len(&r.shape) > len(&c.shape) {
                        c.shape = r.shape.clone();
                    }
                    c.tlu_bits = c.tlu_bits.max(r.tlu_input_bits);
                    *rows += 1;
                }
                None => out.push((
                    ConstructionCost {
                        node: node.to_string(),
                        tlu_count: r.tlu_count,
                        shape: r.shape.clone(),
                        tlu_bits: r.tlu_input_bits,
                    },
                    1,
                )),
            }
        }
        out.into_iter()
            .filter(|(c, rows)| *rows >= 2 && c.tlu_count > 0)
            .map(|(c, _)| c)
            .collect()
    }

    /// The per-layer table an engineer reads after `fhec compile`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "compiled {}: n_bits inputs/weights/activations {}/{}/{}, rounding {}, per-channel {}, ranges {}",
            self.model,
            c.n_bits_inputs,
            c.n_bits_weights,
            c.n_bits_activations,
            c.rounding_bits
                .map_or("off".to_string(), |r| format!("{r} bits")),
            c.per_channel,
            match c.ranges {
                fhec_passes::RangePolicy::Proven => c.ranges.name().to_string(),
                fhec_passes::RangePolicy::Calibrated =>
                    format!("{} (margin {})", c.ranges.name(), c.range_margin),
            }
        );
        let _ = writeln!(
            s,
            "{:<28} {:<12} {:<14} {:>6} {:>8} {:>5} {:>7} {:>6} {:>7} {:>8}  w/in/round",
            "layer",
            "op",
            "shape",
            "proven",
            "observed",
            "used",
            "rounded",
            "TLUs",
            "tables",
            "TLU bits",
        );
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |b| b.to_string());
        for r in &self.layers {
            let precision = r
                .precision
                .map_or(String::new(), |(w, i, rb)| format!("{w}/{i}/{}", opt(rb)));
            let _ = writeln!(
                s,
                "{:<28} {:<12} {:<14} {:>6} {:>8} {:>5} {:>7} {:>6} {:>7} {:>8}  {}",
                truncate(&r.layer, 28),
                truncate(&r.op, 12),
                ShapeFmt(&r.shape).to_string(),
                opt(r.acc_bits),
                opt(r.acc_bits_observed),
                opt(r.acc_bits_used),
                r.rounded_bits,
                r.tlu_count,
                r.tables,
                opt(r.tlu_input_bits),
                precision
            );
        }
        let _ = writeln!(
            s,
            "total: {} table lookups (PBS) per sample, widest table input {} bits",
            self.pbs_count, self.max_tlu_bits
        );
        for c in self.constructions() {
            let _ = writeln!(
                s,
                "construction `{}`: {} table lookups, {:.1} per element of {}, tables of {} bits",
                c.node,
                c.tlu_count,
                c.per_element(),
                ShapeFmt(&c.shape),
                c.tlu_bits.map_or("-".to_string(), |b| b.to_string())
            );
        }
        let outs: Vec<String> = self
            .outputs
            .iter()
            .map(|(n, b)| format!("`{n}` ({b} bits)"))
            .collect();
        let _ = writeln!(
            s,
            "client decrypts: {}",
            if outs.is_empty() {
                "-".into()
            } else {
                outs.join(", ")
            }
        );
        let ops: Vec<String> = self
            .client_ops
            .iter()
            .map(|(o, c)| format!("{o} ×{c}"))
            .collect();
        let _ = writeln!(s, "client side after decryption: {}", ops.join(", "));
        if !self.shifts.is_empty() {
            let l: Vec<String> = self
                .shifts
                .iter()
                .map(|(layer, k, moved)| {
                    format!(
                        "`{layer}` {k} bit(s){}",
                        if *moved { " + integer bias" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "power-of-two requantizations folded into rounding (at least the shift dropped, bias in the accumulator): {}",
                l.join(", ")
            );
        }
        if !self.client_head.is_empty() {
            let _ = writeln!(
                s,
                "client side before encryption (float, then the input grid): {}",
                self.client_head.join(", ")
            );
        }
        for (l, z) in &self.pruned {
            let _ = writeln!(s, "pruned: {z} weight(s) of `{l}`");
        }
        for n in &self.import_notes {
            let _ = writeln!(s, "import: {n}");
        }
        for n in &self.auto {
            let _ = writeln!(s, "auto: {n}");
        }
        if let Some(a) = self.calib_agreement {
            let _ = writeln!(
                s,
                "clear vs float top-1 agreement on calibration data: {:.2}%",
                a * 100.0
            );
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{t}")
    }
}
