//! tract backend: pure Rust, always available. Each graph is optimised for concrete input shapes (tract is
//! several times slower on symbolic shapes) and the optimised plans are cached per shape (at most [`PLAN_CACHE_ENTRIES`], least recently used dropped first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use super::{check_len, shape_str, Engine, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind};
use crate::error::{Error, Result};

type Plan = Arc<TypedRunnableModel>;
/// Graph and concrete input shapes.
type PlanKey = (GraphKind, Vec<Vec<usize>>);

/// Plans kept per engine. Each input size needs its own plan (CPEN runs on whole images, so a server sees
/// one per distinct image size, 5-10 MB each); beyond this the least recently used is dropped.
pub const PLAN_CACHE_ENTRIES: usize = 16;

/// Optimised plans by graph and input shapes, least recently used dropped first.
#[derive(Default)]
struct PlanCache {
    plans: HashMap<PlanKey, (Plan, u64)>,
    clock: u64,
}

impl PlanCache {
    fn get(&mut self, key: &PlanKey) -> Option<Plan> {
        self.clock += 1;
        let now = self.clock;
        self.plans.get_mut(key).map(|(plan, used)| {
            *used = now;
            plan.clone()
        })
    }

    fn insert(&mut self, key: PlanKey, plan: Plan) {
        while self.plans.len() >= PLAN_CACHE_ENTRIES {
            let Some(oldest) = self
                .plans
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.plans.remove(&oldest);
        }
        self.clock += 1;
        self.plans.insert(key, (plan, self.clock));
    }
}

/// The pure-Rust tract engine: one optimised plan per input shape, cached.
pub struct TractEngine {
    /// Parsed (not yet typed) graphs, one per kind, cloned for each new input shape.
    models: Vec<InferenceModel>,
    plans: Mutex<PlanCache>,
    /// Threads inside one run (tract's multithreaded matrix products), when more than one.
    executor: Option<Executor>,
    threads: usize,
}

impl TractEngine {
    /// Load every graph of `bundle` with tract.
    pub fn new(bundle: &Bundle, opts: &EngineOptions) -> Result<Self> {
        let parse = |kind: GraphKind| -> Result<InferenceModel> {
            let g = bundle.graph(kind);
            tract_onnx::onnx()
                .model_for_read(&mut &g.bytes[..])
                .map_err(|e| Error::graph(kind, format!("{}: tract cannot load it: {e}", g.origin.display())))
        };
        Ok(TractEngine {
            models: GraphKind::ALL.into_iter().map(parse).collect::<Result<_>>()?,
            plans: Mutex::new(PlanCache::default()),
            executor: (opts.threads > 1).then(|| Executor::multithread(opts.threads)),
            threads: opts.threads.max(1),
        })
    }

    fn plan(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Plan> {
        let shapes: Vec<Vec<usize>> = inputs
            .iter()
            .map(|i| match i {
                Input::F32(s, _) | Input::I64(s, _) => s.to_vec(),
            })
            .collect();
        let key = (graph, shapes);
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p);
        }
        let mut model = self.models[graph as usize].clone();
        for (i, input) in inputs.iter().enumerate() {
            let fact = match input {
                Input::F32(s, _) => f32::fact(s.to_vec()),
                Input::I64(s, _) => i64::fact(s.to_vec()),
            };
            model
                .set_input_fact(i, fact.into())
                .map_err(|e| Error::graph(graph, e))?;
        }
        let shapes = key.1.iter().map(|s| shape_str(s)).collect::<Vec<_>>().join(", ");
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| Error::graph(graph, format!("cannot plan for inputs {shapes}: {e:#}")))?;
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, plan.clone());
        Ok(plan)
    }
}

/// A node evaluation hook of tract's plans, typed for every lifetime `run_plan_with_eval` calls it with.
fn eval_hook<F>(f: F) -> F
where
    F: for<'a, 'b, 'c> FnMut(
        &'a tract_onnx::tract_core::plan::EvalContext<'a>,
        Option<&'b mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
        &'c TypedNode,
        TVec<TValue>,
    ) -> TractResult<TVec<TValue>>,
{
    f
}

/// Time spent in one kind of operator of an optimised tract plan ([`TractEngine::op_profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The operator's name in tract's optimised plan (`Conv`, `OptMatMul`, `Reduce<Sum>`, …).
    pub op: String,
    /// Nodes of that operator in the plan.
    pub nodes: usize,
    /// Seconds per run (the mean over the runs).
    pub secs: f64,
}

impl TractEngine {
    /// Where a run of `graph` on `inputs` spends its time, per operator of the optimised plan, from `runs`
    /// runs after one warm-up (each node timed through tract's evaluation hook); the slowest first.
    pub fn op_profile(&self, graph: GraphKind, inputs: &[Input<'_>], runs: usize) -> Result<Vec<OpTime>> {
        let plan = self.plan(graph, inputs)?;
        let runs = runs.max(1);
        let mut per_node: HashMap<usize, (String, f64)> = HashMap::new();
        for i in 0..=runs {
            let values = self.values(graph, inputs)?;
            let mut state = TypedSimpleState::new(&plan).map_err(|e| Error::graph(graph, format!("{e:#}")))?;
            let mut timed = eval_hook(|ctx, op_state, node, input| {
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                if i > 0 {
                    let e = per_node
                        .entry(node.id)
                        .or_insert_with(|| (node.op().name().to_string(), 0.0));
                    e.1 += t.elapsed().as_secs_f64();
                }
                out
            });
            let run = |state: &mut TypedSimpleState| state.run_plan_with_eval(values, &mut timed);
            match &self.executor {
                Some(ex) => multithread_tract_scope(ex.clone(), || run(&mut state)),
                None => run(&mut state),
            }
            .map_err(|e| Error::graph(graph, format!("{e:#}")))?;
        }
        let mut by_op: HashMap<String, OpTime> = HashMap::new();
        for (op, secs) in per_node.into_values() {
            let e = by_op.entry(op.clone()).or_insert(OpTime {
                op,
                nodes: 0,
                secs: 0.0,
            });
            e.nodes += 1;
            e.secs += secs / runs as f64;
        }
        let mut out: Vec<OpTime> = by_op.into_values().collect();
        out.sort_by(|a, b| b.secs.total_cmp(&a.secs));
        Ok(out)
    }

    /// The inputs as tract values.
    fn values(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<TVec<TValue>> {
        let mut values: TVec<TValue> = tvec![];
        for input in inputs {
            let t = match *input {
                Input::F32(shape, data) => {
                    check_len(graph, shape, data.len())?;
                    tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec())
                        .map_err(|e| Error::graph(graph, e))?
                        .into_tensor()
                }
                Input::I64(shape, data) => {
                    check_len(graph, shape, data.len())?;
                    tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec())
                        .map_err(|e| Error::graph(graph, e))?
                        .into_tensor()
                }
            };
            values.push(t.into_tvalue());
        }
        Ok(values)
    }
}

impl Engine for TractEngine {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        let plan = self.plan(graph, inputs)?;
        let values = self.values(graph, inputs)?;
        let outputs = match &self.executor {
            Some(ex) => multithread_tract_scope(ex.clone(), || plan.run(values)),
            None => plan.run(values),
        }
        .map_err(|e| Error::Graph {
            graph,
            msg: format!("{e:#}"),
            source: Some(e.into()),
        })?;
        let out = outputs
            .into_iter()
            .next()
            .ok_or_else(|| Error::graph(graph, "produced no output"))?;
        let view = out.to_plain_array_view::<f32>().map_err(|e| Error::graph(graph, e))?;
        Ok(Tensor {
            shape: view.shape().to_vec(),
            data: view.iter().copied().collect(),
        })
    }

    fn cached_plans(&self) -> Option<usize> {
        Some(self.plans.lock().unwrap_or_else(|e| e.into_inner()).plans.len())
    }

    fn describe(&self) -> String {
        if self.threads > 1 {
            format!("tract (CPU, {} threads)", self.threads)
        } else {
            "tract (CPU)".into()
        }
    }
}
