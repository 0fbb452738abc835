//! The otelwasm ABI glue (feature `otelwasm`, wasm32-wasip1 reactor): the collector plugin as an otelwasm
//! traces processor (`wasm` processor of an OpenTelemetry Collector built with otelwasm), over
//! [`crate::Processor`].
//!
//! The ABI, as the otelwasm host (`wasmplugin`, `wasmprocessor`) implements it:
//! - the host instantiates the module as a WASI preview-1 reactor (`_initialize`), with the process
//!   environment, and reads the exported `memory`;
//! - exports `getSupportedTelemetry() -> i32`: a bit set, metrics 1, logs 2, traces 4;
//!   `processTraces() -> i32`: a status, 0 OK, 1 ERROR, 2 INVALID_ARGUMENT;
//! - imports from module `opentelemetry.io/wasm`: `currentTraces(buf, limit) -> len` writes the batch
//!   (OTLP `TracesData` protobuf, as pdata's `ProtoMarshaler` writes it) into `buf` when it fits in
//!   `limit` bytes; `getPluginConfig(buf, limit) -> len` does the same with the `plugin_config` map as
//!   JSON; `setResultTraces(buf, len)` hands back the processed batch (it must be called on success: the
//!   host forwards what it was given); `setResultStatusReason(buf, len)` explains a non-zero status.
//!
//! The host answers 0 from `currentTraces` both when the batch is empty and when it does not fit (it does
//! not report the size, as the guest SDK's own reader expects): the buffer grows by 4x up to
//! [`MAX_BATCH_BYTES`] while the answer is 0, and stays grown for the next batches. An empty batch thus
//! costs a probe up to the limit (the collector's receivers do not forward empty batches); the buffer is
//! then freed back to the last size that held data, though the wasm memory itself cannot shrink. A host
//! that reports the size (larger than `limit`) gets one retry with a buffer of that size.
//!
//! The configuration is only readable during a `processTraces` call (the host sets it per call), so it is
//! compiled on the first batch. A configuration error fails every batch with INVALID_ARGUMENT and a reason
//! naming the field (fail closed, as the edge does at load); the collector logs it and the pipeline
//! returns the error to the sender. The compiled configuration is then kept for the instance's life.

use std::cell::RefCell;
use std::io::Write;

use crate::{CollectorConfig, ProcessError, Processor};

#[link(wasm_import_module = "opentelemetry.io/wasm")]
extern "C" {
    #[link_name = "currentTraces"]
    fn current_traces(buf: *mut u8, limit: u32) -> u32;
    #[link_name = "setResultTraces"]
    fn set_result_traces(buf: *const u8, len: u32);
    #[link_name = "getPluginConfig"]
    fn get_plugin_config(buf: *mut u8, limit: u32) -> u32;
    #[link_name = "setResultStatusReason"]
    fn set_result_status_reason(buf: *const u8, len: u32);
}

/// `getSupportedTelemetry`: traces only.
const TELEMETRY_TRACES: u32 = 1 << 2;

const STATUS_OK: u32 = 0;
const STATUS_ERROR: u32 = 1;
const STATUS_INVALID_ARGUMENT: u32 = 2;

/// The first size of the batch buffer.
pub const INITIAL_BATCH_BYTES: usize = 1 << 20;
/// The largest batch the plugin reads (the buffer grows up to this size while the host answers 0).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
const MAX_CONFIG_BYTES: usize = 1 << 20;

enum State {
    Unconfigured,
    Ready(Box<Processor>),
    /// The configuration was rejected: the reason, returned for every batch.
    Rejected(String),
}

struct Plugin {
    state: State,
    /// The batch buffer, reused; its length is its usable size.
    buf: Vec<u8>,
    /// The buffer size that held the last non-empty batch: what the buffer returns to after an empty
    /// batch made it probe up to the limit.
    fitted: usize,
}

thread_local! {
    static PLUGIN: RefCell<Plugin> = const {
        RefCell::new(Plugin { state: State::Unconfigured, buf: Vec::new(), fitted: 0 })
    };
}

#[export_name = "getSupportedTelemetry"]
pub extern "C" fn get_supported_telemetry() -> u32 {
    TELEMETRY_TRACES
}

#[export_name = "processTraces"]
pub extern "C" fn process_traces() -> u32 {
    PLUGIN.with(|p| match p.try_borrow_mut() {
        Ok(mut plugin) => plugin.process(),
        Err(_) => fail(STATUS_ERROR, "processTraces re-entered"),
    })
}

fn fail(status: u32, reason: &str) -> u32 {
    // SAFETY: the host copies `len` bytes from `buf` during the call; the slice outlives it.
    unsafe { set_result_status_reason(reason.as_ptr(), len_u32(reason.len())) };
    status
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Call a `(buf, limit) -> len` import until the value fits: `Some(len)` with the bytes in `buf[..len]`.
/// `grow_on_zero`: treat 0 as "did not fit" until `max` (see the module docs).
fn read_import(
    buf: &mut Vec<u8>,
    initial: usize,
    max: usize,
    grow_on_zero: bool,
    import: unsafe extern "C" fn(*mut u8, u32) -> u32,
) -> Option<usize> {
    if buf.len() < initial {
        buf.resize(initial, 0);
    }
    let mut size_reported = false;
    loop {
        // SAFETY: the host writes at most `limit` = `buf.len()` bytes into `buf`.
        let n = unsafe { import(buf.as_mut_ptr(), len_u32(buf.len())) } as usize;
        if n <= buf.len() && !(n == 0 && grow_on_zero && buf.len() < max) {
            return Some(n);
        }
        if n > buf.len() {
            // A host that reports the size it needs: one retry with exactly that much room.
            if size_reported || n > max {
                return None;
            }
            size_reported = true;
            buf.resize(n, 0);
        } else {
            buf.resize((buf.len() * 4).min(max), 0);
        }
    }
}

impl Plugin {
    fn configure(&mut self) {
        let mut cfg = Vec::new();
        let n = read_import(&mut cfg, 4096, MAX_CONFIG_BYTES, true, get_plugin_config);
        let json = match n.and_then(|n| cfg.get(..n)) {
            // No plugin_config in the collector YAML: the host sends `null`.
            Some(b"null") | Some(b"") => &b"{}"[..],
            Some(b) => b,
            None => {
                self.state = State::Rejected("configuration: larger than 1 MiB".into());
                return;
            }
        };
        self.state = match CollectorConfig::from_json(json) {
            Ok(c) => {
                let _ = writeln!(std::io::stderr(), "{}", c.summary());
                State::Ready(Box::new(Processor::new(c)))
            }
            Err(e) => {
                let reason = format!("ordertrace configuration rejected: {e}");
                let _ = writeln!(std::io::stderr(), "{reason}");
                State::Rejected(reason)
            }
        };
    }

    fn process(&mut self) -> u32 {
        if matches!(self.state, State::Unconfigured) {
            self.configure();
        }
        let processor = match &mut self.state {
            State::Ready(p) => p,
            State::Rejected(reason) => return fail(STATUS_INVALID_ARGUMENT, reason),
            State::Unconfigured => return fail(STATUS_ERROR, "not configured"),
        };
        let Some(n) = read_import(
            &mut self.buf,
            INITIAL_BATCH_BYTES,
            MAX_BATCH_BYTES,
            true,
            current_traces,
        ) else {
            return fail(
                STATUS_INVALID_ARGUMENT,
                "batch larger than the plugin's 64 MiB limit",
            );
        };
        if n > 0 {
            self.fitted = self.buf.len();
        } else if self.buf.len() > self.fitted.max(INITIAL_BATCH_BYTES) {
            // An empty batch (the host's 0 also means "empty"): give the probed memory back.
            self.buf = vec![0; self.fitted.max(INITIAL_BATCH_BYTES)];
            // SAFETY: a zero-length result for an empty batch.
            unsafe { set_result_traces(self.buf.as_ptr(), 0) };
            return STATUS_OK;
        }
        let input = self.buf.get(..n).unwrap_or_default();
        let (out, _stats) = processor.process(input);
        match out {
            Ok(processed) => {
                let bytes: &[u8] = match &processed {
                    crate::Processed::Unchanged => input,
                    crate::Processed::Changed(b) => b,
                };
                // SAFETY: the host copies (unmarshals) the bytes during the call.
                unsafe { set_result_traces(bytes.as_ptr(), len_u32(bytes.len())) };
                STATUS_OK
            }
            Err(ProcessError::Malformed(m)) => fail(
                STATUS_INVALID_ARGUMENT,
                &format!("not an OTLP TracesData message: {m}"),
            ),
        }
    }
}
