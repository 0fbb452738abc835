//! Compile a plugin build once per test binary, and again only when the file on disk changes: both
//! collector hosts (component and otelwasm) load their artifact through this.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use wasmtime::{Config, Engine};

/// What a cache slot holds: the file's stamp, the engine and the compiled artifact.
pub type Slot<T> = OnceLock<Mutex<Option<(u64, Engine, T)>>>;

/// `load` compiles `path` with an engine; `make_target` is the `make` target that builds the file.
pub fn compiled<T: Clone>(
    slot: &Slot<T>,
    path: &Path,
    make_target: &str,
    load: impl FnOnce(&Engine, &Path) -> Result<T, String>,
) -> Result<(Engine, T), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "{} cannot be read ({e}): run `make {make_target}`",
            path.display()
        )
    })?;
    let stamp = meta.len()
        ^ meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
    let cache = slot.get_or_init(|| Mutex::new(None));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((s, engine, artifact)) = cache.as_ref() {
        if *s == stamp {
            return Ok((engine.clone(), artifact.clone()));
        }
    }
    let engine = Engine::new(&Config::new()).map_err(|e| format!("engine: {e:#}"))?;
    let artifact = load(&engine, path)?;
    *cache = Some((stamp, engine.clone(), artifact.clone()));
    Ok((engine, artifact))
}
