//! The remote backend: a bundle's prior and backbone run on a Triton Inference Server (or any server that
//! speaks the KServe v2 gRPC protocol) holding a repository from `diffir triton-repo`.
//!
//! Per image the pipeline calls `NAME_prior` once; backbone tiles go to `NAME_backbone` in batches, as many
//! requests in flight as the plan has workers. Every request has a deadline; UNAVAILABLE is retried with
//! exponential backoff for [`TritonOptions::retry_for`], after which that image fails with
//! [`Error::Remote`] and a batch goes on with the next one.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::options::{endpoint_uri, TritonOptions};
use super::proto::grpc_inference_service_client::GrpcInferenceServiceClient as Client;
use super::proto::{
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
    model_metadata_response::TensorMetadata,
    ModelConfigRequest, ModelInferRequest, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
    ServerReadyRequest,
};
use super::repo::{model_names, PARAM_SHA256, PARAM_TILE};
use crate::backend::{Engine, Input, Tensor};
use crate::bundle::{Bundle, GraphKind};
use crate::digest::sha256_hex;
use crate::error::{Error, Result};

/// What the server's backbone model declares.
#[derive(Debug, Clone)]
pub struct RemoteBackbone {
    /// `max_batch_size` of the backbone model.
    pub max_batch: usize,
    /// The tile the repository was made for (`diffir_tile`), when it says.
    pub tile: Option<usize>,
}

/// The Triton engine (see the module docs).
pub struct TritonEngine {
    rt: tokio::runtime::Runtime,
    client: Client<Channel>,
    url: String,
    prior: String,
    backbone: String,
    backbone_inputs: [String; 2],
    backbone_output: String,
    remote: RemoteBackbone,
    opts: TritonOptions,
}

fn status_text(s: &Status) -> String {
    let msg = s.message().trim();
    if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {msg}", s.code())
    }
}

fn dims(shape: &[i64]) -> String {
    format!(
        "[{}]",
        shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    )
}

fn to_bytes(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() * 4);
    for v in x {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

impl TritonEngine {
    /// Connect, check that the server is ready, that both models are there and ready, and that their inputs
    /// and outputs match `bundle` (and, where the repository records it, that the backbone is this
    /// bundle's). Any of these failing is an [`Error::Backend`] naming the model and the shape.
    pub fn connect(bundle: &Bundle, opts: &TritonOptions) -> Result<TritonEngine> {
        let (http, url) = endpoint_uri(&opts.url).map_err(Error::Backend)?;
        let endpoint = Endpoint::from_shared(http)
            .map_err(|e| Error::Backend(format!("--triton-url {url}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(opts.timeout)
            .tcp_nodelay(true);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("diffir-triton")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("cannot start the gRPC runtime: {e}")))?;
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        let client = Client::new(channel)
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30);
        let prefix = opts.model.clone().unwrap_or_else(|| bundle.spec.name.clone());
        let (prior, backbone) = model_names(&prefix);
        let g = &bundle.spec.graphs.backbone;
        let mut engine = TritonEngine {
            rt,
            client,
            url: url.clone(),
            prior,
            backbone,
            backbone_inputs: [g.inputs[0].clone(), g.inputs[1].clone()],
            backbone_output: g.outputs[0].clone(),
            remote: RemoteBackbone {
                max_batch: 1,
                tile: None,
            },
            opts: opts.clone(),
        };
        let backend = |msg: String| Error::Backend(format!("Triton at {url}: {msg}"));
        let ready = engine
            .call(|mut c| async move { c.server_ready(ServerReadyRequest {}).await })
            .map_err(|s| backend(format!("not reachable ({})", status_text(&s))))?;
        if !ready.ready {
            return Err(backend("the server is not ready".into()));
        }
        for name in [engine.prior.clone(), engine.backbone.clone()] {
            let r = engine.named_call(&name, |mut c, name| async move {
                c.model_ready(ModelReadyRequest {
                    name,
                    version: String::new(),
                })
                .await
            });
            match r {
                Ok(r) if r.ready => {}
                Ok(_) => {
                    return Err(backend(format!(
                        "model '{name}' is not ready (is it in the model repository? `diffir triton-repo` writes it)"
                    )))
                }
                Err(s) => return Err(backend(format!("model '{name}': {}", status_text(&s)))),
            }
        }
        let meta = |name: &str| -> Result<ModelMetadataResponse> {
            engine
                .named_call(name, |mut c, name| async move {
                    c.model_metadata(ModelMetadataRequest {
                        name,
                        version: String::new(),
                    })
                    .await
                })
                .map_err(|s| backend(format!("model '{name}': metadata: {}", status_text(&s))))
        };
        let (c, d) = (bundle.spec.input_channels as i64, bundle.ipr_dim() as i64);
        let prior_meta = meta(&engine.prior)?;
        let backbone_meta = meta(&engine.backbone)?;
        use super::prior_graph::{IMAGE, IPR, NOISE};
        check_tensors(
            &url,
            &engine.prior,
            "input",
            &prior_meta.inputs,
            &[(IMAGE, &[Some(1), Some(c), None, None]), (NOISE, &[Some(1), Some(d)])],
        )?;
        check_tensors(
            &url,
            &engine.prior,
            "output",
            &prior_meta.outputs,
            &[(IPR, &[Some(1), Some(d)])],
        )?;
        let [bi, bp] = &engine.backbone_inputs;
        check_tensors(
            &url,
            &engine.backbone,
            "input",
            &backbone_meta.inputs,
            &[(bi, &[Some(-1), Some(c), None, None]), (bp, &[Some(-1), Some(d)])],
        )?;
        check_tensors(
            &url,
            &engine.backbone,
            "output",
            &backbone_meta.outputs,
            &[(&engine.backbone_output, &[Some(-1), Some(3), None, None])],
        )?;
        let config = engine
            .named_call(&engine.backbone, |mut c, name| async move {
                c.model_config(ModelConfigRequest {
                    name,
                    version: String::new(),
                })
                .await
            })
            .map_err(|s| backend(format!("model '{}': config: {}", engine.backbone, status_text(&s))))?
            .config
            .unwrap_or_default();
        if config.max_batch_size < 1 {
            return Err(backend(format!(
                "model '{}' has max_batch_size {}; the backbone takes batches of tiles (max_batch_size >= 1)",
                engine.backbone, config.max_batch_size
            )));
        }
        let param = |k: &str| config.parameters.get(k).map(|p| p.string_value.clone());
        if let Some(sha) = param(PARAM_SHA256) {
            let local = sha256_hex(&bundle.graph(GraphKind::Backbone).bytes);
            if sha != local {
                return Err(backend(format!(
                    "model '{}' serves another backbone (sha256 {sha}) than this bundle's ({local}); regenerate the \
                     repository from this bundle with `diffir triton-repo`, or pass the bundle it was made from",
                    engine.backbone
                )));
            }
        }
        engine.remote = RemoteBackbone {
            max_batch: config.max_batch_size as usize,
            tile: param(PARAM_TILE).and_then(|t| t.parse().ok()).filter(|&t| t > 0),
        };
        Ok(engine)
    }

    /// What the server's backbone model declares.
    pub fn remote(&self) -> &RemoteBackbone {
        &self.remote
    }

    /// The two model names on the server (prior, backbone).
    pub fn models(&self) -> (&str, &str) {
        (&self.prior, &self.backbone)
    }

    /// `call` for the RPCs that take a model's name (ModelReady, ModelMetadata, ModelConfig).
    fn named_call<T, F, Fut>(&self, name: &str, f: F) -> std::result::Result<T, Status>
    where
        T: Send + 'static,
        F: Fn(Client<Channel>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>> + Send,
    {
        let name = name.to_string();
        self.call(move |c| f(c, name.clone()))
    }

    /// Run one RPC on the engine's runtime from any thread, retrying UNAVAILABLE with backoff for
    /// `retry_for`; the channel reconnects by itself between tries.
    fn call<T, F, Fut>(&self, f: F) -> std::result::Result<T, Status>
    where
        T: Send + 'static,
        F: Fn(Client<Channel>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>> + Send,
    {
        let client = self.client.clone();
        let retry_for = self.opts.retry_for;
        let timeout = self.opts.timeout;
        let (tx, rx) = mpsc::channel();
        self.rt.spawn(async move {
            let start = Instant::now();
            let mut backoff = Duration::from_millis(100);
            let result = loop {
                let r = match tokio::time::timeout(timeout, f(client.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer within the {:.0} s deadline",
                        timeout.as_secs_f64()
                    ))),
                };
                match r {
                    Err(s) if s.code() == Code::Unavailable && start.elapsed() + backoff <= retry_for => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        break Err(Status::unavailable(format!(
                            "{} (still unavailable after retrying for {:.1} s)",
                            s.message(),
                            start.elapsed().as_secs_f64()
                        )))
                    }
                    other => break other.map(|r| r.into_inner()),
                }
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(Status::internal("the gRPC runtime stopped")))
    }

    fn remote_error(&self, model: &str, s: &Status) -> Error {
        Error::Remote {
            server: self.url.clone(),
            model: model.into(),
            msg: status_text(s),
        }
    }

    /// One ModelInfer with float32 inputs; returns the named output.
    fn infer(&self, model: &str, inputs: Vec<(String, Vec<i64>, Vec<u8>)>, output: &str) -> Result<Tensor> {
        let mut tensors = vec![];
        let mut raw = vec![];
        for (name, shape, bytes) in inputs {
            tensors.push(InferInputTensor {
                name,
                datatype: "FP32".into(),
                shape,
                ..Default::default()
            });
            raw.push(bytes);
        }
        let request = ModelInferRequest {
            model_name: model.into(),
            inputs: tensors,
            outputs: vec![InferRequestedOutputTensor {
                name: output.into(),
                ..Default::default()
            }],
            raw_input_contents: raw,
            ..Default::default()
        };
        let timeout = self.opts.timeout;
        let resp = self
            .call(move |mut c| {
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(timeout);
                async move { c.model_infer(req).await }
            })
            .map_err(|s| self.remote_error(model, &s))?;
        let bad = |msg: String| Error::Remote {
            server: self.url.clone(),
            model: model.into(),
            msg,
        };
        let Some(i) = resp.outputs.iter().position(|o| o.name == output) else {
            return Err(bad(format!("the response has no output '{output}'")));
        };
        let meta = &resp.outputs[i];
        if meta.datatype != "FP32" {
            return Err(bad(format!("output '{output}' is {}, not FP32", meta.datatype)));
        }
        let bytes = resp
            .raw_output_contents
            .get(i)
            .ok_or_else(|| bad(format!("output '{output}' came without raw contents")))?;
        let shape: Vec<usize> = meta.shape.iter().map(|&d| d.max(0) as usize).collect();
        let n: usize = shape.iter().product();
        if bytes.len() != n * 4 {
            return Err(bad(format!(
                "output '{output}' of shape {} came with {} bytes",
                dims(&meta.shape),
                bytes.len()
            )));
        }
        let data = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Tensor { shape, data })
    }
}

/// Check a model's declared tensors against what the bundle needs; `None` in `want` is any size.
fn check_tensors(
    url: &str,
    model: &str,
    what: &str,
    got: &[TensorMetadata],
    want: &[(&str, &[Option<i64>])],
) -> Result<()> {
    for (name, shape) in want {
        let Some(t) = got.iter().find(|t| t.name == *name) else {
            let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::Backend(format!(
                "Triton at {url}: model '{model}' has no {what} '{name}' (its {what}s: {})",
                names.join(", ")
            )));
        };
        let fits = t.datatype == "FP32"
            && t.shape.len() == shape.len()
            && t.shape.iter().zip(shape.iter()).all(|(&g, w)| w.is_none_or(|w| g == w));
        if !fits {
            let want: Vec<String> = shape
                .iter()
                .map(|d| d.map_or("any".to_string(), |v| v.to_string()))
                .collect();
            return Err(Error::Backend(format!(
                "Triton at {url}: model '{model}' {what} '{name}' is {} {}; this bundle needs FP32 [{}]",
                t.datatype,
                dims(&t.shape),
                want.join(", ")
            )));
        }
    }
    Ok(())
}

impl Engine for TritonEngine {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        match (graph, inputs) {
            (GraphKind::Backbone, [Input::F32(xs, x), Input::F32(ps, p)]) => {
                let n = xs.first().copied().unwrap_or(0);
                if n > self.remote.max_batch {
                    return Err(Error::Shape(format!(
                        "a batch of {n} tiles is over the Triton model '{}' max_batch_size {}",
                        self.backbone, self.remote.max_batch
                    )));
                }
                let [a, b] = &self.backbone_inputs;
                let to_i64 = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
                self.infer(
                    &self.backbone,
                    vec![
                        (a.clone(), to_i64(xs), to_bytes(x)),
                        (b.clone(), to_i64(ps), to_bytes(p)),
                    ],
                    &self.backbone_output,
                )
            }
            _ => Err(Error::Backend(format!(
                "the Triton backend runs the prior and the backbone only, not graph '{}' on its own",
                graph.name()
            ))),
        }
    }

    fn prior(&self, x: &[f32], shape: &[usize; 4], noise: &[f32]) -> Option<Result<Vec<f32>>> {
        use super::prior_graph::{IMAGE, IPR, NOISE};
        let image_shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let out = self.infer(
            &self.prior,
            vec![
                (IMAGE.into(), image_shape, to_bytes(x)),
                (NOISE.into(), vec![1, noise.len() as i64], to_bytes(noise)),
            ],
            IPR,
        );
        Some(out.and_then(|t| {
            if t.data.len() == noise.len() {
                Ok(t.data)
            } else {
                Err(Error::Remote {
                    server: self.url.clone(),
                    model: self.prior.clone(),
                    msg: format!("the prior has {} values, not {}", t.data.len(), noise.len()),
                })
            }
        }))
    }

    fn describe(&self) -> String {
        format!("Triton at {} (models {}, {})", self.url, self.prior, self.backbone)
    }
}
