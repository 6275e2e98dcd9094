//! quantize, reductions of encrypted tensors: ReduceSum and ReduceMean as one integer dense
//! layer of ones over the reduced elements (free: no table), ReduceMax as a tree of encrypted
//! maxima (one table per pair).

use super::{uniform, Builder, QVal};
use crate::PassError;
use fhec_ir::{kernels, IntLinear, NodeIndex, Op, QuantParams, ReduceKind, SliceAxis, Tensor};
use ndarray::{ArrayD, IxDyn};

impl Builder<'_> {
    /// Whether `x` is centred by the reduction `n` of itself (`x − mean(x)`, as LayerNorm
    /// and its decomposed forms do): some consumer of `x` also reads `n`, directly or through
    /// data movement. Its mean is then taken over `x`'s requantized codes, which the centring
    /// requantizes anyway (the cache shares them: no extra table), instead of over the raw
    /// accumulators: a sum of k dense outputs is a dense layer whose weights are column
    /// sums, ~k times wider and k² noisier, which exact rounding cannot read.
    fn centres(&self, x: NodeIndex, n: NodeIndex) -> bool {
        let direct = self.f.users_of(x);
        let mut frontier = vec![n];
        for _ in 0..4 {
            let mut next = Vec::new();
            for m in frontier {
                for u in self.f.users_of(m) {
                    if u != n && direct.contains(&u) {
                        return true;
                    }
                    if self.f.g[u].op.is_data_movement() {
                        next.push(u);
                    }
                }
            }
            frontier = next;
        }
        false
    }

    /// `kind` over `axes` of the encrypted (or server-side float) value `x`.
    pub(super) fn encrypted_reduce(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        kind: ReduceKind,
        axes: &[usize],
        name: &str,
        out_shape: &[usize],
    ) -> Result<(), PassError> {
        let shape = self.f.g[x].ty.shape.clone();
        // the codes on one affine map: as they are when it is uniform (a sum of accumulators
        // needs no table), else requantized; a maximum compares codes of one grid
        let (node, a, b, grid) = match self.val(x) {
            QVal::Const(_) => {
                return Err(self.unsupported(n, "a constant where an encrypted value is expected"))
            }
            QVal::Enc {
                node,
                a,
                b,
                requant,
            } if kind != ReduceKind::Max
                && uniform(&a).is_some()
                && (requant.is_some() || !self.centres(x, n)) =>
            {
                (node, a[0], b, requant)
            }
            _ => {
                let (node, p) = self.requant(x)?;
                let s = p.scale;
                (node, s, vec![-s * p.zero_point as f32], Some(p))
            }
        };
        // kept axes first, reduced axes last, as [rows, k]
        let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let rows: usize = kept.iter().map(|&d| shape[d]).product();
        let k: usize = axes.iter().map(|&d| shape[d]).product();
        let mut cur = node;
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            cur = self.add(&format!("{name}:transpose"), Op::Transpose { perm }, &[cur])?;
        }
        cur = self.add(
            &format!("{name}:rows"),
            Op::Reshape {
                shape: vec![rows, k],
            },
            &[cur],
        )?;
        // the constant parts, reduced the same way
        let len: usize = shape.iter().product();
        let bt = Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&shape), super::full(&b, len))
                .expect("invariant: one b per element"),
        );
        let reduce_b = |kind| {
            kernels::eval(
                &Op::Reduce {
                    kind,
                    axes: axes.to_vec(),
                    keepdims: false,
                },
                &[&bt],
            )
            .map(|t| t.f32_values())
        };
        match kind {
            ReduceKind::Sum | ReduceKind::Mean => {
                let ones = ArrayD::from_elem(IxDyn(&[k, 1]), 1i64);
                let sum = self.add(
                    &format!("{name}:sum"),
                    Op::IntLinear(IntLinear::Dense { w: ones }),
                    &[cur],
                )?;
                let out = self.add(
                    name,
                    Op::Reshape {
                        shape: out_shape.to_vec(),
                    },
                    &[sum],
                )?;
                let bs = reduce_b(kind).map_err(|e| self.unsupported(n, e.to_string()))?;
                let a = if kind == ReduceKind::Mean {
                    a / k as f32
                } else {
                    a
                };
                self.set_enc(n, out, vec![a], bs, None);
            }
            ReduceKind::Max => {
                let p: QuantParams = grid.expect("invariant: requantized above");
                // one column per reduced element, then maxima pairwise
                let mut cols = Vec::with_capacity(k);
                for j in 0..k {
                    cols.push(self.add(
                        &format!("{name}:col{j}"),
                        Op::Slice {
                            axes: vec![SliceAxis {
                                axis: 1,
                                start: j as i64,
                                step: 1,
                                len: 1,
                            }],
                        },
                        &[cur],
                    )?);
                }
                let mut level = 0;
                while cols.len() > 1 {
                    let mut next = Vec::with_capacity(cols.len().div_ceil(2));
                    for (i, pair) in cols.chunks(2).enumerate() {
                        next.push(match pair {
                            [x, y] => self.int_extreme(
                                &format!("{name}:max{level}.{i}"),
                                *x,
                                *y,
                                &p,
                                true,
                            )?,
                            [x] => *x,
                            _ => unreachable!("invariant: chunks of two"),
                        });
                    }
                    cols = next;
                    level += 1;
                }
                let out = self.add(
                    name,
                    Op::Reshape {
                        shape: out_shape.to_vec(),
                    },
                    &[cols[0]],
                )?;
                let s = p.scale;
                self.set_enc(n, out, vec![s], vec![-s * p.zero_point as f32], Some(p));
            }
        }
        Ok(())
    }
}
