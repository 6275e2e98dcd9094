//! Lowering: the integer IR (with its proven bounds and the client's input quantizers)
//! becomes a [`Program`] and the noise [`Constraint`]s its parameters must meet.

use super::error::BackendError;
use super::params::{Constraint, ConstraintKind};
use super::program::{light_lookup, negacyclic_read, Instr, Operand, Program, ProgramOutput};
use super::Rounding;

type Result<T, E = BackendError> = std::result::Result<T, E>;
use fhec_ir::analysis::{proven_bounds, Bounds};
use fhec_ir::{kernels, DType, Graph, IntLinear, NodeIndex, Op, QuantParams, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// One element of a table lookup before registers are assigned: source, offset, bits
/// dropped, table id.
type TluElem = (Operand, i64, u32, u32);

#[derive(Clone, Copy, Debug, Default)]
struct Noise {
    /// Outputs of main-set table bootstraps (keyswitched back to the registers' key).
    alpha: f64,
    /// Outputs of second-partition bootstraps (approximate rounding's light tables).
    gamma: f64,
    beta: f64,
}

struct Lowering<'a> {
    rounding: Rounding,
    /// Exact rounding's tables as two `(p−1)`-bit bootstraps ([`Program::split`]).
    split: bool,
    /// Approximate rounding's rounded tables on the second partition ([`Program::light`]).
    light: bool,
    /// The table precision (bits every table is read at).
    p: u32,
    g: &'a Graph,
    bounds: HashMap<NodeIndex, Bounds>,
    regs: u32,
    noise: Vec<Noise>,
    vals: HashMap<NodeIndex, Vec<Operand>>,
    stages: Vec<Vec<Instr>>,
    tables: Vec<Vec<i64>>,
    table_ids: HashMap<Vec<i64>, u32>,
    worst: HashMap<(ConstraintKind, String), Constraint>,
    /// Exact rounding's extracted bits as each read sees them, already at their final
    /// scale (independent of `B`: [`Lowering::note_tlu`]), per constraint (the worst).
    bit_noise: HashMap<(ConstraintKind, String), f64>,
    /// The input registers, per graph input.
    inputs: Vec<Vec<u32>>,
    /// `Round` nodes: bits dropped per element and the source, resolved by their table.
    rounds: HashMap<NodeIndex, (Vec<u32>, NodeIndex)>,
    /// Most bits any lookup drops.
    max_drop: u32,
    /// Table entries evaluated so far (bounded like a node's work).
    table_work: u128,
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
                    let src = self.noise[r as usize];
                    nz.alpha += s * src.alpha;
                    nz.gamma += s * src.gamma;
                    nz.beta += s * src.beta;
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
            BackendError::internal(format!("no proven bounds for `{}`", self.g.g[n].name))
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

/// Lowers an integer program (`g`, whose graph inputs the client quantizes with
/// `input_quant`): from the IR and its quantization data alone.
///
/// # Errors
/// A float operation on the server side (not fused into a table), or a table too wide.
pub fn lower(g: &Graph, input_quant: &[QuantParams], rounding: Rounding) -> Result<Program> {
    lower_with(g, input_quant, rounding, Layout::Plain)
}

/// How a program's tables run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Each table as one bootstrap on the table set.
    Plain,
    /// The rounding method's second layout: exact rounding splits its tables
    /// ([`Program::split`]; not 1-bit tables), approximate rounding runs its rounded tables
    /// on the second partition ([`Program::light`]).
    Second,
}

impl Layout {
    /// The layout a stored plan was made with.
    pub fn of_stored(split_tables: bool, light_tables: bool) -> Self {
        if split_tables || light_tables {
            Layout::Second
        } else {
            Layout::Plain
        }
    }
}

/// [`lower`] with a given [`Layout`]: the table width, then every integer node in
/// topological order ([`Lowering::node`]), the decrypted outputs, and the noise constraints
/// once the message width is known.
///
/// # Errors
/// As [`lower`].
pub fn lower_with(
    g: &Graph,
    input_quant: &[QuantParams],
    rounding: Rounding,
    layout: Layout,
) -> Result<Program> {
    let bounds = proven_bounds(g, input_quant)?;
    let order = g.topo()?;
    let p = table_bits(g, &order, &bounds)?;
    let second = layout == Layout::Second;
    let split = second && rounding == Rounding::Exact && p >= 2;
    let light = second && rounding == Rounding::Approximate;
    let mut lw = Lowering {
        rounding,
        split,
        light,
        p,
        g,
        bounds,
        regs: 0,
        noise: Vec::new(),
        vals: HashMap::new(),
        stages: Vec::new(),
        tables: Vec::new(),
        table_ids: HashMap::new(),
        worst: HashMap::new(),
        bit_noise: HashMap::new(),
        inputs: Vec::new(),
        rounds: HashMap::new(),
        max_drop: 0,
        table_work: 0,
    };
    for &n in &order {
        if g.g[n].ty.dtype == DType::I64 {
            lw.node(n)?;
        }
    }
    let (outputs, out_bits) = lw.outputs(&order)?;
    let msg_bits = (p + lw.max_drop).max(out_bits).max(p);
    if msg_bits > 40 {
        return Err(BackendError::Program {
            reason: format!(
                "the program needs {msg_bits} message bits, more than TFHE can carry; use fewer bits or stronger rounding"
            ),
        });
    }
    let constraints = lw.constraints(msg_bits);
    let tlu_count = lw
        .stages
        .iter()
        .flatten()
        .filter(|i| matches!(i, Instr::Tlu { .. }))
        .count();
    let mut prog = Program {
        n_regs: lw.regs,
        inputs: lw.inputs,
        stages: lw.stages,
        tables: lw.tables,
        outputs,
        tlu_bits: p,
        msg_bits,
        pbs_count: 0,
        tlu_count,
        constraints,
        rounding,
        split,
        light,
    };
    prog.pbs_count = prog
        .stages
        .iter()
        .flatten()
        .map(|i| match i {
            Instr::Tlu { drop, .. } => prog.lookup_bootstraps(*drop) as usize,
            Instr::Lin { .. } => 0,
        })
        .sum();
    Ok(prog)
}

/// The program's table precision: the widest per-element table input. Table inputs and
/// their sources must stay well inside 64 bits, so that offsets, guards and table indices
/// cannot overflow, and tables at most [`MAX_TLU_BITS`] wide, checked before any table is
/// built.
fn table_bits(g: &Graph, order: &[NodeIndex], bounds: &HashMap<NodeIndex, Bounds>) -> Result<u32> {
    const SAFE: i64 = 1 << 60;
    let mut p = 1u32;
    let mut tables_bits: Option<u32> = None;
    for &n in order {
        if !matches!(g.g[n].op, Op::Tlu(_) | Op::Round { .. }) {
            continue;
        }
        let Some(b) = bounds.get(&g.inputs_of(n)[0]) else {
            continue;
        };
        let u = b.union();
        if u.lo < -SAFE || u.hi > SAFE {
            return Err(BackendError::circuit(
                &g.g[n].name,
                format!(
                    "its input range [{}, {}] is too wide for encrypted integers; use fewer bits",
                    u.lo, u.hi
                ),
            ));
        }
        if let Op::Tlu(t) = &g.g[n].op {
            // the width the passes fixed (one for every table), else the proven one
            let bits = match &t.domain {
                Some(d) if tables_bits.is_some_and(|p| p != d.bits) => {
                    return Err(BackendError::circuit(
                        &g.g[n].name,
                        format!(
                            "its table domain has {} bits, another table's {}; one program reads every table at one width (recompile the model)",
                            d.bits,
                            tables_bits.unwrap_or_default()
                        ),
                    ))
                }
                Some(d) => {
                    tables_bits = Some(d.bits);
                    d.bits.max(1)
                }
                None => b.max_bits().max(1),
            };
            if bits > MAX_TLU_BITS {
                return Err(BackendError::circuit(
                    &g.g[n].name,
                    format!(
                        "a table lookup reads {bits}-bit values; fhec's parameters read at most {MAX_TLU_BITS}-bit tables (round more with --rounding-bits, or use fewer bits)"
                    ),
                ));
            }
            p = p.max(bits);
        }
    }
    Ok(p)
}

impl Lowering<'_> {
    /// Lowers integer node `n`: its operands (constants or registers) and the instructions
    /// that compute them.
    fn node(&mut self, n: NodeIndex) -> Result<()> {
        let g = self.g;
        let node = &g.g[n];
        let ins = g.inputs_of(n);
        let mut stage = Vec::new();
        let out: Vec<Operand> = match &node.op {
            Op::Input { .. } => {
                let r: Vec<u32> = (0..node.ty.len())
                    .map(|_| {
                        self.reg(Noise {
                            beta: 1.0,
                            ..Noise::default()
                        })
                    })
                    .collect();
                self.inputs.push(r.clone());
                r.into_iter().map(Operand::Reg).collect()
            }
            Op::Const(t) => t.i64_values().into_iter().map(Operand::Const).collect(),
            Op::IntLinear(IntLinear::Dense { w }) => {
                let x = self.vals[&ins[0]].clone();
                let (k, nn) = (w.shape()[0], w.shape()[1]);
                let rows = x.len().checked_div(k).unwrap_or(0);
                let mut out = Vec::with_capacity(rows * nn);
                for r in 0..rows {
                    for j in 0..nn {
                        let terms = (0..k).map(|i| (x[r * k + i], w[[i, j]])).collect();
                        out.push(self.lin(&mut stage, terms, 0));
                    }
                }
                out
            }
            Op::IntLinear(l @ IntLinear::Conv { pad_value, .. }) => {
                let x = self.vals[&ins[0]].clone();
                let xs = g.g[ins[0]].ty.shape.clone();
                let mut out = Vec::new();
                for terms in conv_terms(&xs, l, &node.ty.shape) {
                    let t = terms
                        .into_iter()
                        .map(|(src, w)| (src.map_or(Operand::Const(*pad_value), |i| x[i]), w))
                        .collect();
                    out.push(self.lin(&mut stage, t, 0));
                }
                out
            }
            Op::Binary(b @ (fhec_ir::Binary::Add | fhec_ir::Binary::Sub)) => {
                let (x, y) = (self.vals[&ins[0]].clone(), self.vals[&ins[1]].clone());
                let sign = if *b == fhec_ir::Binary::Add { 1 } else { -1 };
                x.iter()
                    .zip(&y)
                    .map(|(&a, &c)| self.lin(&mut stage, vec![(a, 1), (c, sign)], 0))
                    .collect()
            }
            Op::Round { bits } => {
                self.rounds.insert(n, (bits.clone(), ins[0]));
                self.vals[&ins[0]].clone()
            }
            // the client wraps after decryption (ProgramOutput::wrap)
            Op::Wrap { .. } => self.vals[&ins[0]].clone(),
            Op::Tlu(t) => {
                let spec = self.table_spec(n, t)?;
                let outs = self.tables_stage(n, spec);
                self.vals.insert(n, outs);
                return Ok(());
            }
            op if op.is_data_movement() => self.moved(n, &ins)?,
            other => {
                return Err(BackendError::circuit(
                    &node.name,
                    format!(
                        "{} cannot run on encrypted data; it was not fused into a table lookup",
                        other.name()
                    ),
                ))
            }
        };
        self.vals.insert(n, out);
        if !stage.is_empty() {
            self.stages.push(stage);
        }
        Ok(())
    }

    /// Each element of table lookup `n`: its source operand, the offset that moves the
    /// source's lowest value to index 0, the bits dropped first, and its table (built here,
    /// deduplicated).
    fn table_spec(&mut self, n: NodeIndex, t: &fhec_ir::TluFn) -> Result<Vec<TluElem>> {
        let (g, p) = (self.g, self.p);
        let node = &g.g[n];
        let name = &node.name;
        let x = g.inputs_of(n)[0];
        let (ks, src) = match self.rounds.get(&x) {
            Some((b, s)) => (b.clone(), *s),
            None => (vec![0], x),
        };
        let xb = self.bounds_of(x)?.clone();
        let srcv = self.vals[&src].clone();
        let len = node.ty.len();
        // table entries to evaluate (elements × 2^p), bounded like a node's work
        self.table_work += (len as u128) << p;
        let work_limit = u128::from(g.limits.max_node_macs);
        if self.table_work > work_limit {
            return Err(BackendError::circuit(
                name,
                format!(
                    "the program's tables need more than {work_limit} entries to evaluate; use fewer bits or stronger rounding"
                ),
            ));
        }
        let mut spec = Vec::with_capacity(len);
        for i in 0..len {
            let k = ks[if ks.len() == 1 { 0 } else { i }];
            self.max_drop = self.max_drop.max(k);
            // the table's first input: the domain the passes fixed (its reads beyond
            // wrap as in the integer program), else the proven lower bound, one below
            // when approximate rounding may land a box low and there is room
            let lo_r = match &t.domain {
                Some(d) => d.lo_of(i),
                None => {
                    let iv = xb.at(i);
                    let guard = self.rounding == Rounding::Approximate
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
                    BackendError::circuit(
                        name,
                        format!("the table input's offset {offset} does not fit 64 bits"),
                    )
                })?;
            let table: Vec<i64> = (0..1i64 << p).map(|idx| t.eval(i, lo_r + idx)).collect();
            let next = self.tables.len() as u32;
            let id = *self.table_ids.entry(table.clone()).or_insert(next);
            if id == next {
                self.tables.push(table);
            }
            spec.push((srcv[i], offset, k, id));
        }
        Ok(spec)
    }

    /// The registers and the stage of table lookup `n` (one stage per table node): a
    /// constant source reads its table in the clear; a register gets a `Tlu` and its noise
    /// checks, named by the layer whose accumulator the table reads.
    fn tables_stage(&mut self, n: NodeIndex, spec: Vec<TluElem>) -> Vec<Operand> {
        let g = self.g;
        let name = &g.g[n].name;
        let layer = &g.g[g.table_source(n).0].name;
        let at = if layer == name {
            name.clone()
        } else {
            format!("{layer} → {name}")
        };
        let mut stage = Vec::new();
        let mut outs = Vec::with_capacity(spec.len());
        for (src, offset, drop, table) in spec {
            match src {
                Operand::Const(v) => {
                    let idx = (i128::from(v) + i128::from(offset)) >> drop;
                    outs.push(Operand::Const(negacyclic_read(
                        &self.tables[table as usize],
                        idx,
                    )));
                }
                Operand::Reg(r) => {
                    let nz = self.noise[r as usize];
                    // a split table's output sums two bootstrap outputs; a light table's
                    // comes from the second partition
                    let dst = self.reg(if light_lookup(self.light, drop) {
                        Noise {
                            gamma: 1.0,
                            ..Noise::default()
                        }
                    } else {
                        Noise {
                            alpha: if self.split { 2.0 } else { 1.0 },
                            ..Noise::default()
                        }
                    });
                    stage.push(Instr::Tlu {
                        dst,
                        src: r,
                        offset,
                        drop,
                        table,
                    });
                    self.note_tlu(&at, nz, drop, self.p);
                    outs.push(Operand::Reg(dst));
                }
            }
        }
        self.stages.push(stage);
        outs
    }

    /// A data-movement op (reshape, transpose, slice, gather, pad, concat) applied to the
    /// operands themselves: register renaming, free at run time.
    fn moved(&self, n: NodeIndex, ins: &[NodeIndex]) -> Result<Vec<Operand>> {
        let g = self.g;
        let name = &g.g[n].name;
        let mut pool: Vec<Operand> = Vec::new();
        let mut idx_ins = Vec::new();
        for &i in ins {
            let v = &self.vals[&i];
            let base = pool.len() as i64;
            pool.extend(v.iter().copied());
            let shape = g.g[i].ty.shape.clone();
            let a = ArrayD::from_shape_vec(
                IxDyn(&shape),
                (0..v.len() as i64).map(|j| j + base).collect(),
            )
            .map_err(|e| BackendError::internal(format!("`{name}`: {e}")))?;
            idx_ins.push(Tensor::I64(a));
        }
        let mut op = g.g[n].op.clone();
        if let Op::Pad { value, .. } = &mut op {
            pool.push(Operand::Const(*value as i64));
            *value = (pool.len() - 1) as f32;
        }
        let refs: Vec<&Tensor> = idx_ins.iter().collect();
        let moved =
            kernels::eval(&op, &refs).map_err(|e| BackendError::circuit(name, e.to_string()))?;
        Ok(moved
            .i64_values()
            .into_iter()
            .map(|j| pool[j as usize])
            .collect())
    }

    /// The integers the client decrypts (those client-side float nodes read), with their
    /// decryption checks; and the widest one's bits.
    fn outputs(&mut self, order: &[NodeIndex]) -> Result<(Vec<ProgramOutput>, u32)> {
        let g = self.g;
        let mut outputs: Vec<ProgramOutput> = Vec::new();
        let mut out_bits = 0u32;
        for &n in order {
            if g.g[n].ty.dtype != DType::F32 {
                continue;
            }
            for i in g.inputs_of(n) {
                if g.g[i].ty.dtype != DType::I64 || outputs.iter().any(|o| o.node == i) {
                    continue;
                }
                let b = self.bounds_of(i)?.clone();
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
                let elems = self.vals[&i].clone();
                let oname = g.g[i].name.clone();
                let tolerance = match self.rounding {
                    Rounding::Exact => 0,
                    Rounding::Approximate => b.max_bits().saturating_sub(self.p + 1),
                };
                for e in &elems {
                    if let Operand::Reg(r) = e {
                        let nz = self.noise[*r as usize];
                        // the margin holds the tolerance until B is known
                        self.note(
                            ConstraintKind::Decryption,
                            &oname,
                            nz.alpha,
                            nz.gamma,
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
        Ok((outputs, out_bits))
    }

    /// The noise constraints with their margins and scales, now that the message width
    /// `B = msg_bits` is known; sorted by kind and place.
    fn constraints(&mut self, msg_bits: u32) -> Vec<Constraint> {
        let (p, split) = (self.p, self.split);
        let mut constraints: Vec<Constraint> =
            std::mem::take(&mut self.worst).into_values().collect();
        for c in &mut constraints {
            let scale = 4f64.powi(msg_bits as i32);
            let bits = self
                .bit_noise
                .get(&(c.kind, c.at.clone()))
                .copied()
                .unwrap_or(0.0);
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
                ConstraintKind::Table
                | ConstraintKind::ApproximateTable
                | ConstraintKind::ApproximateTableLight => {
                    // the noise was stored pre-multiplied by 2^(2·(−k−p)); apply 2^(2B)
                    c.alpha *= scale;
                    c.gamma = c.gamma * scale + bits;
                    c.beta *= scale;
                    if split && c.kind == ConstraintKind::Table {
                        // the second half's top bit
                        c.gamma += 1.0;
                    }
                    // half a box of the bits read (p, or p−1 for a split table), or a whole box
                    c.margin = if c.kind == ConstraintKind::Table {
                        2f64.powi(-((p - u32::from(split)) as i32) - 2)
                    } else {
                        2f64.powi(-(p as i32) - 1)
                    };
                }
                ConstraintKind::BitExtraction => {
                    c.alpha *= scale;
                    c.gamma = c.gamma * scale + bits;
                    c.beta *= scale;
                    c.margin = 0.25;
                }
            }
        }
        constraints.sort_by(|a, b| (a.kind, &a.at).cmp(&(b.kind, &b.at)));
        constraints
    }
}

impl Lowering<'_> {
    /// Records the noise checks of one table lookup with `drop` exact bits: the sign
    /// bootstraps of bits `j < drop` read the register times `2^(B−j)`; the table reads it
    /// times `2^(B−drop−p)`. Scales are stored without the `2^B` factor, applied once `B`
    /// is known. Approximate rounding: only the table, read at the same scale, with a whole
    /// box of margin (an error is a landing beyond the neighbouring boxes).
    ///
    /// Exact rounding works on the register times `2^o`, `o = B−drop−p` (the table's read
    /// scale), and each extracted bit's bootstrap outputs it at that scale, where it is
    /// subtracted: a bit output's noise is then amplified by `4^(B−j−o) = 4^(drop+p−j)` in
    /// the read of a later bit `j` and not at all in the table's read, where extracting at
    /// the register's own scale would amplify it by `4^(B−j)` and `4^(B−drop−p)`. Values
    /// narrower than the circuit's `B` bits (most tables' inputs in a QAT network) keep
    /// their bits' noise at their own width. These terms do not depend on `B`
    /// ([`Lowering::bit_noise`]).
    fn note_tlu(&mut self, at: &str, nz: Noise, drop: u32, p: u32) {
        if self.rounding == Rounding::Approximate && drop > 0 {
            let s = 4f64.powi(-((drop + p) as i32));
            let kind = if light_lookup(self.light, drop) {
                ConstraintKind::ApproximateTableLight
            } else {
                ConstraintKind::ApproximateTable
            };
            self.note(kind, at, nz.alpha * s, nz.gamma * s, nz.beta * s, 0.0);
            return;
        }
        // the bits below j were extracted and subtracted: j bit outputs' noise. A split
        // table extracts bit `drop` too (the index's low bit), read twice from one keyswitch:
        // at its weight (subtracted) and at the top (the second half's sign); both halves
        // read the rest at the same scale as p bits, the second with the top bit added (one
        // more bit output's noise, unscaled: added once B is known)
        let split = u32::from(self.split);
        let reads = (0..drop + split).chain((split == 1).then_some(drop));
        for j in reads {
            let s = 4f64.powi(-(j as i32));
            self.note(
                ConstraintKind::BitExtraction,
                at,
                nz.alpha * s,
                nz.gamma * s,
                nz.beta * s,
                0.25,
            );
            self.note_bits(
                ConstraintKind::BitExtraction,
                at,
                j as f64 * 4f64.powi((drop + p) as i32 - j as i32),
            );
        }
        self.note_bits(ConstraintKind::Table, at, f64::from(drop + split));
        let s = 4f64.powi(-((drop + p) as i32));
        for _half in 0..=split {
            self.note(
                ConstraintKind::Table,
                at,
                nz.alpha * s,
                nz.gamma * s,
                nz.beta * s,
                0.0,
            );
        }
    }

    /// The extracted bits' noise one read sees, at its final scale (the worst per check).
    fn note_bits(&mut self, kind: ConstraintKind, at: &str, bits: f64) {
        let e = self.bit_noise.entry((kind, at.to_string())).or_insert(0.0);
        *e = e.max(bits);
    }
}
