//! `diffir triton-repo`: write a Triton model repository for a model.

use std::path::PathBuf;

use clap::Args;

use super::args::ModelArg;
use crate::error::Result;

/// `diffir triton-repo`.
#[derive(Debug, Args)]
pub struct TritonRepoArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The repository folder (created if needed; other models in it are kept).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Model name prefix: the models are NAME_prior and NAME_backbone [default: the bundle's name].
    #[arg(long)]
    pub name: Option<String>,
    /// The backbone tile clients send, in input pixels (recorded in the backbone's config).
    #[arg(short = 't', long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub tile: u32,
    /// The backbone's max_batch_size: tiles per server-side batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_batch: u32,
    /// Model instances (per GPU with --gpu).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// Instances on the GPUs (the default).
    #[arg(long, conflicts_with = "cpu")]
    pub gpu: bool,
    /// Instances on the CPU.
    #[arg(long)]
    pub cpu: bool,
    /// Add Triton's TensorRT execution accelerator to both models (not run by diffir's tests).
    #[arg(long)]
    pub tensorrt: bool,
    /// Replace models of the same names in the repository.
    #[arg(long)]
    pub overwrite: bool,
}

/// `diffir triton-repo`: write the repository and say what was written.
pub fn triton_repo(args: &TritonRepoArgs) -> Result<String> {
    let bundle = args.model.bundle()?;
    let opts = crate::triton::RepoOptions {
        name: args.name.clone(),
        tile: args.tile as usize,
        max_batch: args.max_batch as usize,
        instances: args.instances as usize,
        kind: if args.cpu {
            crate::triton::InstanceKind::Cpu
        } else {
            crate::triton::InstanceKind::Gpu
        },
        tensorrt: args.tensorrt,
        overwrite: args.overwrite,
    };
    let written = crate::triton::repo::write(&bundle, &args.out, &opts)?;
    let mut out = String::new();
    for dir in written {
        out += &format!("wrote {}\n", dir.display());
    }
    Ok(out)
}
