//! What a start chose and why, kept as values (what runs, the plan and its notes, the providers skipped,
//! warnings) and rendered by the faces: in one short line or in full, naming options the library's way or
//! the command line's.

use std::fmt;

use crate::backend::ort;
use crate::plan::{joined, Plan, PlanNote, Words};

/// What runs a pipeline's graphs: the provider that started, which `auto` may have chosen over the one
/// preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// Pure-Rust tract on the CPU.
    Tract,
    /// onnxruntime with this execution provider.
    Onnxruntime(ort::Provider),
    /// A Triton Inference Server.
    Triton,
    /// An engine the caller built and handed to the pipeline.
    Custom,
}

impl RunsOn {
    /// Whether the work runs on an NVIDIA GPU (CUDA or TensorRT).
    pub fn on_nvidia_gpu(self) -> bool {
        matches!(self, RunsOn::Onnxruntime(p) if p.needs_gpu_package())
    }
}

impl fmt::Display for RunsOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunsOn::Tract => f.write_str("tract"),
            RunsOn::Onnxruntime(p) => write!(f, "onnxruntime {}", p.name()),
            RunsOn::Triton => f.write_str("Triton"),
            RunsOn::Custom => f.write_str("a caller's engine"),
        }
    }
}

/// What a start chose and why ([`crate::Pipeline::backend`]). [`StartReport::summary`] and
/// [`StartReport::line`] render it; `Display` is the summary in the library's words.
#[derive(Debug, Clone, PartialEq)]
pub struct StartReport {
    /// What runs.
    pub runs_on: RunsOn,
    /// The engine as it describes itself (provider, library, devices); for [`RunsOn::Custom`], the caller's
    /// line.
    pub engine: String,
    /// The plan it runs, with its notes.
    pub plan: Plan,
    /// onnxruntime's version, where it runs.
    pub version: Option<String>,
    /// tract only: why it runs where it was not asked for by name; None when it was.
    pub fallback: Option<String>,
    /// Providers preferred to the one that started, which did not start.
    pub skipped: Vec<&'static str>,
    /// Why each provider tried before did not start, in order.
    pub skipped_why: Vec<String>,
    /// Lines to show after the report: the library's version warning, a GPU the work does not run on.
    pub warnings: Vec<String>,
}

impl StartReport {
    /// A report of `engine` on `runs_on` running `plan`, with nothing skipped and no warning.
    pub fn new(runs_on: RunsOn, engine: String, plan: Plan) -> Self {
        StartReport {
            runs_on,
            engine,
            plan,
            version: None,
            fallback: None,
            skipped: vec![],
            skipped_why: vec![],
            warnings: vec![],
        }
    }

    /// One short line: the backend, its plan, and in a few words why (plus any warning lines).
    pub fn summary(&self, words: Words) -> String {
        self.render(words, false)
    }

    /// Everything: the engine and its library, the plan's notes, each provider skipped and why.
    pub fn line(&self, words: Words) -> String {
        self.render(words, true)
    }

    fn render(&self, words: Words, full: bool) -> String {
        let plan = &self.plan;
        let notes = joined(&plan.notes, words).map(|n| format!(" ({n})"));
        let mut out = match self.runs_on {
            RunsOn::Custom => self.engine.clone(),
            RunsOn::Triton => format!("backend: {} [{plan}] (a worker is one request in flight)", self.engine),
            RunsOn::Tract => {
                let head = match (full, &self.fallback) {
                    (true, fallback) => format!("backend: {} [{plan}] ({})", self.engine, why_tract(fallback)),
                    (false, None) => format!("backend: tract [{plan}]"),
                    (false, Some(_)) => format!(
                        "backend: tract [{plan}] (onnxruntime not found; {} says where it was looked for)",
                        details(words)
                    ),
                };
                head + &notes.unwrap_or_default()
            }
            RunsOn::Onnxruntime(_) if full => {
                let mut s = format!("backend: {} [{plan}]{}", self.engine, notes.unwrap_or_default());
                if !self.skipped_why.is_empty() {
                    s += &format!(" ({})", self.skipped_why.join("; "));
                }
                s
            }
            RunsOn::Onnxruntime(p) => {
                let version = self.version.as_deref().unwrap_or_default();
                let mut s = format!("backend: onnxruntime {version} {} [{plan}]", p.name());
                if plan.notes.iter().any(PlanNote::in_summary) {
                    s += &notes.unwrap_or_default();
                }
                if !self.skipped_why.is_empty() {
                    s += &format!(
                        " ({} not available here; {} says why)",
                        self.skipped.join(", "),
                        details(words)
                    );
                }
                s
            }
        };
        for w in &self.warnings {
            out += "\n";
            out += w;
        }
        out
    }
}

/// Why tract runs: its fallback reason, or "requested" where it was asked for by name.
pub(super) fn why_tract(fallback: &Option<String>) -> &str {
    fallback.as_deref().unwrap_or("requested")
}

/// Where the full report is, in the face's words: the command line's `-v`, the library's full start report
/// ([`StartReport::line`]; no Rust name in a text Python and HTTP users read).
fn details(words: Words) -> &'static str {
    match words {
        Words::Options => "the full start report",
        Words::Flags => "-v",
    }
}

impl fmt::Display for StartReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary(Words::Options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Precision;

    fn plan(notes: Vec<PlanNote>) -> Plan {
        Plan {
            devices: vec![],
            workers: 2,
            threads: 1,
            tile_batch: 1,
            tile: 128,
            precision: Precision::Fp32,
            notes,
        }
    }

    /// The summary shows the plan's notes only where the plan overrode what was asked; the full line always;
    /// flags or option names as the face asks.
    #[test]
    fn reports_render_in_the_faces_words() {
        let clamped = PlanNote::ThreadsClamped { asked: 9, cores: 2 };
        let mut r = StartReport {
            version: Some("1.31.1".into()),
            skipped: vec!["TensorRT", "CUDA"],
            skipped_why: vec!["no GPU".into()],
            ..StartReport::new(
                RunsOn::Onnxruntime(ort::Provider::Cpu),
                "onnxruntime CPU (lib)".into(),
                plan(vec![clamped]),
            )
        };
        let p = "2 worker(s) x 1 thread(s), tile 128, 1 tile(s) per batch, fp32";
        assert_eq!(
            r.summary(Words::Flags),
            format!(
                "backend: onnxruntime 1.31.1 CPU [{p}] (--threads 9 is more than the 2 cores here; using 2) \
                 (TensorRT, CUDA not available here; -v says why)"
            )
        );
        assert_eq!(
            r.line(Words::Options),
            format!("backend: onnxruntime CPU (lib) [{p}] (threads 9 is more than the 2 cores here; using 2) (no GPU)")
        );
        r.plan.notes = vec![PlanNote::GpuMemoryUnknown { tile: 256 }];
        r.warnings.push("warning: w".into());
        assert!(!r.summary(Words::Flags).contains("tile 256:"));
        assert!(r
            .line(Words::Flags)
            .contains("(tile 256: the GPU's free memory is unknown"));
        assert!(r.summary(Words::Flags).ends_with("\nwarning: w"));
        let fell_back = StartReport {
            fallback: Some("onnxruntime unavailable: x".into()),
            ..StartReport::new(RunsOn::Tract, "tract".into(), plan(vec![]))
        };
        assert!(fell_back
            .summary(Words::Flags)
            .ends_with("(onnxruntime not found; -v says where it was looked for)"));
        assert!(fell_back
            .summary(Words::Options)
            .ends_with("(onnxruntime not found; the full start report says where it was looked for)"));
        assert!(fell_back.line(Words::Flags).ends_with("(onnxruntime unavailable: x)"));
        let asked = StartReport::new(RunsOn::Tract, "tract".into(), plan(vec![]));
        assert_eq!(asked.summary(Words::Flags), format!("backend: tract [{p}]"));
        assert!(asked.line(Words::Flags).ends_with("(requested)"));
    }
}
