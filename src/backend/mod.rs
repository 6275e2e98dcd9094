//! Backend: the integer IR becomes a flat [`Program`] over ciphertext registers, and TFHE
//! parameters are chosen for it ([`params`]).
//!
//! One LWE ciphertext per integer, as Concrete does. Leveled work is a `Lin` (a weighted sum
//! of registers plus a constant: dense and convolution accumulators, encrypted ± encrypted);
//! reshapes, transposes, slices, gathers, pads and concats are register renaming, free at run
//! time. Each table lookup is a `Tlu`: with exact rounding of `k` low bits it costs `k` 1-bit
//! sign bootstraps (bit extraction: the bit is multiplied up to the most significant position
//! and read by a constant table) plus one table bootstrap, and equals `eval_int` exactly up to
//! the bootstraps' error probability.
//!
//! With [`Rounding::Approximate`] the `k` low bits are not extracted: the table input is
//! scaled so that its `p` high bits select the table box and the `k` low bits only move the
//! value inside its box; the bootstrap's modulus switch discards them. One bootstrap per
//! table, and the noise budget is that of the `p`-bit table instead of the `(p+k)`-bit
//! accumulator; the price is that a value near a box edge may land in the neighbouring box
//! (the table index is then off by one), at a rate the parameter search predicts.
//!
//! Encoding: every integer `x` is `x·Δ`, `Δ = 2^64 / 2^(B+1)`, with one circuit-wide `B`
//! large enough for every table input's bits (`k + p`) and every decrypted integer.

pub mod params;

use crate::compile::CompiledModel;
use crate::error::{Error, Result};
use fhec_ir::{kernels, DType, Graph, IntLinear, NodeIndex, Op, Tensor};
use fhec_passes::bitwidth::{bounds, Bounds};
use fhec_passes::PassContext;
use ndarray::{ArrayD, IxDyn};
use params::{Choice, Constraint, ConstraintKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How table inputs drop their low bits (`--rounding-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    /// Bit for bit equal to `eval_int`: one sign bootstrap per dropped bit.
    #[default]
    Exact,
    /// The modulus switch absorbs the dropped bits: no extra bootstrap, a table index may be
    /// off by one near a rounding boundary.
    Approximate,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Exact => "exact",
            Rounding::Approximate => "approximate",
        }
    }
}

/// A value in the program: a ciphertext register or a clear constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operand {
    Reg(u32),
    Const(i64),
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Instr {
    /// `dst = Σ w·src + c` (leveled).
    Lin {
        dst: u32,
        terms: Vec<(u32, i64)>,
        c: i64,
    },
    /// `dst = tables[table][(src + offset) >> drop]`, the low `drop` bits removed exactly.
    Tlu {
        dst: u32,
        src: u32,
        offset: i64,
        drop: u32,
        table: u32,
    },
}

/// An integer tensor the client decrypts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramOutput {
    /// The node of the compiled model's program graph it stands for.
    pub node: NodeIndex,
    pub shape: Vec<usize>,
    pub elems: Vec<Operand>,
    /// Lower bound of each element (decoding window).
    pub lo: Vec<i64>,
    /// Approximate rounding: decryption may be off by up to `2^tolerance` units (the
    /// precision beyond the tables' `p` bits that approximate rounding gives up anyway);
    /// 0 = exact.
    pub tolerance: u32,
    /// A calibrated window (`Op::Wrap`): the decrypted value is taken modulo `2^bits` into
    /// `[lo, lo + 2^bits)`, as the integer program says.
    pub wrap: Option<u32>,
}

impl ProgramOutput {
    /// A decrypted (or clear-run) register value as the integer program reads it.
    pub fn read(&self, e: usize, v: i64) -> i64 {
        match self.wrap {
            Some(bits) => fhec_ir::wrap(v, self.lo[e], bits),
            None => v,
        }
    }
}

/// The flat program the server runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub n_regs: u32,
    /// Registers of each graph input, row-major.
    pub inputs: Vec<Vec<u32>>,
    /// Groups of independent instructions, in order.
    pub stages: Vec<Vec<Instr>>,
    /// Table contents, `2^tlu_bits` values each.
    pub tables: Vec<Vec<i64>>,
    pub outputs: Vec<ProgramOutput>,
    /// Table precision `p` (bits of a table index).
    pub tlu_bits: u32,
    /// Message bits `B` of the encoding.
    pub msg_bits: u32,
    /// Bootstraps per sample: tables plus bit extractions.
    pub pbs_count: usize,
    pub tlu_count: usize,
    /// The noise checks the parameters must pass.
    pub constraints: Vec<Constraint>,
    pub rounding: Rounding,
}

/// One element of a table lookup before registers are assigned: source, offset, bits
/// dropped, table id.
type TluElem = (Operand, i64, u32, u32);

#[derive(Clone, Copy, Debug, Default)]
struct Noise {
    alpha: f64,
    beta: f64,
}

struct Lowering<'a> {
    rounding: Rounding,
    g: &'a Graph,
    bounds: HashMap<NodeIndex, Bounds>,
    regs: u32,
    noise: Vec<Noise>,
    vals: HashMap<NodeIndex, Vec<Operand>>,
    stages: Vec<Vec<Instr>>,
    tables: Vec<Vec<i64>>,
    table_ids: HashMap<Vec<i64>, u32>,
    worst: HashMap<(ConstraintKind, String), Constraint>,
}

impl Lowering<'_> {
    fn reg(&mut self, n: Noise) -> u32 {
        self.regs += 1;
        self.noise.push(n);
        self.regs - 1
    }

    fn lin(&mut self, stage: &mut Vec<Instr>, terms: Vec<(Operand, i64)>, c: i64) -> Operand {
        let mut constant = c;
        let mut regs = Vec::new();
        let mut nz = Noise::default();
        for (o, w) in terms {
            if w == 0 {
                continue;
            }
            match o {
                Operand::Const(v) => constant = constant.wrapping_add(v.wrapping_mul(w)),
                Operand::Reg(r) => {
                    let s = (w as f64) * (w as f64);
                    nz.alpha += s * self.noise[r as usize].alpha;
                    nz.beta += s * self.noise[r as usize].beta;
                    regs.push((r, w));
                }
            }
        }
        if regs.is_empty() {
            return Operand::Const(constant);
        }
        if regs.len() == 1 && regs[0].1 == 1 && constant == 0 {
            return Operand::Reg(regs[0].0);
        }
        let dst = self.reg(nz);
        stage.push(Instr::Lin {
            dst,
            terms: regs,
            c: constant,
        });
        Operand::Reg(dst)
    }

    fn note(
        &mut self,
        kind: ConstraintKind,
        at: &str,
        alpha: f64,
        gamma: f64,
        beta: f64,
        margin: f64,
    ) {
        let e = self
            .worst
            .entry((kind, at.to_string()))
            .or_insert(Constraint {
                kind,
                at: at.to_string(),
                count: 0,
                alpha: 0.0,
                gamma: 0.0,
                beta: 0.0,
                scale: 1.0,
                margin,
            });
        e.count += 1;
        e.alpha = e.alpha.max(alpha);
        e.gamma = e.gamma.max(gamma);
        e.beta = e.beta.max(beta);
    }

    fn bounds_of(&self, n: NodeIndex) -> Result<&Bounds> {
        self.bounds.get(&n).ok_or_else(|| {
            Error::Usage(format!(
                "internal error: no proven bounds for `{}`; please report",
                self.g.g[n].name
            ))
        })
    }
}

/// Terms of each output of an integer convolution: `(input flat index or None for padding, w)`.
fn conv_terms(
    x_shape: &[usize],
    l: &IntLinear,
    out_shape: &[usize],
) -> Vec<Vec<(Option<usize>, i64)>> {
    let IntLinear::Conv { attrs, w, .. } = l else {
        return Vec::new();
    };
    let ws: Vec<i64> = w.iter().copied().collect();
    let mut out = vec![Vec::new(); out_shape.iter().product()];
    kernels::conv_taps(x_shape, w.shape(), attrs, out_shape, |o, wi, xi| {
        out[o].push((xi, ws[wi]))
    });
    out
}

/// Widest table index the backend reads (tfhe's largest polynomial holds 2^16 boxes).
pub const MAX_TLU_BITS: u32 = 16;

/// Lowers a compiled model's integer program.
///
/// # Errors
/// A float operation on the server side (not fused into a table), or a table too wide.
pub fn lower(m: &CompiledModel, rounding: Rounding) -> Result<Program> {
    let g = &m.program;
    let cx = PassContext {
        input_quant: m.input_quant.clone(),
        ..Default::default()
    };
    let bounds = bounds(g, &cx)?;
    let order = g.topo()?;
    // table precision: the widest per-element table input. Table inputs and their sources
    // must stay well inside 64 bits, so that offsets, guards and table indices below cannot
    // overflow, and tables at most MAX_TLU_BITS wide, checked before any table is built.
    const SAFE: i64 = 1 << 60;
    let mut p = 1u32;
    let mut tables_bits: Option<u32> = None;
    for &n in &order {
        if !matches!(g.g[n].op, Op::Tlu(_) | Op::Round { .. }) {
            continue;
        }
        let Some(b) = bounds.get(&g.inputs_of(n)[0]) else {
            continue;
        };
        let u = b.union();
        if u.lo < -SAFE || u.hi > SAFE {
            return Err(Error::Usage(format!(
                "`{}`: its input range [{}, {}] is too wide for encrypted integers; use fewer bits",
                g.g[n].name, u.lo, u.hi
            )));
        }
        if let Op::Tlu(t) = &g.g[n].op {
            // the width the passes fixed (one for every table), else the proven one
            let bits = match &t.domain {
                Some(d) if tables_bits.is_some_and(|p| p != d.bits) => {
                    return Err(Error::Usage(format!(
                        "`{}`: its table domain has {} bits, another table's {}; one program reads every table at one width (recompile the model)",
                        g.g[n].name,
                        d.bits,
                        tables_bits.unwrap_or_default()
                    )))
                }
                Some(d) => {
                    tables_bits = Some(d.bits);
                    d.bits.max(1)
                }
                None => b.max_bits().max(1),
            };
            if bits > MAX_TLU_BITS {
                return Err(Error::Usage(format!(
                    "`{}`: a table lookup reads {bits}-bit values; fhec's parameters read at most {MAX_TLU_BITS}-bit tables (round more with --rounding-bits, or use fewer bits)",
                    g.g[n].name
                )));
            }
            p = p.max(bits);
        }
    }
    // table entries to evaluate (elements × 2^p), bounded like a node's work
    let mut table_work: u128 = 0;
    let work_limit = u128::from(g.limits.max_node_macs);
    let mut lw = Lowering {
        rounding,
        g,
        bounds,
        regs: 0,
        noise: Vec::new(),
        vals: HashMap::new(),
        stages: Vec::new(),
        tables: Vec::new(),
        table_ids: HashMap::new(),
        worst: HashMap::new(),
    };
    let mut inputs = Vec::new();
    // (node, element) → (bits dropped, source operand) for Round nodes, resolved by their Tlu
    let mut rounds: HashMap<NodeIndex, (Vec<u32>, NodeIndex)> = HashMap::new();
    let mut tlu_specs: Vec<(NodeIndex, Vec<TluElem>)> = Vec::new();
    let mut max_drop = 0u32;
    for &n in &order {
        let node = &g.g[n];
        if node.ty.dtype != DType::I64 {
            continue;
        }
        let ins = g.inputs_of(n);
        let name = node.name.clone();
        let mut stage = Vec::new();
        let out: Vec<Operand> = match &node.op {
            Op::Input { .. } => {
                let r: Vec<u32> = (0..node.ty.len())
                    .map(|_| {
                        lw.reg(Noise {
                            alpha: 0.0,
                            beta: 1.0,
                        })
                    })
                    .collect();
                inputs.push(r.clone());
                r.into_iter().map(Operand::Reg).collect()
            }
            Op::Const(t) => t.i64_values().into_iter().map(Operand::Const).collect(),
            Op::IntLinear(l @ IntLinear::Dense { w }) => {
                let _ = l;
                let x = lw.vals[&ins[0]].clone();
                let (k, nn) = (w.shape()[0], w.shape()[1]);
                let rows = x.len().checked_div(k).unwrap_or(0);
                let mut out = Vec::with_capacity(rows * nn);
                for r in 0..rows {
                    for j in 0..nn {
                        let terms = (0..k).map(|i| (x[r * k + i], w[[i, j]])).collect();
                        out.push(lw.lin(&mut stage, terms, 0));
                    }
                }
                out
            }
            Op::IntLinear(l @ IntLinear::Conv { pad_value, .. }) => {
                let x = lw.vals[&ins[0]].clone();
                let xs = g.g[ins[0]].ty.shape.clone();
                let mut out = Vec::new();
                for terms in conv_terms(&xs, l, &node.ty.shape) {
                    let t = terms
                        .into_iter()
                        .map(|(src, w)| (src.map_or(Operand::Const(*pad_value), |i| x[i]), w))
                        .collect();
                    out.push(lw.lin(&mut stage, t, 0));
                }
                out
            }
            Op::Binary(b @ (fhec_ir::Binary::Add | fhec_ir::Binary::Sub)) => {
                let (x, y) = (lw.vals[&ins[0]].clone(), lw.vals[&ins[1]].clone());
                let sign = if *b == fhec_ir::Binary::Add { 1 } else { -1 };
                x.iter()
                    .zip(&y)
                    .map(|(&a, &c)| lw.lin(&mut stage, vec![(a, 1), (c, sign)], 0))
                    .collect()
            }
            Op::Round { bits } => {
                rounds.insert(n, (bits.clone(), ins[0]));
                lw.vals[&ins[0]].clone()
            }
            // the client wraps after decryption (ProgramOutput::wrap)
            Op::Wrap { .. } => lw.vals[&ins[0]].clone(),
            Op::Tlu(t) => {
                let x = ins[0];
                let (ks, src) = match rounds.get(&x) {
                    Some((b, s)) => (b.clone(), *s),
                    None => (vec![0], x),
                };
                let xb = lw.bounds_of(x)?.clone();
                let srcv = lw.vals[&src].clone();
                let len = node.ty.len();
                table_work += (len as u128) << p;
                if table_work > work_limit {
                    return Err(Error::Usage(format!(
                        "`{name}`: the program's tables need more than {work_limit} entries to evaluate; use fewer bits or stronger rounding"
                    )));
                }
                let mut spec = Vec::with_capacity(len);
                for i in 0..len {
                    let k = ks[if ks.len() == 1 { 0 } else { i }];
                    max_drop = max_drop.max(k);
                    // the table's first input: the domain the passes fixed (its reads beyond
                    // wrap as in the integer program), else the proven lower bound, one below
                    // when approximate rounding may land a box low and there is room
                    let lo_r = match &t.domain {
                        Some(d) => d.lo_of(i),
                        None => {
                            let iv = xb.at(i);
                            let guard = lw.rounding == Rounding::Approximate
                                && k > 0
                                && iv.hi - iv.lo + 3 <= 1i64 << p;
                            iv.lo - i64::from(guard)
                        }
                    };
                    // the offset moves the source's lowest value to index 0; in 128 bits, then
                    // refused when it does not fit the 64-bit registers
                    let offset = if k == 0 {
                        -i128::from(lo_r)
                    } else {
                        (1i128 << (k - 1)) - (i128::from(lo_r) << k)
                    };
                    let offset = i64::try_from(offset)
                        .ok()
                        .filter(|o| o.checked_neg().is_some())
                        .ok_or_else(|| {
                            Error::Usage(format!(
                                "`{name}`: the table input's offset {offset} does not fit 64 bits"
                            ))
                        })?;
                    let table: Vec<i64> = (0..1i64 << p).map(|idx| t.eval(i, lo_r + idx)).collect();
                    let next = lw.tables.len() as u32;
                    let id = *lw.table_ids.entry(table.clone()).or_insert(next);
                    if id == next {
                        lw.tables.push(table);
                    }
                    spec.push((srcv[i], offset, k, id));
                }
                tlu_specs.push((n, spec));
                // registers are made below, once B is known (constraints depend on it)
                vec![Operand::Const(0); len]
            }
            op if op.is_data_movement() => {
                // move operand indices with the op itself
                let mut pool: Vec<Operand> = Vec::new();
                let mut idx_ins = Vec::new();
                for &i in &ins {
                    let v = &lw.vals[&i];
                    let base = pool.len() as i64;
                    pool.extend(v.iter().copied());
                    let shape = g.g[i].ty.shape.clone();
                    let a = ArrayD::from_shape_vec(
                        IxDyn(&shape),
                        (0..v.len() as i64).map(|j| j + base).collect(),
                    )
                    .map_err(|e| Error::Usage(e.to_string()))?;
                    idx_ins.push(Tensor::I64(a));
                }
                let mut op = node.op.clone();
                if let Op::Pad { value, .. } = &mut op {
                    pool.push(Operand::Const(*value as i64));
                    *value = (pool.len() - 1) as f32;
                }
                let refs: Vec<&Tensor> = idx_ins.iter().collect();
                let moved = kernels::eval(&op, &refs)
                    .map_err(|e| Error::Usage(format!("`{name}`: {e}")))?;
                moved
                    .i64_values()
                    .into_iter()
                    .map(|j| pool[j as usize])
                    .collect()
            }
            other => {
                return Err(Error::Usage(format!(
                "`{name}` ({}) cannot run on encrypted data; it was not fused into a table lookup",
                other.name()
            )))
            }
        };
        lw.vals.insert(n, out);
        if !stage.is_empty() {
            lw.stages.push(stage);
        }
        // Tlu registers: one stage per table node
        if let Some((tn, spec)) = tlu_specs.pop() {
            debug_assert_eq!(tn, n);
            let mut stage = Vec::new();
            let mut outs = Vec::with_capacity(spec.len());
            for (src, offset, drop, table) in spec {
                match src {
                    Operand::Const(v) => {
                        let idx = (i128::from(v) + i128::from(offset)) >> drop;
                        outs.push(Operand::Const(negacyclic_read(
                            &lw.tables[table as usize],
                            idx,
                        )));
                    }
                    Operand::Reg(r) => {
                        let nz = lw.noise[r as usize];
                        let dst = lw.reg(Noise {
                            alpha: 1.0,
                            beta: 0.0,
                        });
                        stage.push(Instr::Tlu {
                            dst,
                            src: r,
                            offset,
                            drop,
                            table,
                        });
                        lw.note_tlu(&name, nz, drop, p);
                        outs.push(Operand::Reg(dst));
                    }
                }
            }
            lw.vals.insert(n, outs);
            lw.stages.push(stage);
        }
    }
    // outputs: integers read by client-side float nodes
    let mut outputs = Vec::new();
    let mut out_bits = 0u32;
    for &n in &order {
        if g.g[n].ty.dtype != DType::F32 {
            continue;
        }
        for i in g.inputs_of(n) {
            if g.g[i].ty.dtype != DType::I64 || outputs.iter().any(|o: &ProgramOutput| o.node == i)
            {
                continue;
            }
            let b = lw.bounds_of(i)?.clone();
            let (lo, wrap): (Vec<i64>, Option<u32>) = match &g.g[i].op {
                Op::Wrap { lo, bits } => (
                    (0..b.len())
                        .map(|e| lo[if lo.len() == 1 { 0 } else { e }])
                        .collect(),
                    Some(*bits),
                ),
                _ => ((0..b.len()).map(|e| b.at(e).lo).collect(), None),
            };
            out_bits = out_bits.max(b.max_bits());
            let elems = lw.vals[&i].clone();
            let oname = g.g[i].name.clone();
            let tolerance = match rounding {
                Rounding::Exact => 0,
                Rounding::Approximate => b.max_bits().saturating_sub(p + 1),
            };
            for e in &elems {
                if let Operand::Reg(r) = e {
                    let nz = lw.noise[*r as usize];
                    // the margin holds the tolerance until B is known
                    lw.note(
                        ConstraintKind::Decryption,
                        &oname,
                        nz.alpha,
                        0.0,
                        nz.beta,
                        f64::from(tolerance),
                    );
                }
            }
            outputs.push(ProgramOutput {
                node: i,
                shape: g.g[i].ty.shape.clone(),
                elems,
                lo,
                tolerance,
                wrap,
            });
        }
    }
    let msg_bits = (p + max_drop).max(out_bits).max(p);
    if msg_bits > 40 {
        return Err(Error::Usage(format!(
            "the program needs {msg_bits} message bits, more than TFHE can carry; use fewer bits or stronger rounding"
        )));
    }
    // margins and scales now that B is known
    let mut constraints: Vec<Constraint> = lw.worst.into_values().collect();
    for c in &mut constraints {
        let scale = 4f64.powi(msg_bits as i32);
        match c.kind {
            ConstraintKind::Decryption => {
                // half a unit, or 2^tolerance units
                let tol = c.margin as i32;
                c.margin = if tol == 0 {
                    2f64.powi(-(msg_bits as i32) - 2)
                } else {
                    2f64.powi(tol - msg_bits as i32 - 1)
                };
            }
            ConstraintKind::Table | ConstraintKind::ApproximateTable => {
                // the noise was stored pre-multiplied by 2^(2·(−k−p)); apply 2^(2B)
                c.alpha *= scale;
                c.gamma *= scale;
                c.beta *= scale;
                c.margin = if c.kind == ConstraintKind::Table {
                    2f64.powi(-(p as i32) - 2)
                } else {
                    2f64.powi(-(p as i32) - 1)
                };
            }
            ConstraintKind::BitExtraction => {
                c.alpha *= scale;
                c.gamma *= scale;
                c.beta *= scale;
                c.margin = 0.25;
            }
        }
    }
    constraints.sort_by(|a, b| (a.kind, &a.at).cmp(&(b.kind, &b.at)));
    let tlu_count = lw
        .stages
        .iter()
        .flatten()
        .filter(|i| matches!(i, Instr::Tlu { .. }))
        .count();
    let pbs_count = lw
        .stages
        .iter()
        .flatten()
        .map(|i| match i {
            Instr::Tlu { drop, .. } if rounding == Rounding::Exact => 1 + *drop as usize,
            Instr::Tlu { .. } => 1,
            Instr::Lin { .. } => 0,
        })
        .sum();
    Ok(Program {
        n_regs: lw.regs,
        inputs,
        stages: lw.stages,
        tables: lw.tables,
        outputs,
        tlu_bits: p,
        msg_bits,
        pbs_count,
        tlu_count,
        constraints,
        rounding,
    })
}

impl Lowering<'_> {
    /// Records the noise checks of one table lookup with `drop` exact bits: the sign
    /// bootstraps of bits `j < drop` read the register times `2^(B−j)`; the table reads it
    /// times `2^(B−drop−p)`. Scales are stored without the `2^B` factor, applied once `B`
    /// is known. Approximate rounding: only the table, read at the same scale, with a whole
    /// box of margin (an error is a landing beyond the neighbouring boxes).
    fn note_tlu(&mut self, at: &str, nz: Noise, drop: u32, p: u32) {
        if self.rounding == Rounding::Approximate && drop > 0 {
            let s = 4f64.powi(-((drop + p) as i32));
            self.note(
                ConstraintKind::ApproximateTable,
                at,
                nz.alpha * s,
                0.0,
                nz.beta * s,
                0.0,
            );
            return;
        }
        // the bits below j were extracted and subtracted: j bit outputs' noise (γ)
        for j in 0..drop {
            let s = 4f64.powi(-(j as i32));
            self.note(
                ConstraintKind::BitExtraction,
                at,
                nz.alpha * s,
                j as f64 * s,
                nz.beta * s,
                0.25,
            );
        }
        let s = 4f64.powi(-((drop + p) as i32));
        self.note(
            ConstraintKind::Table,
            at,
            nz.alpha * s,
            drop as f64 * s,
            nz.beta * s,
            0.0,
        );
    }
}

/// Where the TFHE parameters come from (`--params`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamsPolicy {
    /// Searched for this circuit ([`params::search`]).
    #[default]
    Optimized,
    /// The cheapest of tfhe's vetted sets that meets the target ([`params::search_vetted`]).
    Vetted,
}

/// How the encrypted program is built and parameterized; stored in the compiled model so
/// that every process (keygen, encrypt, serve-run, decrypt) derives the same program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FheOptions {
    /// Error probability of one bootstrap (default 2^-40, as Concrete ML).
    pub p_error: f64,
    /// Error probability of one whole sample, split evenly over its bootstraps and
    /// decryptions (union bound); replaces `p_error` when set.
    pub global_p_error: Option<f64>,
    pub rounding: Rounding,
    pub params: ParamsPolicy,
    /// Approximate rounding: largest predicted rate of a table index off by one (1 = any).
    pub max_off_by_one: f64,
}

impl Default for FheOptions {
    fn default() -> Self {
        FheOptions {
            p_error: 2f64.powi(-40),
            global_p_error: None,
            rounding: Rounding::Exact,
            params: ParamsPolicy::Optimized,
            max_off_by_one: 1.0,
        }
    }
}

impl FheOptions {
    /// Checks that the settings are meaningful (they come from the command line or from a
    /// compiled model's file).
    ///
    /// # Errors
    /// A one-line reason naming the setting's flag.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let prob = |v: f64| v > 0.0 && v < 1.0;
        if !prob(self.p_error) {
            return Err(format!(
                "--p-error must be a probability in (0, 1), got {}",
                self.p_error
            ));
        }
        if let Some(g) = self.global_p_error.filter(|&g| !prob(g)) {
            return Err(format!(
                "--global-p-error must be a probability in (0, 1), got {g}"
            ));
        }
        if !(self.max_off_by_one > 0.0 && self.max_off_by_one <= 1.0) {
            return Err(format!(
                "--max-off-by-one must be a rate in (0, 1], got {}",
                self.max_off_by_one
            ));
        }
        Ok(())
    }

    /// The per-bootstrap target for a program.
    pub fn target(&self, p: &Program) -> f64 {
        match self.global_p_error {
            Some(g) => {
                let reads: usize = p.constraints.iter().map(|c| c.count).sum();
                g / reads.max(1) as f64
            }
            None => self.p_error,
        }
    }
}

/// Chooses parameters for a program.
///
/// # Errors
/// No secure parameters meet the target; the error names the hardest layer.
pub fn choose_params(p: &Program, opts: &FheOptions) -> Result<Choice> {
    let target = opts.target(p);
    if !(target > 0.0 && target < 1.0) {
        return Err(Error::Usage(format!(
            "the error probability must be in (0, 1), got {target:e}"
        )));
    }
    let target = params::Target {
        p_error: target,
        off_by_one: opts.max_off_by_one,
    };
    match opts.params {
        ParamsPolicy::Optimized => {
            params::search_circuit(&p.constraints, p.tlu_bits, target, 2.5e9)
        }
        ParamsPolicy::Vetted => params::search_vetted(&p.constraints, p.tlu_bits, target),
    }
    .map_err(|e| Error::Usage(e.to_string()))
}

/// Checks parameters stored with a compiled model against its program instead of searching
/// again: each set on tfhe's 132-bit curve for its dimensions and above the search's floors,
/// every noise constraint meeting the target ([`params::verify`]).
///
/// # Errors
/// Parameters that are not secure or do not meet the target, naming why.
pub fn verify_params(p: &Program, opts: &FheOptions, stored: &Choice) -> Result<Choice> {
    let target = params::Target {
        p_error: opts.target(p),
        off_by_one: opts.max_off_by_one,
    };
    params::verify(stored, &p.constraints, p.tlu_bits, target).map_err(|e| {
        Error::Usage(format!(
            "the compiled model's stored TFHE parameters are refused: {e}; recompile the model"
        ))
    })
}

/// What the clear simulation of an encrypted run draws (`--mode sim`): approximate
/// rounding's noise, the decryption noise, and bootstrap failures, with counts of what it
/// injected.
pub struct SimNoise<'a> {
    /// Standard normal samples.
    pub normal: &'a mut dyn FnMut() -> f64,
    /// Uniform samples in `[0, 1)`.
    pub uniform: &'a mut dyn FnMut() -> f64,
    /// Approximate rounding's noise where the table reads, in table boxes (standard deviation).
    pub approx_sigma: f64,
    /// Decryption noise in output units (standard deviation).
    pub decrypt_sigma: f64,
    /// Probability that one bootstrap fails. A failure is modelled as the table read landing
    /// in a neighbouring box (one index up or down, equally likely): the noise has crossed
    /// the margin, and by little, since the tail of a Gaussian falls fast.
    pub p_fail: f64,
    /// Bootstraps simulated so far.
    pub bootstraps: u64,
    /// Failures injected so far (table lookups moved one box).
    pub failures: u64,
}

impl SimNoise<'_> {
    /// Whether one bootstrap of `count` fails; advances the counters.
    fn any_fails(&mut self, count: u32) -> bool {
        self.bootstraps += u64::from(count);
        let mut failed = false;
        if self.p_fail > 0.0 {
            for _ in 0..count {
                if (self.uniform)() < self.p_fail {
                    failed = true;
                }
            }
        }
        if failed {
            self.failures += 1;
        }
        failed
    }
}

/// What a bootstrap reads at table index `idx`: the table inside it, beyond it the
/// negacyclic wrap (each wrap around the `2^p` boxes negates).
fn negacyclic_read(table: &[i64], idx: i128) -> i64 {
    let boxes = table.len().max(1) as i128;
    let j = idx.rem_euclid(boxes);
    let v = table.get(j as usize).copied().unwrap_or(0);
    if idx.div_euclid(boxes).rem_euclid(2) == 0 {
        v
    } else {
        v.saturating_neg()
    }
}

impl Program {
    /// Runs the program on clear integers (one vector per graph input, row-major) exactly as
    /// the encrypted run computes it; returns one integer vector per output. Without `sim` it
    /// equals `eval_int` (a test checks it). With `sim`, approximate rounding is simulated
    /// (the table reads `⌊u/2^k + (½ + e)/2^k… ⌋` where the value sits in its box, beyond the
    /// table's range wrapping negacyclically as the bootstrap does), outputs that tolerate an
    /// approximate decryption get the decryption noise, and each bootstrap fails with
    /// probability `sim.p_fail` (a table lookup's `1 + drop` bootstraps in exact mode).
    ///
    /// # Errors
    /// Inputs that do not match the program.
    pub fn eval_clear(
        &self,
        inputs: &[Vec<i64>],
        mut sim: Option<&mut SimNoise<'_>>,
    ) -> Result<Vec<Vec<i64>>> {
        if inputs.len() != self.inputs.len()
            || inputs
                .iter()
                .zip(&self.inputs)
                .any(|(a, b)| a.len() != b.len())
        {
            return Err(Error::Usage(
                "inputs do not match the program's inputs".into(),
            ));
        }
        let mut regs = vec![0i64; self.n_regs as usize];
        for (rs, xs) in self.inputs.iter().zip(inputs) {
            for (&r, &x) in rs.iter().zip(xs) {
                regs[r as usize] = x;
            }
        }
        for stage in &self.stages {
            for ins in stage {
                match ins {
                    Instr::Lin { dst, terms, c } => {
                        regs[*dst as usize] = terms.iter().fold(*c, |a, &(r, w)| {
                            a.wrapping_add(regs[r as usize].wrapping_mul(w))
                        });
                    }
                    Instr::Tlu {
                        dst,
                        src,
                        offset,
                        drop,
                        table,
                    } => {
                        let u = regs[*src as usize] + offset;
                        let mut idx = u >> drop;
                        if let Some(sim) = sim.as_deref_mut() {
                            if self.rounding == Rounding::Approximate && *drop > 0 {
                                let unit = 1.0 / (1i64 << drop) as f64;
                                let pos = (u & ((1i64 << drop) - 1)) as f64 * unit + 0.5 * unit;
                                idx += (pos + sim.approx_sigma * (sim.normal)()).floor() as i64;
                            }
                            let count = match self.rounding {
                                Rounding::Exact => 1 + *drop,
                                Rounding::Approximate => 1,
                            };
                            if sim.any_fails(count) {
                                idx += if (sim.uniform)() < 0.5 { -1 } else { 1 };
                            }
                        }
                        regs[*dst as usize] =
                            negacyclic_read(&self.tables[*table as usize], i128::from(idx));
                    }
                }
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|o| {
                o.elems
                    .iter()
                    .enumerate()
                    .map(|(i, e)| match (e, sim.as_deref_mut()) {
                        (Operand::Reg(r), Some(sim)) if o.tolerance > 0 => o.read(
                            i,
                            regs[*r as usize] + (sim.decrypt_sigma * (sim.normal)()).round() as i64,
                        ),
                        (Operand::Reg(r), _) => o.read(i, regs[*r as usize]),
                        (Operand::Const(v), _) => o.read(i, *v),
                    })
                    .collect()
            })
            .collect())
    }
}
