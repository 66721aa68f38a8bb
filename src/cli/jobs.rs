//! A batch's inputs: folders searched, outputs named, and the pairs checked before any work.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image_io;

/// One input and where its result goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
}

/// Expand inputs (folders recursively, image files only, sorted) and map each to its output path; `format`
/// replaces the extension in folder runs and `suffix` is added to every output name. A folder reached twice
/// (a symlink loop, or two links to one folder) is entered once; `notes` says which were skipped.
pub fn plan_jobs(
    inputs: &[PathBuf],
    output: &Path,
    format: Option<&str>,
    suffix: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<Job>> {
    if let Some(missing) = inputs.iter().find(|p| !p.exists()) {
        return Err(Error::input(missing, "no such file or folder"));
    }
    let single_file = inputs.len() == 1 && inputs[0].is_file();
    let jobs = if single_file {
        let out = if output.is_dir() {
            output.join(output_name(&inputs[0], format, suffix))
        } else {
            output.to_path_buf()
        };
        vec![Job {
            input: inputs[0].clone(),
            output: out,
        }]
    } else {
        if output.is_file() {
            return Err(Error::input(
                output,
                "several inputs need an output folder, and this is a file",
            ));
        }
        let mut jobs = vec![];
        let mut visited = std::collections::HashSet::new();
        for input in inputs {
            if input.is_dir() {
                let mut files = vec![];
                collect(input, &mut files, &mut visited, notes).map_err(|e| Error::io(input, e))?;
                files.sort();
                for f in files {
                    let rel = f.strip_prefix(input).unwrap_or(&f).to_path_buf();
                    let out = output
                        .join(rel.parent().unwrap_or(Path::new("")))
                        .join(output_name(&f, format, suffix));
                    jobs.push(Job { input: f, output: out });
                }
            } else {
                jobs.push(Job {
                    input: input.clone(),
                    output: output.join(output_name(input, format, suffix)),
                });
            }
        }
        jobs
    };
    // Outputs never replace or collide with inputs (-o pointing into an input folder without --suffix).
    let canonical = |p: &Path| {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(parent)
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    let sources: std::collections::HashSet<PathBuf> = jobs.iter().filter_map(|j| canonical(&j.input)).collect();
    if let Some(j) = jobs
        .iter()
        .find(|j| canonical(&j.output).is_some_and(|o| sources.contains(&o)))
    {
        return Err(Error::input(
            &j.output,
            "this output is an input of the same run: choose another -o, or add --suffix (e.g. --suffix _x4)",
        ));
    }
    Ok(jobs)
}

fn output_name(input: &Path, ext: Option<&str>, suffix: Option<&str>) -> PathBuf {
    let mut name = PathBuf::from(input.file_name().unwrap_or_default());
    if let Some(sfx) = suffix {
        let stem = input.file_stem().unwrap_or_default().to_string_lossy();
        let mut n = format!("{stem}{sfx}");
        if let Some(e) = input.extension() {
            n += &format!(".{}", e.to_string_lossy());
        }
        name = PathBuf::from(n);
    }
    if let Some(ext) = ext {
        name.set_extension(ext);
    }
    name
}

fn collect(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut std::collections::HashSet<PathBuf>,
    notes: &mut Vec<String>,
) -> std::io::Result<()> {
    if !visited.insert(std::fs::canonicalize(dir)?) {
        notes.push(format!(
            "{}: not entered (this folder was reached already; symlink loop or second link)",
            crate::names::escaped(dir)
        ));
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // Following symlinks, as reading does; a dangling link is left to the read to report.
        let kind = std::fs::metadata(&path).map(|m| m.file_type());
        if kind.as_ref().is_ok_and(|k| k.is_dir()) {
            collect(&path, out, visited, notes)?;
        } else if image_io::is_supported_input(&path) {
            if kind.as_ref().is_ok_and(|k| !k.is_file()) {
                // A FIFO would block the whole batch; sockets and devices are no images either.
                notes.push(format!(
                    "{}: skipped (not a regular file: a FIFO, socket or device)",
                    crate::names::escaped(&path)
                ));
                continue;
            }
            out.push(path);
        }
    }
    Ok(())
}
