//! `diffir serve`: the server's arguments, checked, and the models loaded once.

use std::path::PathBuf;

use clap::Args;

use super::args::{load_model, parse_seconds, EngineArgs};
use crate::error::{Error, Result};
use crate::image_io;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model to serve: a bundle folder or an installed model's name (served under its folder name), or
    /// NAME=MODEL (repeatable). Default: the built-in model, as diffir-x4-small.
    #[arg(long = "model", short = 'n', value_name = "[NAME=]MODEL")]
    pub models: Vec<String>,
    /// Address to listen on; port 0 lets the OS pick (the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Largest request body in bytes (413 above; a larger declared Content-Length is refused before reading).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive in full (408 after it).
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    pub body_timeout: f64,
    /// Seconds a connection may take to send a request's headers, counted from when it opens or its last
    /// response was sent (also the idle timeout of keep-alive connections).
    #[arg(long, default_value_t = 20.0, value_parser = parse_seconds)]
    pub header_timeout: f64,
    /// Connections open at once; more wait in the listen backlog [default: 1024, or the open-files limit
    /// less 64 where that is lower].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Seconds open connections may take to finish after SIGTERM/SIGINT; then they are dropped and the
    /// server exits 0 (a second signal ends the wait at once).
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    pub shutdown_timeout: f64,
    /// Tile sizes a request may choose with `tile` (comma-separated, each at least 32; 0 among them allows
    /// whole images) [default: the plan's tile and its halves down to 64].
    #[arg(long, value_delimiter = ',', value_parser = parse_request_tile)]
    pub request_tiles: Vec<usize>,
    /// Let requests run whole images (tile=0); their memory estimate is still checked.
    #[arg(long)]
    pub allow_whole_image: bool,
    /// Largest input image in pixels, checked from its header before decoding (413 above).
    #[arg(long, default_value_t = 50_000_000)]
    pub max_pixels: u64,
    /// Restores running at once (each one uses the plan's workers and threads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrency: u32,
    /// Requests that may wait for a worker; beyond that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Deadline of a restore request in seconds (504 after it; the restore is stopped between tiles).
    #[arg(long, default_value_t = 300.0, value_parser = parse_seconds)]
    pub request_timeout: f64,
    /// File holding the bearer token every request but the health checks must send
    /// (Authorization: Bearer TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// JPEG quality of JPEG outputs (1-100).
    #[arg(long, default_value_t = image_io::DEFAULT_JPEG_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
}

fn parse_request_tile(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Ok(0),
        Ok(t) if t >= crate::serve::MIN_REQUEST_TILE => Ok(t),
        _ => Err(format!(
            "'{s}' is not a tile size of at least {} pixels (or 0)",
            crate::serve::MIN_REQUEST_TILE
        )),
    }
}

/// The open-files limit of this process (soft), where it can be read.
fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// `diffir serve`: load every model once, then serve until SIGTERM/SIGINT.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let token = match &args.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(Error::input(f, "the token file is empty"));
            }
            Some(t)
        }
        None => None,
    };
    let specs: Vec<(String, Option<PathBuf>)> = if args.models.is_empty() {
        vec![(crate::builtin::NAME.to_string(), None)]
    } else {
        args.models
            .iter()
            .map(|m| match m.split_once('=') {
                Some((name, dir)) if !name.is_empty() => (name.to_string(), Some(PathBuf::from(dir))),
                _ => {
                    let p = PathBuf::from(m);
                    let name = p
                        .file_name()
                        .map_or_else(|| m.clone(), |n| n.to_string_lossy().into_owned());
                    (name, Some(p))
                }
            })
            .collect()
    };
    let mut models = vec![];
    for (name, path) in specs {
        if models.iter().any(|m: &crate::serve::ServedModel| m.name == name) {
            return Err(Error::Usage(format!("model name '{name}' is given twice")));
        }
        let bundle = load_model(path.as_deref())?;
        let pipeline = args.engine.start(bundle)?;
        let mut request_tiles = if args.request_tiles.is_empty() {
            crate::serve::default_request_tiles(pipeline.tiling().tile)
        } else {
            args.request_tiles.clone()
        };
        if args.allow_whole_image && !request_tiles.contains(&0) {
            request_tiles.insert(0, 0);
        }
        models.push(crate::serve::ServedModel {
            name,
            pipeline,
            request_tiles,
        });
    }
    let max_connections = match (args.max_connections, open_files_limit()) {
        (Some(n), _) => n as usize,
        (None, Some(files)) => files.saturating_sub(64).clamp(1, 1024) as usize,
        (None, None) => 1024,
    };
    // The backbone memory one restore may take on the CPU: the plan's budget shared by the restores that
    // run at once. GPU plans are bounded by their tile sizes instead.
    let on_cpu = models.iter().all(|m| m.pipeline.plan().devices.is_empty());
    let memory_per_restore = on_cpu
        .then(|| crate::plan::cpu_budget(args.engine.max_memory, crate::memory::available_memory()))
        .flatten()
        .map(|b| b.bytes() / args.max_concurrency.max(1) as f64);
    let opts = crate::serve::ServeOptions {
        listen: args.listen,
        body_timeout: std::time::Duration::from_secs_f64(args.body_timeout),
        conn: crate::serve::ConnLimits {
            max_connections,
            header_timeout: std::time::Duration::from_secs_f64(args.header_timeout),
            shutdown_timeout: std::time::Duration::from_secs_f64(args.shutdown_timeout),
        },
        memory_per_restore,
        max_body_bytes: args.max_body_bytes,
        max_pixels: args.max_pixels,
        max_concurrency: args.max_concurrency as usize,
        queue: args.queue,
        request_timeout: std::time::Duration::from_secs_f64(args.request_timeout),
        token,
        jpeg_quality: args.jpeg_quality,
    };
    crate::serve::run(models, opts)
}
