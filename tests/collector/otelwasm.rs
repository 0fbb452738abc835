//! # A small otelwasm host for `dist/ordertrace-otelwasm.wasm` (plays otelwasm's `wasmprocessor`)
//!
//! The ABI as otelwasm's Go host implements it (wasmplugin/plugin.go, wasmprocessor/processor.go):
//!
//! * The module is a WASI preview-1 reactor: the host instantiates it with WASI and the process
//!   environment, runs `_initialize` when it is exported, and needs a `memory` export.
//! * `getSupportedTelemetry() -> i32` must have bit 4 (traces) for a traces processor.
//! * Per batch the host sets the batch and the plugin configuration (the collector YAML's
//!   `plugin_config` map, marshalled to JSON; `null` when absent), then calls
//!   `processTraces() -> i32`. Status 0 is success and the result is whatever the guest passed to
//!   `setResultTraces`; 1 (ERROR) and 2 (INVALID_ARGUMENT) fail the batch with the reason the guest
//!   passed to `setResultStatusReason`.
//! * Imports, module `opentelemetry.io/wasm`: `currentTraces(buf, limit) -> len` and
//!   `getPluginConfig(buf, limit) -> len` write the bytes at `buf` and return their length when they
//!   fit in `limit`, and return **0 without writing** when they do not (the Go host's
//!   `writeBytesIfUnderLimit`); [`OtelwasmOptions::report_size`] switches to the convention the guest
//!   SDK expects instead (return the needed length, write nothing). `setResultTraces(buf, len)` and
//!   `setResultStatusReason(buf, len)` copy the bytes out.
//!
//! WASI here: `environ_*` from [`OtelwasmOptions::env`], `fd_write` to stdout/stderr captured in
//! [`OtelwasmState::stderr`], no preopened directories; every other preview-1 function answers ENOSYS.
//! `proc_exit` traps. Nothing is shared between hosts except the compiled module.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wasmtime::{
    Caller, Engine, Extern, Func, Instance, Linker, Memory, Module, Store, Val, ValType,
};

pub const STATUS_OK: u32 = 0;
pub const STATUS_ERROR: u32 = 1;
pub const STATUS_INVALID_ARGUMENT: u32 = 2;
const TELEMETRY_TRACES: u32 = 1 << 2;
const OTEL: &str = "opentelemetry.io/wasm";
const WASI: &str = "wasi_snapshot_preview1";
const ENOSYS: i32 = 52;
const EBADF: i32 = 8;
/// The preview-1 functions this host implements; the others answer ENOSYS.
const DEFINED_WASI: [&str; 5] = [
    "environ_sizes_get",
    "environ_get",
    "fd_write",
    "fd_prestat_get",
    "proc_exit",
];

/// The built module (`make otelwasm-wasm`).
pub fn module_path() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("dist/ordertrace-otelwasm.wasm")
}

#[derive(Clone, Debug, Default)]
pub struct OtelwasmOptions {
    pub env: Vec<(String, String)>,
    /// Answer a too-small `limit` with the needed length (the guest SDK's convention) instead of 0.
    pub report_size: bool,
}

#[derive(Default)]
pub struct OtelwasmState {
    current: Vec<u8>,
    config: Vec<u8>,
    result: Option<Vec<u8>>,
    reason: Option<String>,
    env: Vec<(String, String)>,
    report_size: bool,
    /// Calls of `currentTraces` in the last batch (the guest's buffer probing shows here).
    pub current_calls: u32,
    pub stderr: String,
}

fn compiled() -> Result<(Engine, Module), String> {
    static CACHE: crate::compiled::Slot<Module> = std::sync::OnceLock::new();
    crate::compiled::compiled(&CACHE, &module_path(), "otelwasm-wasm", |engine, path| {
        Module::from_file(engine, path)
            .map_err(|e| format!("{} does not compile: {e:#}", path.display()))
    })
}

/// The module's imports as `module::name`.
pub fn imports() -> Result<Vec<String>, String> {
    let (_, module) = compiled()?;
    Ok(module
        .imports()
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect())
}

fn memory(caller: &mut Caller<'_, OtelwasmState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("the guest exports no memory"),
    }
}

fn read(caller: &mut Caller<'_, OtelwasmState>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let mut out = vec![0; len as usize];
    mem.read(&*caller, ptr as usize, &mut out)
        .map_err(|_| wasmtime::format_err!("read of {len} bytes at {ptr} outside memory"))?;
    Ok(out)
}

fn write(caller: &mut Caller<'_, OtelwasmState>, ptr: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as usize, bytes).map_err(|_| {
        wasmtime::format_err!("write of {} bytes at {ptr} outside memory", bytes.len())
    })
}

/// `currentTraces` / `getPluginConfig`.
fn write_if_under_limit(
    caller: &mut Caller<'_, OtelwasmState>,
    bytes: Vec<u8>,
    buf: u32,
    limit: u32,
) -> wasmtime::Result<u32> {
    let len = u32::try_from(bytes.len())?;
    if len > limit {
        return Ok(if caller.data().report_size { len } else { 0 });
    }
    write(caller, buf, &bytes)?;
    Ok(len)
}

fn wasi_errno(
    _: Caller<'_, OtelwasmState>,
    _: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    if let Some(r) = results.first_mut() {
        *r = Val::I32(ENOSYS);
    }
    Ok(())
}

pub struct OtelwasmHost {
    store: Store<OtelwasmState>,
    instance: Instance,
}

impl OtelwasmHost {
    pub fn new(opts: OtelwasmOptions) -> Result<Self, String> {
        let (engine, module) = compiled()?;
        let mut linker: Linker<OtelwasmState> = Linker::new(&engine);
        let e = |e: wasmtime::Error| format!("linker: {e:#}");
        linker
            .func_wrap(
                OTEL,
                "currentTraces",
                |mut c: Caller<'_, OtelwasmState>, buf: u32, limit: u32| {
                    c.data_mut().current_calls += 1;
                    let bytes = c.data().current.clone();
                    write_if_under_limit(&mut c, bytes, buf, limit)
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                OTEL,
                "getPluginConfig",
                |mut c: Caller<'_, OtelwasmState>, buf: u32, limit: u32| {
                    let bytes = c.data().config.clone();
                    write_if_under_limit(&mut c, bytes, buf, limit)
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                OTEL,
                "setResultTraces",
                |mut c: Caller<'_, OtelwasmState>, buf: u32, len: u32| {
                    let bytes = read(&mut c, buf, len)?;
                    c.data_mut().result = Some(bytes);
                    Ok(())
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                OTEL,
                "setResultStatusReason",
                |mut c: Caller<'_, OtelwasmState>, buf: u32, len: u32| {
                    let bytes = read(&mut c, buf, len)?;
                    c.data_mut().reason = Some(String::from_utf8_lossy(&bytes).into_owned());
                    Ok(())
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                WASI,
                "environ_sizes_get",
                |mut c: Caller<'_, OtelwasmState>, count_ptr: u32, size_ptr: u32| {
                    let env = c.data().env.clone();
                    let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
                    write(&mut c, count_ptr, &(env.len() as u32).to_le_bytes())?;
                    write(&mut c, size_ptr, &(size as u32).to_le_bytes())?;
                    Ok(0i32)
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                WASI,
                "environ_get",
                |mut c: Caller<'_, OtelwasmState>, ptrs: u32, buf: u32| {
                    let env = c.data().env.clone();
                    let mut at = buf;
                    for (i, (k, v)) in env.iter().enumerate() {
                        write(&mut c, ptrs + 4 * i as u32, &at.to_le_bytes())?;
                        let entry = format!("{k}={v}\0");
                        write(&mut c, at, entry.as_bytes())?;
                        at += entry.len() as u32;
                    }
                    Ok(0i32)
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                WASI,
                "fd_write",
                |mut c: Caller<'_, OtelwasmState>, fd: i32, iovs: u32, n: u32, written: u32| {
                    if fd != 1 && fd != 2 {
                        return Ok(EBADF);
                    }
                    let mut total = 0u32;
                    for i in 0..n {
                        let iov = read(&mut c, iovs + 8 * i, 8)?;
                        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                        let bytes = read(&mut c, ptr, len)?;
                        c.data_mut()
                            .stderr
                            .push_str(&String::from_utf8_lossy(&bytes));
                        total += len;
                    }
                    write(&mut c, written, &total.to_le_bytes())?;
                    Ok(0)
                },
            )
            .map_err(e)?;
        linker
            .func_wrap(
                WASI,
                "fd_prestat_get",
                |_: Caller<'_, OtelwasmState>, _: i32, _: u32| Ok(EBADF),
            )
            .map_err(e)?;
        linker
            .func_wrap(
                WASI,
                "proc_exit",
                |_: Caller<'_, OtelwasmState>, code: i32| -> wasmtime::Result<()> {
                    wasmtime::bail!("proc_exit({code})")
                },
            )
            .map_err(e)?;
        for import in module.imports() {
            if import.module() != WASI || DEFINED_WASI.contains(&import.name()) {
                continue;
            }
            if let wasmtime::ExternType::Func(ty) = import.ty() {
                let returns_errno =
                    ty.results().len() == 1 && ty.results().all(|r| matches!(r, ValType::I32));
                if !returns_errno {
                    return Err(format!("unexpected WASI import {}", import.name()));
                }
                let name = import.name().to_string();
                linker.func_new(WASI, &name, ty, wasi_errno).map_err(e)?;
            }
        }
        let mut store = Store::new(
            &engine,
            OtelwasmState {
                env: opts.env,
                report_size: opts.report_size,
                ..OtelwasmState::default()
            },
        );
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| format!("instantiate: {e:#}"))?;
        if instance.get_memory(&mut store, "memory").is_none() {
            return Err("the guest exports no memory".into());
        }
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)
                .and_then(|f| f.call(&mut store, ()))
                .map_err(|e| format!("_initialize: {e:#}"))?;
        }
        let mut host = Self { store, instance };
        let telemetry = host.call_u32("getSupportedTelemetry")?;
        if telemetry & TELEMETRY_TRACES == 0 {
            return Err(format!(
                "getSupportedTelemetry = {telemetry}: no traces bit"
            ));
        }
        Ok(host)
    }

    fn call_u32(&mut self, name: &str) -> Result<u32, String> {
        let f: Func = self
            .instance
            .get_func(&mut self.store, name)
            .ok_or_else(|| format!("{name} is not exported"))?;
        f.typed::<(), u32>(&self.store)
            .and_then(|f| f.call(&mut self.store, ()))
            .map_err(|e| format!("{name} trapped: {e:#}"))
    }

    /// One `processTraces` call with `config` as the plugin configuration (JSON).
    /// `Ok(Ok(result))` on status 0, `Ok(Err((status, reason)))` otherwise, `Err` on a trap.
    pub fn process(
        &mut self,
        config: &str,
        traces: &[u8],
    ) -> Result<Result<Vec<u8>, (u32, String)>, String> {
        {
            let s = self.store.data_mut();
            s.current = traces.to_vec();
            s.config = config.as_bytes().to_vec();
            s.result = None;
            s.reason = None;
            s.current_calls = 0;
        }
        let status = self.call_u32("processTraces")?;
        let s = self.store.data_mut();
        if status == STATUS_OK {
            return s
                .result
                .take()
                .map(Ok)
                .ok_or_else(|| "status 0 without setResultTraces".to_string());
        }
        Ok(Err((status, s.reason.take().unwrap_or_default())))
    }

    pub fn state(&self) -> &OtelwasmState {
        self.store.data()
    }

    /// Bytes of guest linear memory.
    pub fn memory_size(&mut self) -> usize {
        self.instance
            .get_memory(&mut self.store, "memory")
            .map_or(0, |m| m.data_size(&self.store))
    }
}
