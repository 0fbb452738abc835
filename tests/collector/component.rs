//! # A component host for `dist/ordertrace-collector.wasm` (plays the collector, runs on wasmtime)
//!
//! The bindings come from `wit/ordertrace.wit` through `wasmtime::component::bindgen!`, the same file
//! the guest's `wit_bindgen::generate!` reads, so a drift between the two fails to compile or to link.
//!
//! The host implements the world's imports (`log`, `counter-add`: both recorded) and, of WASI, only
//! `wasi:cli/environment` (the variables given in [`ComponentOptions::env`], for
//! `redaction.hmac_key_env`). Every other import the component declares (the rest of WASI that Rust's
//! standard library links in) is defined as a function that traps: the plugin must not use them while
//! configuring or processing, and a test that makes it try fails with the import's name.
//!
//! ```ignore
//! let mut host = ComponentHost::new(ComponentOptions::default())?;
//! host.init(CONFIG)?.unwrap();                      // Ok(Err(config-error)) when rejected
//! let out = host.process(&batch)?.unwrap();         // Ok(Err(process-error)) when malformed
//! assert!(host.counter("ordertrace_collector_spans") > 0);
//! ```
//! An `Err` from a host method means the guest trapped; after a trap the instance is unusable.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

/// The generated bindings (their root module `ordertrace` is the WIT package, not the crate).
mod wit {
    wasmtime::component::bindgen!({
        path: "../wit/ordertrace.wit",
        world: "span-processor",
    });
}

pub use wit::ordertrace::collector::host::Level;
pub use wit::ordertrace::collector::types::{ConfigError, ProcessError};
use wit::ordertrace::collector::{host, types};
use wit::SpanProcessor;

/// The built component (`make collector-wasm`).
pub fn component_path() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("dist/ordertrace-collector.wasm")
}

#[derive(Clone, Debug, Default)]
pub struct ComponentOptions {
    /// What `wasi:cli/environment.get-environment` answers.
    pub env: Vec<(String, String)>,
}

/// What the plugin told the host.
#[derive(Default)]
pub struct HostState {
    pub logs: Vec<(Level, String)>,
    pub counters: BTreeMap<String, u64>,
    env: Vec<(String, String)>,
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.logs.push((level, message));
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        assert!(delta > 0, "counter-add {name} with delta 0");
        *self.counters.entry(name).or_default() += delta;
    }
}

impl types::Host for HostState {}

/// The engine and compiled component, shared by the tests of one binary; recompiled when the file changes.
fn compiled() -> Result<(Engine, Component), String> {
    static CACHE: crate::compiled::Slot<Component> = std::sync::OnceLock::new();
    crate::compiled::compiled(
        &CACHE,
        &component_path(),
        "collector-wasm",
        |engine, path| {
            Component::from_file(engine, path)
                .map_err(|e| format!("{} is not a loadable component: {e:#}", path.display()))
        },
    )
}

/// The names of the component's imports (interfaces and functions), for the contract on WASI use.
pub fn imports() -> Result<Vec<String>, String> {
    let (engine, component) = compiled()?;
    Ok(component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect())
}

pub struct ComponentHost {
    store: Store<HostState>,
    bindings: SpanProcessor,
}

impl ComponentHost {
    pub fn new(opts: ComponentOptions) -> Result<Self, String> {
        let (engine, component) = compiled()?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        SpanProcessor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("linker: {e:#}"))?;
        for name in imports()? {
            if name.starts_with("wasi:cli/environment@") {
                linker
                    .instance(&name)
                    .and_then(|mut i| {
                        i.func_wrap(
                            "get-environment",
                            |store: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
                                Ok((store.data().env.clone(),))
                            },
                        )
                    })
                    .map_err(|e| format!("linker: {name}: {e:#}"))?;
            }
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| format!("linker: {e:#}"))?;
        let mut store = Store::new(
            &engine,
            HostState {
                env: opts.env,
                ..HostState::default()
            },
        );
        let bindings = SpanProcessor::instantiate(&mut store, &component, &linker)
            .map_err(|e| format!("instantiate: {e:#}"))?;
        Ok(Self { store, bindings })
    }

    /// `init`; `Err` = the guest trapped.
    pub fn init(&mut self, config: &str) -> Result<Result<(), ConfigError>, String> {
        self.bindings
            .call_init(&mut self.store, config)
            .map_err(|e| format!("init trapped: {e:#}"))
    }

    /// `process`; `Err` = the guest trapped.
    pub fn process(&mut self, traces: &[u8]) -> Result<Result<Vec<u8>, ProcessError>, String> {
        self.bindings
            .call_process(&mut self.store, traces)
            .map_err(|e| format!("process trapped: {e:#}"))
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.store.data().counters.get(name).copied().unwrap_or(0)
    }
}
