//! What a plan decided for the user and why, as values that the faces render: the library words them with
//! the names of `RestoreOptions`' fields (`threads`, `max_memory`), the command line with its flags
//! (`--threads`, `--max-memory`). Nothing reads the words back.

use std::fmt;

use super::{CPU_MEMORY_SHARE, GPU_MEMORY_SHARE, GPU_WORKSPACE_MARGIN};
use crate::memory::size;

/// How a message names the options it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Words {
    /// The option's field name in `RestoreOptions` (`tile_batch`): the library's words.
    #[default]
    Options,
    /// The command line's flag (`--tile-batch`).
    Flags,
}

impl Words {
    /// The option with the field name `field`, in these words.
    pub fn option(self, field: &str) -> String {
        match self {
            Words::Options => field.to_string(),
            Words::Flags => format!("--{}", field.replace('_', "-")),
        }
    }
}

/// Where the memory a CPU plan may use comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// The `max_memory` option, in bytes.
    MaxMemory(u64),
    /// [`CPU_MEMORY_SHARE`] of this many bytes available.
    Available(u64),
}

impl Budget {
    /// The budget in bytes.
    pub fn bytes(self) -> f64 {
        match self {
            Budget::MaxMemory(m) => m as f64,
            Budget::Available(a) => a as f64 * CPU_MEMORY_SHARE,
        }
    }

    /// Where the figure comes from, in words.
    pub fn render(self, words: Words) -> String {
        match self {
            Budget::MaxMemory(m) => format!("{} {}", words.option("max_memory"), size(m as f64)),
            Budget::Available(a) => format!("{:.0}% of the {} available", CPU_MEMORY_SHARE * 100.0, size(a as f64)),
        }
    }
}

/// One thing a plan decided for the user.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanNote {
    /// More threads were asked for than there are cores; the cores are used.
    ThreadsClamped {
        /// Threads asked for.
        asked: usize,
        /// Cores here.
        cores: usize,
    },
    /// More workers were asked for than there are threads; one per thread.
    WorkersClamped {
        /// Workers asked for.
        asked: usize,
        /// Threads in all.
        threads: usize,
    },
    /// The memory a CPU worker needs could not be estimated, so the workers are not bounded by memory.
    NoBudget(String),
    /// The budget is less than one CPU worker needs; one is started anyway.
    UnderOneWorker {
        /// The budget.
        budget: Budget,
        /// Bytes one worker needs.
        per_worker: f64,
        /// Bytes the plan needs whatever its workers.
        fixed: f64,
    },
    /// The budget fits fewer CPU workers than asked for.
    BudgetFits {
        /// The budget.
        budget: Budget,
        /// Workers that fit.
        fit: usize,
        /// Workers asked for (or one per thread).
        asked: usize,
        /// Bytes one worker needs.
        per_worker: f64,
        /// Bytes the plan needs whatever its workers.
        fixed: f64,
    },
    /// `tile auto` on a GPU whose free memory is unknown: the fallback tile.
    GpuMemoryUnknown {
        /// The tile used.
        tile: usize,
    },
    /// `tile auto` on a GPU where the activations could not be estimated: the fallback tile.
    GpuEstimateFailed {
        /// The tile used.
        tile: usize,
        /// Why.
        why: String,
    },
    /// `tile auto` on a GPU: the tile and batch that fit the memory it plans for.
    GpuTileFits {
        /// The tile.
        tile: usize,
        /// Tiles per batch.
        batch: usize,
        /// Bytes one call is estimated to take.
        call_bytes: f64,
        /// The device's free memory in bytes.
        free: u64,
        /// Activation bytes per input pixel.
        per_pixel: f64,
    },
    /// The start ran out of memory and was re-planned smaller.
    Replanned {
        /// Tiles per batch that did not fit.
        batch: usize,
        /// The tile that did not fit.
        tile: usize,
        /// Tiles per batch now.
        to_batch: usize,
        /// The tile now.
        to_tile: usize,
    },
    /// Triton: the tile the repository was made for.
    RepositoryTile,
}

impl PlanNote {
    /// The note in `words`.
    pub fn render(&self, words: Words) -> String {
        match self {
            PlanNote::ThreadsClamped { asked, cores } => format!(
                "{} {asked} is more than the {cores} cores here; using {cores}",
                words.option("threads")
            ),
            PlanNote::WorkersClamped { asked, threads } => format!(
                "{} {asked} is more than the {threads} thread(s); using {threads}",
                words.option("workers")
            ),
            PlanNote::NoBudget(why) => format!("no memory budget: {why}"),
            PlanNote::UnderOneWorker {
                budget,
                per_worker,
                fixed,
            } => format!(
                "{} is less than one worker needs (~{} plus {} shared); using 1 worker",
                budget.render(words),
                size(*per_worker),
                size(*fixed)
            ),
            PlanNote::BudgetFits {
                budget,
                fit,
                asked,
                per_worker,
                fixed,
            } => format!(
                "{} fits {fit} worker(s) at ~{} each plus {} shared; using {fit} instead of {asked}",
                budget.render(words),
                size(*per_worker),
                size(*fixed)
            ),
            PlanNote::GpuMemoryUnknown { tile } => {
                format!("tile {tile}: the GPU's free memory is unknown (only nvidia-smi reports it)")
            }
            PlanNote::GpuEstimateFailed { tile, why } => format!("tile {tile}: {why}"),
            PlanNote::GpuTileFits {
                tile,
                batch,
                call_bytes,
                free,
                per_pixel,
            } => format!(
                "tile {tile} x {batch} per batch: ~{} of the {:.0}% of {} free it plans for ({per_pixel:.0} B of \
                 activations per pixel, x{GPU_WORKSPACE_MARGIN} for workspaces)",
                size(*call_bytes),
                GPU_MEMORY_SHARE * 100.0,
                size(*free as f64)
            ),
            PlanNote::Replanned {
                batch,
                tile,
                to_batch,
                to_tile,
            } => format!(
                "out of memory starting {batch} tile(s) of {tile} per batch; re-planned to {to_batch} tile(s) of \
                 {to_tile}"
            ),
            PlanNote::RepositoryTile => "the repository's tile".to_string(),
        }
    }

    /// Whether the one-line summary of a start shows the plan's notes: it does when the plan overrode what
    /// was asked (threads, workers) or had to re-plan.
    pub fn in_summary(&self) -> bool {
        matches!(
            self,
            PlanNote::ThreadsClamped { .. }
                | PlanNote::WorkersClamped { .. }
                | PlanNote::Replanned { .. }
                // A budget that cannot hold one worker at the tile asked for (a tile of 99999999, a
                // max_memory of 1) is said without -v.
                | PlanNote::UnderOneWorker { .. }
        )
    }
}

impl fmt::Display for PlanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(Words::Options))
    }
}

/// Notes joined with "; " in `words`, or None when there are none.
pub fn joined(notes: &[PlanNote], words: Words) -> Option<String> {
    (!notes.is_empty()).then(|| notes.iter().map(|n| n.render(words)).collect::<Vec<_>>().join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library names the fields, the command line the flags; the figures are the same.
    #[test]
    fn notes_name_options_or_flags() {
        let n = PlanNote::ThreadsClamped { asked: 64, cores: 2 };
        assert_eq!(n.to_string(), "threads 64 is more than the 2 cores here; using 2");
        assert_eq!(
            n.render(Words::Flags),
            "--threads 64 is more than the 2 cores here; using 2"
        );
        let b = PlanNote::BudgetFits {
            budget: Budget::MaxMemory(1 << 30),
            fit: 3,
            asked: 8,
            per_worker: (200u64 << 20) as f64,
            fixed: (30u64 << 20) as f64,
        };
        assert_eq!(
            b.render(Words::Flags),
            "--max-memory 1.0 GiB fits 3 worker(s) at ~200 MiB each plus 30 MiB shared; using 3 instead of 8"
        );
        assert!(b.to_string().starts_with("max_memory 1.0 GiB fits 3"));
        assert_eq!(Words::Flags.option("tile_batch"), "--tile-batch");
        assert!(n.in_summary() && !b.in_summary());
        let under = |budget| PlanNote::UnderOneWorker {
            budget,
            per_worker: 3e9,
            fixed: 3e6,
        };
        assert!(under(Budget::MaxMemory(1)).in_summary() && under(Budget::Available(1 << 30)).in_summary());
        assert!(under(Budget::MaxMemory(1))
            .to_string()
            .starts_with("max_memory 1 B is less than one worker"));
        assert_eq!(joined(&[], Words::Flags), None);
        assert_eq!(
            joined(&[PlanNote::RepositoryTile, n], Words::Options).unwrap(),
            "the repository's tile; threads 64 is more than the 2 cores here; using 2"
        );
    }
}
