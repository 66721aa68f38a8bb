//! Installed models by name: a models folder of bundle folders, so that `-n realsr_x4` works once a bundle is
//! exported to `$DIFFIR_MODELS_DIR/realsr_x4`.

use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::error::{Error, Result};

/// A folder of the runtime's own under the user's data directory: `$var` when set, else
/// `~/.local/share/diffir/<sub>`.
pub fn data_folder(var: &str, sub: &str) -> PathBuf {
    if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/diffir").join(sub)
}

/// The models folder: `$DIFFIR_MODELS_DIR`, else `~/.local/share/diffir/models`.
pub fn models_dir() -> PathBuf {
    data_folder("DIFFIR_MODELS_DIR", "models")
}

/// `--model`: a bundle folder as given, or a bare name found in the models folder.
pub fn resolve(model: &Path) -> Result<PathBuf> {
    let bare = model.components().count() == 1 && !model.exists();
    if !bare {
        return Ok(model.to_path_buf());
    }
    let candidate = models_dir().join(model);
    if candidate.join("bundle.yaml").is_file() {
        return Ok(candidate);
    }
    Err(Error::input(
        model,
        format!(
            "no such bundle folder, and no model of that name in {} (`diffir models` lists the installed ones)",
            models_dir().display()
        ),
    ))
}

/// The installed models: (name, folder, the loaded bundle or why it does not load), sorted by name.
pub fn installed() -> Vec<(String, PathBuf, Result<Bundle>)> {
    let Ok(entries) = std::fs::read_dir(models_dir()) else {
        return vec![];
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("bundle.yaml").is_file())
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let bundle = Bundle::load(&p);
            (name, p, bundle)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
