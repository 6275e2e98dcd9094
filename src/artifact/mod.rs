//! The compiled model: what `fhec compile` writes and every later step reads — the integer
//! program, the client's quantizers, the report, the encrypted-program settings and the
//! TFHE parameters chosen at compile time. Nothing secret, nothing per key.
//!
//! [`CompiledModel`] is the saved artifact; its fields are private and it is cheap to clone
//! (one shared copy). Saving and loading are serialization only ([`format`]); the runtime
//! [`Plan`] is rebuilt from the stored parameters on first use and checked, never searched
//! again. The encrypted side (keys, ciphertexts, evaluation) is [`crate::session`].

pub(crate) mod format;
pub(crate) mod report;
mod run;

pub use crate::error::{ArtifactError, FormatError};
pub use format::{FORMAT_VERSION, MODEL_LIMIT};
pub use report::{CompileReport, ConstructionCost, LayerReport};
pub use run::{Overflows, SimStats};

use crate::backend::params::Choice;
use crate::backend::{BackendError, FheOptions, Plan, PlanInfo};
use fhec_ir::{Graph, QuantParams};
use std::sync::{Arc, OnceLock};

/// A compiled model (see the module docs).
#[derive(Clone, Debug)]
pub struct CompiledModel(Arc<Inner>);

/// A compiled model's contents. Not part of the API: [`CompiledModel::parts_mut`] exposes
/// them for tests and fuzzers that write hostile artifacts.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Inner {
    /// The canonicalized float graph (`--mode float`).
    pub float_graph: Graph,
    /// The integer program, with the client-side float tail (dequantization, Softmax, …).
    pub program: Graph,
    /// Float preprocessing the client runs on its inputs before quantizing them (a
    /// standardization chain cut off the graph); the program's inputs are its outputs.
    pub head: Option<Graph>,
    /// How the client quantizes each input (after the head).
    pub input_quant: Vec<QuantParams>,
    pub report: CompileReport,
    /// How the encrypted program is built and parameterized.
    pub fhe: FheOptions,
    /// The TFHE parameters chosen at compile time (every partition); `None` only for a model
    /// compiled without a plan (clear-mode experiments), which cannot be saved.
    pub params: Option<Choice>,
    /// The runtime plan, made from `params` on first use.
    pub plan: OnceLock<Arc<Plan>>,
}

impl CompiledModel {
    pub(crate) fn from_parts(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The contents, to change them (the plan is made again on next use). Not part of the
    /// API: for tests and fuzzers that write hostile artifacts.
    #[doc(hidden)]
    pub fn parts_mut(&mut self) -> &mut Inner {
        let inner = Arc::make_mut(&mut self.0);
        inner.plan = OnceLock::new();
        inner
    }

    /// The compile report (per layer, bootstraps, what compile chose on its own).
    pub fn report(&self) -> &CompileReport {
        &self.0.report
    }

    /// The encrypted-program settings.
    pub fn fhe_options(&self) -> &FheOptions {
        &self.0.fhe
    }

    /// The integer program (the spec of encrypted runs), with its client-side tail.
    pub fn program(&self) -> &Graph {
        &self.0.program
    }

    /// The canonicalized float graph (`--mode float`).
    pub fn float_graph(&self) -> &Graph {
        &self.0.float_graph
    }

    /// The client's float preprocessing before quantization, if any.
    pub fn head(&self) -> Option<&Graph> {
        self.0.head.as_ref()
    }

    /// How the client quantizes each graph input.
    pub fn input_quant(&self) -> &[QuantParams] {
        &self.0.input_quant
    }

    /// Whether TFHE parameters were chosen for this model (every compiled and loaded model
    /// has them, but one compiled for clear mode only).
    pub fn has_plan(&self) -> bool {
        self.0.params.is_some()
    }

    /// The runtime plan: the register program and its parameters, checked (once; cached).
    ///
    /// # Errors
    /// [`BackendError`]: a model compiled without parameters; stored parameters refused.
    pub fn plan(&self) -> Result<&Plan, BackendError> {
        if let Some(p) = self.0.plan.get() {
            return Ok(p);
        }
        let stored = self.0.params.as_ref().ok_or_else(|| BackendError::Program {
            reason: "this model was compiled for clear mode only and has no TFHE parameters; compile it again (its settings may have no encrypted plan)".into(),
        })?;
        let plan = Plan::stored(&self.0.program, &self.0.input_quant, &self.0.fhe, stored)?;
        Ok(self.0.plan.get_or_init(|| Arc::new(plan)))
    }

    /// The shared runtime plan (for sessions that outlive a borrow of the model).
    pub(crate) fn plan_arc(&self) -> Result<Arc<Plan>, BackendError> {
        self.plan()?;
        Ok(self
            .0
            .plan
            .get()
            .expect("invariant: plan() filled it")
            .clone())
    }

    /// What the fronts show of the plan.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn plan_info(&self) -> Result<PlanInfo, BackendError> {
        Ok(self.plan()?.info())
    }

    /// The same model with other encrypted-program settings: its plan is searched again.
    ///
    /// # Errors
    /// Settings out of range; no parameters for this circuit under them.
    pub fn with_fhe_options(&self, opts: FheOptions) -> Result<Self, BackendError> {
        if opts == self.0.fhe && self.has_plan() {
            return Ok(self.clone());
        }
        opts.validate()?;
        let plan = Plan::search(&self.0.program, &self.0.input_quant, &opts)?;
        Ok(self.with_plan(opts, plan))
    }

    /// This model under `opts`, with `plan` already searched for it.
    pub(crate) fn with_plan(&self, opts: FheOptions, plan: Plan) -> Self {
        let i = &self.0;
        Self::from_parts(Inner {
            float_graph: i.float_graph.clone(),
            program: i.program.clone(),
            head: i.head.clone(),
            input_quant: i.input_quant.clone(),
            report: i.report.clone(),
            fhe: opts,
            params: Some(plan.choice.clone()),
            plan: OnceLock::from(Arc::new(plan)),
        })
    }

    /// The same model with its report replaced (what compile did on its own is added to it).
    pub(crate) fn with_report(&self, report: CompileReport) -> Self {
        let i = &self.0;
        Self::from_parts(Inner {
            float_graph: i.float_graph.clone(),
            program: i.program.clone(),
            head: i.head.clone(),
            input_quant: i.input_quant.clone(),
            report,
            fhe: i.fhe.clone(),
            params: i.params.clone(),
            plan: i.plan.clone(),
        })
    }
}
