//! The host functions: every `env.proxy_*` import of the proxy-wasm Rust SDK 0.2.5 (ABI 0.2.1)
//! and the `wasi_snapshot_preview1` functions a Rust `wasm32-wasip1` cdylib imports, with the
//! answers Envoy gives. Nothing here panics: a harness-level problem (an import the host does not
//! know, `proc_exit`) returns an error, which wasmtime turns into a trap that ends the guest call;
//! the host records the reason and the test sees it in the `HostError`.

use wasmtime::{Caller, Error, ExternType, Func, ImportType, Result, Store};

use super::abi::{
    copy_to_guest, deserialize_pairs, len_u32, read, serialize_pairs, split_property_path, write,
    write_u32, write_u64, BufferType, LogLevel, MapType, MetricKind, Status, StreamType,
};
use super::state::{
    next_random, AfterCall, CallResponse, CallState, HeaderMap, HostState, HttpCall, LocalResponse,
    LogEntry,
};

type C<'a> = Caller<'a, HostState>;

/// Envoy's answer to an out-of-bounds pointer, recorded as a violation.
fn bad_memory(c: &mut C<'_>, import: &'static str) -> u32 {
    c.data_mut()
        .violation(
            import,
            Status::InvalidMemoryAccess,
            None,
            "pointer/length outside guest memory".into(),
        )
        .code()
}

fn bad_argument(c: &mut C<'_>, import: &'static str, map: Option<MapType>, detail: String) -> u32 {
    c.data_mut()
        .violation(import, Status::BadArgument, map, detail)
        .code()
}

fn ok(status: Status) -> Result<u32> {
    Ok(status.code())
}

/// Reads guest bytes or answers InvalidMemoryAccess from the enclosing import.
macro_rules! guest_bytes {
    ($c:expr, $import:expr, $ptr:expr, $len:expr) => {
        match read(&$c, $ptr, $len)? {
            Some(bytes) => bytes,
            None => return Ok(bad_memory(&mut $c, $import)),
        }
    };
}

/// Writes the host's answer through a guest pointer or answers InvalidMemoryAccess.
macro_rules! guest_write {
    ($c:expr, $import:expr, $write:expr) => {
        if !$write? {
            return Ok(bad_memory(&mut $c, $import));
        }
    };
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn map_name(ty: MapType) -> String {
    format!("{ty:?}")
}

// ---------------------------------------------------------------------------------------------
// Logging, time, timers.

fn proxy_log(mut c: C<'_>, level: u32, ptr: u32, len: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_log";
    let Some(level) = LogLevel::from_u32(level) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("log level {level} > Critical"),
        ));
    };
    let message = lossy(&guest_bytes!(c, IMPORT, ptr, len));
    let state = c.data_mut();
    state.logs.push(LogEntry {
        level,
        message,
        context_id: state.current_context(),
        callback: state.callback,
    });
    ok(Status::Ok)
}

fn proxy_get_log_level(mut c: C<'_>, ret: u32) -> Result<u32> {
    let level = c.data().log_level as u32;
    guest_write!(c, "proxy_get_log_level", write_u32(&mut c, ret, level));
    ok(Status::Ok)
}

fn proxy_get_current_time_nanoseconds(mut c: C<'_>, ret: u32) -> Result<u32> {
    let now = c.data().realtime_ns;
    guest_write!(
        c,
        "proxy_get_current_time_nanoseconds",
        write_u64(&mut c, ret, now)
    );
    ok(Status::Ok)
}

fn proxy_set_tick_period_milliseconds(mut c: C<'_>, period: u32) -> Result<u32> {
    c.data_mut().tick_period_ms = period;
    ok(Status::Ok)
}

// ---------------------------------------------------------------------------------------------
// Buffers.

fn proxy_get_buffer_bytes(
    mut c: C<'_>,
    ty: u32,
    start: u32,
    max_size: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_get_buffer_bytes";
    let Some(ty) = BufferType::from_u32(ty) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("buffer type {ty}"),
        ));
    };
    let Some(buffer) = c.data().buffer_for_read(ty) else {
        return ok(Status::NotFound);
    };
    let Some(end) = start.checked_add(max_size) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            "start + max_size overflows".into(),
        ));
    };
    // Envoy: never read past the end; nothing to copy is Ok with the out-pointers untouched.
    let slice = buffer
        .get(start as usize..(end as usize).min(buffer.len()))
        .unwrap_or_default();
    if slice.is_empty() {
        return ok(Status::Ok);
    }
    Ok(copy_to_guest(&mut c, slice, ptr_ptr, size_ptr)?.code())
}

fn proxy_set_buffer_bytes(
    mut c: C<'_>,
    ty: u32,
    start: u32,
    size: u32,
    ptr: u32,
    len: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_set_buffer_bytes";
    let Some(ty) = BufferType::from_u32(ty) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("buffer type {ty}"),
        ));
    };
    let data = guest_bytes!(c, IMPORT, ptr, len);
    let status = c
        .data_mut()
        .buffer_write(ty, start as usize, size as usize, &data);
    if status == Status::BadArgument {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("cannot write {ty:?} at start={start} size={size} here"),
        ));
    }
    ok(status)
}

// ---------------------------------------------------------------------------------------------
// Header maps.

fn proxy_get_header_map_pairs(mut c: C<'_>, ty: u32, ptr_ptr: u32, size_ptr: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_get_header_map_pairs";
    let Some(ty) = MapType::from_u32(ty) else {
        return Ok(bad_argument(&mut c, IMPORT, None, format!("map type {ty}")));
    };
    let bytes = match c.data().map_for_read(ty) {
        Some(map) if !map.is_empty() => serialize_pairs(map.pairs()),
        Some(_) => Vec::new(),
        None => {
            // Envoy answers Ok with an empty map: the filter silently sees no headers.
            c.data_mut().violation(
                IMPORT,
                Status::Ok,
                Some(ty),
                format!(
                    "{} is not available here; Envoy returns an empty map",
                    map_name(ty)
                ),
            );
            Vec::new()
        }
    };
    Ok(copy_to_guest(&mut c, &bytes, ptr_ptr, size_ptr)?.code())
}

fn proxy_set_header_map_pairs(mut c: C<'_>, ty: u32, ptr: u32, len: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_set_header_map_pairs";
    let Some(ty) = MapType::from_u32(ty) else {
        return Ok(bad_argument(&mut c, IMPORT, None, format!("map type {ty}")));
    };
    let bytes = guest_bytes!(c, IMPORT, ptr, len);
    let Some(pairs) = deserialize_pairs(&bytes) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            Some(ty),
            "malformed map bytes".into(),
        ));
    };
    match c.data_mut().map_for_write(ty) {
        Some(map) => {
            map.set_all(pairs);
            ok(Status::Ok)
        }
        None => Ok(bad_argument(
            &mut c,
            IMPORT,
            Some(ty),
            format!("{} is not available for writing here", map_name(ty)),
        )),
    }
}

fn proxy_get_header_map_value(
    mut c: C<'_>,
    ty: u32,
    key_ptr: u32,
    key_len: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_get_header_map_value";
    let Some(ty) = MapType::from_u32(ty) else {
        return Ok(bad_argument(&mut c, IMPORT, None, format!("map type {ty}")));
    };
    let key = lossy(&guest_bytes!(c, IMPORT, key_ptr, key_len));
    let Some(map) = c.data().map_for_read(ty) else {
        if c.data().absent_map_is_not_found() {
            return ok(Status::NotFound);
        }
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            Some(ty),
            format!(
                "read of `{key}` from {}: map not available here",
                map_name(ty)
            ),
        ));
    };
    match map.get(&key) {
        Some(value) => Ok(copy_to_guest(&mut c, value.as_bytes(), ptr_ptr, size_ptr)?.code()),
        None => ok(Status::NotFound),
    }
}

/// Shared body of add / replace / remove.
fn edit_map(
    mut c: C<'_>,
    import: &'static str,
    ty: u32,
    key_ptr: u32,
    key_len: u32,
    value: Option<(u32, u32)>,
    edit: fn(&mut HeaderMap, &str, &str),
) -> Result<u32> {
    let Some(ty) = MapType::from_u32(ty) else {
        return Ok(bad_argument(&mut c, import, None, format!("map type {ty}")));
    };
    let key = lossy(&guest_bytes!(c, import, key_ptr, key_len));
    let value = match value {
        Some((ptr, len)) => lossy(&guest_bytes!(c, import, ptr, len)),
        None => String::new(),
    };
    match c.data_mut().map_for_write(ty) {
        Some(map) => {
            edit(map, &key, &value);
            ok(Status::Ok)
        }
        None => Ok(bad_argument(
            &mut c,
            import,
            Some(ty),
            format!(
                "write of `{key}` to {}: map not available here",
                map_name(ty)
            ),
        )),
    }
}

fn proxy_add_header_map_value(
    c: C<'_>,
    ty: u32,
    kp: u32,
    kl: u32,
    vp: u32,
    vl: u32,
) -> Result<u32> {
    edit_map(
        c,
        "proxy_add_header_map_value",
        ty,
        kp,
        kl,
        Some((vp, vl)),
        |m, k, v| m.add(k, v),
    )
}

fn proxy_replace_header_map_value(
    c: C<'_>,
    ty: u32,
    kp: u32,
    kl: u32,
    vp: u32,
    vl: u32,
) -> Result<u32> {
    edit_map(
        c,
        "proxy_replace_header_map_value",
        ty,
        kp,
        kl,
        Some((vp, vl)),
        |m, k, v| m.replace(k, v),
    )
}

fn proxy_remove_header_map_value(c: C<'_>, ty: u32, kp: u32, kl: u32) -> Result<u32> {
    edit_map(
        c,
        "proxy_remove_header_map_value",
        ty,
        kp,
        kl,
        None,
        |m, k, _| m.remove(k),
    )
}

// ---------------------------------------------------------------------------------------------
// Properties and shared data.

fn proxy_get_property(
    mut c: C<'_>,
    ptr: u32,
    len: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<u32> {
    let path = split_property_path(&guest_bytes!(c, "proxy_get_property", ptr, len));
    match c.data().property(&path) {
        Some(value) => Ok(copy_to_guest(&mut c, &value, ptr_ptr, size_ptr)?.code()),
        None => ok(Status::NotFound),
    }
}

fn proxy_set_property(mut c: C<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_set_property";
    let path = split_property_path(&guest_bytes!(c, IMPORT, ptr, len));
    let value = guest_bytes!(c, IMPORT, vptr, vlen);
    ok(c.data_mut().set_property(path, value))
}

fn proxy_get_shared_data(
    mut c: C<'_>,
    kptr: u32,
    klen: u32,
    ptr_ptr: u32,
    size_ptr: u32,
    cas_ptr: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_get_shared_data";
    let key = lossy(&guest_bytes!(c, IMPORT, kptr, klen));
    let Some((value, cas)) = c.data().shared.get(&key).cloned() else {
        return ok(Status::NotFound);
    };
    let status = copy_to_guest(&mut c, &value, ptr_ptr, size_ptr)?;
    if status != Status::Ok {
        return ok(status);
    }
    guest_write!(c, IMPORT, write_u32(&mut c, cas_ptr, cas));
    ok(Status::Ok)
}

fn proxy_set_shared_data(
    mut c: C<'_>,
    kptr: u32,
    klen: u32,
    vptr: u32,
    vlen: u32,
    cas: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_set_shared_data";
    let key = lossy(&guest_bytes!(c, IMPORT, kptr, klen));
    let value = guest_bytes!(c, IMPORT, vptr, vlen);
    ok(c.data_mut().shared_set(key, value, cas))
}

fn proxy_register_shared_queue(mut c: C<'_>, ptr: u32, len: u32, ret: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_register_shared_queue";
    let name = lossy(&guest_bytes!(c, IMPORT, ptr, len));
    let queues = &mut c.data_mut().queues;
    let index = match queues.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            queues.push((name, Vec::new()));
            queues.len() - 1
        }
    };
    guest_write!(c, IMPORT, write_u32(&mut c, ret, len_u32(index + 1)));
    ok(Status::Ok)
}

fn proxy_resolve_shared_queue(
    mut c: C<'_>,
    _vm_ptr: u32,
    _vm_len: u32,
    ptr: u32,
    len: u32,
    ret: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_resolve_shared_queue";
    let name = lossy(&guest_bytes!(c, IMPORT, ptr, len));
    let Some(index) = c.data().queues.iter().position(|(n, _)| *n == name) else {
        return ok(Status::NotFound);
    };
    guest_write!(c, IMPORT, write_u32(&mut c, ret, len_u32(index + 1)));
    ok(Status::Ok)
}

fn proxy_enqueue_shared_queue(mut c: C<'_>, token: u32, ptr: u32, len: u32) -> Result<u32> {
    let data = guest_bytes!(c, "proxy_enqueue_shared_queue", ptr, len);
    let index = (token as usize).wrapping_sub(1);
    match c.data_mut().queues.get_mut(index) {
        Some((_, items)) => {
            items.push(data);
            ok(Status::Ok)
        }
        None => ok(Status::NotFound),
    }
}

fn proxy_dequeue_shared_queue(
    mut c: C<'_>,
    token: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<u32> {
    let index = (token as usize).wrapping_sub(1);
    let item = match c.data_mut().queues.get_mut(index) {
        None => return ok(Status::NotFound),
        Some((_, items)) if items.is_empty() => return ok(Status::Empty),
        Some((_, items)) => items.remove(0),
    };
    Ok(copy_to_guest(&mut c, &item, ptr_ptr, size_ptr)?.code())
}

// ---------------------------------------------------------------------------------------------
// Stream control.

fn proxy_continue_stream(mut c: C<'_>, ty: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_continue_stream";
    let Some(ty) = StreamType::from_u32(ty) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("stream type {ty}"),
        ));
    };
    let state = c.data_mut();
    let context_id = state.current_context();
    let Some(stream) = state.streams.get_mut(&context_id) else {
        // A root context has no decoder/encoder callbacks: Envoy does nothing.
        return ok(Status::Ok);
    };
    let request = match ty {
        StreamType::HttpRequest => true,
        StreamType::HttpResponse => false,
        StreamType::Downstream => return ok(Status::Ok),
        StreamType::Upstream => return ok(Status::Unimplemented),
    };
    stream.half_mut(request).resumed = true;
    // Envoy's continueStream drops its pointers to the *request* maps and body (for either
    // direction), then resumes after the VM call returns.
    stream.request.headers_live = false;
    stream.request.trailers_live = false;
    stream.request.body_live = false;
    state.after_call.push(AfterCall::Resume {
        context_id,
        request,
    });
    ok(Status::Ok)
}

fn proxy_close_stream(mut c: C<'_>, ty: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_close_stream";
    if StreamType::from_u32(ty).is_none() {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("stream type {ty}"),
        ));
    }
    let state = c.data_mut();
    let id = state.current_context();
    if let Some(stream) = state.streams.get_mut(&id) {
        stream.closed.push(ty);
    }
    ok(Status::Ok)
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut c: C<'_>,
    status: u32,
    details_ptr: u32,
    details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    grpc_status: i32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_send_local_response";
    let details = lossy(&guest_bytes!(c, IMPORT, details_ptr, details_len));
    let body = guest_bytes!(c, IMPORT, body_ptr, body_len);
    let header_bytes = guest_bytes!(c, IMPORT, headers_ptr, headers_len);
    let headers = HeaderMap::from_bytes_pairs(deserialize_pairs(&header_bytes).unwrap_or_default());
    let state = c.data_mut();
    let id = state.current_context();
    let Some(stream) = state.streams.get_mut(&id) else {
        return ok(Status::Ok);
    };
    if stream.local_response.is_some() {
        // Envoy's `local_reply_hold_`.
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            "second local response on one stream".into(),
        ));
    }
    stream.local_response = Some(LocalResponse {
        status,
        details,
        body,
        headers,
        grpc_status,
    });
    ok(Status::Ok)
}

fn proxy_set_effective_context(mut c: C<'_>, id: u32) -> Result<u32> {
    if !c.data().context_exists(id) {
        return Ok(bad_argument(
            &mut c,
            "proxy_set_effective_context",
            None,
            format!("no context {id}"),
        ));
    }
    c.data_mut().effective = id;
    ok(Status::Ok)
}

fn proxy_done(mut c: C<'_>) -> Result<u32> {
    c.data_mut().done_calls += 1;
    ok(Status::Ok)
}

fn proxy_get_status(mut c: C<'_>, code_ptr: u32, ptr_ptr: u32, size_ptr: u32) -> Result<u32> {
    let (code, message) = c.data().status.clone();
    guest_write!(c, "proxy_get_status", write_u32(&mut c, code_ptr, code));
    Ok(copy_to_guest(&mut c, message.as_bytes(), ptr_ptr, size_ptr)?.code())
}

fn proxy_call_foreign_function(
    mut c: C<'_>,
    name_ptr: u32,
    name_len: u32,
    _args_ptr: u32,
    _args_len: u32,
    _ret_ptr: u32,
    _ret_len: u32,
) -> Result<u32> {
    let _ = guest_bytes!(c, "proxy_call_foreign_function", name_ptr, name_len);
    // No foreign functions are registered in this host.
    ok(Status::NotFound)
}

// ---------------------------------------------------------------------------------------------
// HTTP and gRPC calls.

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut c: C<'_>,
    cluster_ptr: u32,
    cluster_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    body_ptr: u32,
    body_len: u32,
    trailers_ptr: u32,
    trailers_len: u32,
    timeout_ms: u32,
    token_ptr: u32,
) -> Result<u32> {
    const IMPORT: &str = "proxy_http_call";
    let cluster = lossy(&guest_bytes!(c, IMPORT, cluster_ptr, cluster_len));
    let header_bytes = guest_bytes!(c, IMPORT, headers_ptr, headers_len);
    let body = guest_bytes!(c, IMPORT, body_ptr, body_len);
    let trailer_bytes = guest_bytes!(c, IMPORT, trailers_ptr, trailers_len);
    // cpp-host writes a 0 token first to check the pointer.
    guest_write!(c, IMPORT, write_u32(&mut c, token_ptr, 0));
    let (Some(headers), Some(trailers)) = (
        deserialize_pairs(&header_bytes),
        deserialize_pairs(&trailer_bytes),
    ) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            "malformed header or trailer map".into(),
        ));
    };
    let headers = HeaderMap::from_bytes_pairs(headers);
    let trailers = HeaderMap::from_bytes_pairs(trailers);
    // Envoy's checks, in order.
    if i32::try_from(timeout_ms).is_err() {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("timeout {timeout_ms} ms is negative as an int"),
        ));
    }
    let clusters = &c.data().clusters;
    if !clusters.is_empty() && !clusters.contains(&cluster) {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("unknown cluster `{cluster}`"),
        ));
    }
    for required in [":path", ":method", ":authority"] {
        if !headers.contains(required) {
            return Ok(bad_argument(
                &mut c,
                IMPORT,
                None,
                format!("call to `{cluster}` without `{required}`"),
            ));
        }
    }
    let state = c.data_mut();
    let token = state.next_token;
    state.next_token = state.next_token.wrapping_add(1).max(1);
    state.calls.push(HttpCall {
        token,
        cluster,
        headers,
        body,
        trailers,
        timeout_ms,
        dispatched_from: state.current_context(),
        dispatched_at_ns: state.realtime_ns,
        state: CallState::Pending,
    });
    guest_write!(c, IMPORT, write_u32(&mut c, token_ptr, token));
    ok(Status::Ok)
}

/// gRPC calls: this host has no gRPC upstreams. Envoy answers InternalFailure when it cannot
/// start the call, which the SDK turns into `Err`.
fn grpc_unavailable(mut c: C<'_>) -> Result<u32> {
    c.data_mut().grpc_attempts += 1;
    ok(Status::InternalFailure)
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    c: C<'_>,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
) -> Result<u32> {
    grpc_unavailable(c)
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    c: C<'_>,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
    _: u32,
) -> Result<u32> {
    grpc_unavailable(c)
}

fn proxy_grpc_send(_c: C<'_>, _token: u32, _ptr: u32, _len: u32, _end: u32) -> Result<u32> {
    ok(Status::NotFound)
}

fn proxy_grpc_cancel(_c: C<'_>, _token: u32) -> Result<u32> {
    ok(Status::NotFound)
}

fn proxy_grpc_close(_c: C<'_>, _token: u32) -> Result<u32> {
    ok(Status::NotFound)
}

// ---------------------------------------------------------------------------------------------
// Metrics.

fn proxy_define_metric(mut c: C<'_>, kind: u32, ptr: u32, len: u32, ret: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_define_metric";
    let Some(kind) = MetricKind::from_u32(kind) else {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            format!("metric type {kind}"),
        ));
    };
    let name = lossy(&guest_bytes!(c, IMPORT, ptr, len));
    let id = c.data_mut().define_metric(kind, &name);
    guest_write!(c, IMPORT, write_u32(&mut c, ret, id));
    ok(Status::Ok)
}

fn proxy_increment_metric(mut c: C<'_>, id: u32, offset: i64) -> Result<u32> {
    const IMPORT: &str = "proxy_increment_metric";
    let Some(metric) = c.data_mut().metric_mut(id) else {
        return ok(Status::NotFound);
    };
    match metric.kind {
        // Envoy: a counter only takes a positive offset; 0 or negative is BadArgument.
        MetricKind::Counter if offset <= 0 => {
            let name = metric.name.clone();
            Ok(bad_argument(
                &mut c,
                IMPORT,
                None,
                format!("counter `{name}` incremented by {offset}"),
            ))
        }
        MetricKind::Counter | MetricKind::Gauge => {
            metric.value = metric.value.saturating_add(offset);
            ok(Status::Ok)
        }
        MetricKind::Histogram => {
            let name = metric.name.clone();
            Ok(bad_argument(
                &mut c,
                IMPORT,
                None,
                format!("histogram `{name}` cannot be incremented"),
            ))
        }
    }
}

fn proxy_record_metric(mut c: C<'_>, id: u32, value: u64) -> Result<u32> {
    let Some(metric) = c.data_mut().metric_mut(id) else {
        return ok(Status::NotFound);
    };
    let signed = i64::try_from(value).unwrap_or(i64::MAX);
    match metric.kind {
        // Envoy: recording on a counter adds.
        MetricKind::Counter => metric.value = metric.value.saturating_add(signed),
        MetricKind::Gauge => metric.value = signed,
        MetricKind::Histogram => metric.samples.push(value),
    }
    ok(Status::Ok)
}

fn proxy_get_metric(mut c: C<'_>, id: u32, ret: u32) -> Result<u32> {
    const IMPORT: &str = "proxy_get_metric";
    let Some(metric) = c.data_mut().metric_mut(id) else {
        return ok(Status::NotFound);
    };
    if metric.kind == MetricKind::Histogram {
        return Ok(bad_argument(
            &mut c,
            IMPORT,
            None,
            "histograms cannot be read".into(),
        ));
    }
    let value = metric.value as u64;
    guest_write!(c, IMPORT, write_u64(&mut c, ret, value));
    ok(Status::Ok)
}

// ---------------------------------------------------------------------------------------------
// WASI (wasi_snapshot_preview1), answered like Envoy's cpp-host, deterministically.

const WASI_SUCCESS: u32 = 0;
const WASI_EBADF: u32 = 8;
const WASI_EFAULT: u32 = 21;
const WASI_EINVAL: u32 = 28;
const WASI_ENOSYS: u32 = 52;
const WASI_ENOTSUP: u32 = 58;

fn wasi_fault(ok: bool) -> u32 {
    if ok {
        WASI_SUCCESS
    } else {
        WASI_EFAULT
    }
}

fn args_get(_c: C<'_>, _argv: u32, _buf: u32) -> Result<u32> {
    Ok(WASI_SUCCESS)
}

fn args_sizes_get(mut c: C<'_>, argc_ptr: u32, size_ptr: u32) -> Result<u32> {
    Ok(wasi_fault(
        write_u32(&mut c, argc_ptr, 0)? && write_u32(&mut c, size_ptr, 0)?,
    ))
}

fn environ_get(mut c: C<'_>, mut array_ptr: u32, mut buf_ptr: u32) -> Result<u32> {
    let env = c.data().env.clone();
    for (k, v) in env {
        let entry = format!("{k}={v}\0");
        if !write_u32(&mut c, array_ptr, buf_ptr)? || !write(&mut c, buf_ptr, entry.as_bytes())? {
            return Ok(WASI_EFAULT);
        }
        array_ptr = array_ptr.wrapping_add(4);
        buf_ptr = buf_ptr.wrapping_add(len_u32(entry.len()));
    }
    Ok(WASI_SUCCESS)
}

fn environ_sizes_get(mut c: C<'_>, count_ptr: u32, size_ptr: u32) -> Result<u32> {
    let env = &c.data().env;
    let count = len_u32(env.len());
    let size = len_u32(env.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    Ok(wasi_fault(
        write_u32(&mut c, count_ptr, count)? && write_u32(&mut c, size_ptr, size)?,
    ))
}

fn clock_res_get(mut c: C<'_>, id: u32, ret: u32) -> Result<u32> {
    if id > 1 {
        return Ok(WASI_EINVAL);
    }
    Ok(wasi_fault(write_u64(&mut c, ret, 1)?))
}

fn clock_time_get(mut c: C<'_>, id: u32, _precision: u64, ret: u32) -> Result<u32> {
    let now = match id {
        0 => c.data().realtime_ns,
        1 => c.data().monotonic_ns,
        _ => return Ok(WASI_ENOTSUP),
    };
    Ok(wasi_fault(write_u64(&mut c, ret, now)?))
}

/// stdout and stderr go to the log (Envoy logs them at info and error, without the final
/// newline); other descriptors are EBADF.
fn fd_write(mut c: C<'_>, fd: u32, iovs: u32, iovs_len: u32, nwritten_ptr: u32) -> Result<u32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(WASI_EBADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len {
        let Some(iov) = read(&c, iovs.wrapping_add(i.wrapping_mul(8)), 8)? else {
            return Ok(WASI_EFAULT);
        };
        let word = |at: usize| {
            iov.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .unwrap_or(0)
        };
        let Some(bytes) = read(&c, word(0), word(4))? else {
            return Ok(WASI_EFAULT);
        };
        text.extend_from_slice(&bytes);
    }
    let written = len_u32(text.len());
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    if written > 0 {
        let state = c.data_mut();
        state.logs.push(LogEntry {
            level,
            message: lossy(&text),
            context_id: state.current_context(),
            callback: state.callback,
        });
    }
    Ok(wasi_fault(write_u32(&mut c, nwritten_ptr, written)?))
}

fn fd_read(_c: C<'_>, _fd: u32, _iovs: u32, _len: u32, _nread: u32) -> Result<u32> {
    Ok(WASI_ENOSYS)
}

fn fd_seek(_c: C<'_>, _fd: u32, _offset: i64, _whence: u32, _ret: u32) -> Result<u32> {
    Ok(WASI_SUCCESS)
}

fn fd_close(_c: C<'_>, _fd: u32) -> Result<u32> {
    Ok(WASI_SUCCESS)
}

fn fd_fdstat_get(mut c: C<'_>, fd: u32, ret: u32) -> Result<u32> {
    if fd != 1 && fd != 2 {
        return Ok(WASI_EBADF);
    }
    // filetype 0, flags 0, rights_base = FD_WRITE (64), rights_inheriting 0.
    let mut stat = [0u8; 24];
    if let Some(rights) = stat.get_mut(8..16) {
        rights.copy_from_slice(&64u64.to_le_bytes());
    }
    Ok(wasi_fault(write(&mut c, ret, &stat)?))
}

fn fd_prestat_get(_c: C<'_>, _fd: u32, _ret: u32) -> Result<u32> {
    Ok(WASI_EBADF)
}

fn fd_prestat_dir_name(_c: C<'_>, _fd: u32, _ptr: u32, _len: u32) -> Result<u32> {
    Ok(WASI_EBADF)
}

fn sched_yield(_c: C<'_>) -> Result<u32> {
    Ok(WASI_SUCCESS)
}

fn poll_oneoff(_c: C<'_>, _in: u32, _out: u32, _n: u32, _ret: u32) -> Result<u32> {
    Ok(WASI_ENOSYS)
}

fn random_get(mut c: C<'_>, ptr: u32, len: u32) -> Result<u32> {
    let mut bytes = Vec::with_capacity(len as usize);
    while bytes.len() < len as usize {
        let word = next_random(&mut c.data_mut().rng);
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.truncate(len as usize);
    Ok(wasi_fault(write(&mut c, ptr, &bytes)?))
}

fn proc_exit(mut c: C<'_>, code: u32) -> Result<()> {
    c.data_mut()
        .unknown_called
        .push(format!("wasi_snapshot_preview1.proc_exit({code})"));
    Err(Error::msg(format!(
        "the guest called proc_exit({code}); Envoy would log it and the VM would trap"
    )))
}

// ---------------------------------------------------------------------------------------------
// Linking.

/// The host function for one import, or `None` when this host does not implement it.
fn host_func(store: &mut Store<HostState>, module: &str, name: &str) -> Option<Func> {
    let s = &mut *store;
    let f = match (module, name) {
        ("env", "proxy_log") => Func::wrap(s, proxy_log),
        ("env", "proxy_get_log_level") => Func::wrap(s, proxy_get_log_level),
        ("env", "proxy_get_current_time_nanoseconds") => {
            Func::wrap(s, proxy_get_current_time_nanoseconds)
        }
        ("env", "proxy_set_tick_period_milliseconds") => {
            Func::wrap(s, proxy_set_tick_period_milliseconds)
        }
        ("env", "proxy_get_buffer_bytes") => Func::wrap(s, proxy_get_buffer_bytes),
        ("env", "proxy_set_buffer_bytes") => Func::wrap(s, proxy_set_buffer_bytes),
        ("env", "proxy_get_header_map_pairs") => Func::wrap(s, proxy_get_header_map_pairs),
        ("env", "proxy_set_header_map_pairs") => Func::wrap(s, proxy_set_header_map_pairs),
        ("env", "proxy_get_header_map_value") => Func::wrap(s, proxy_get_header_map_value),
        ("env", "proxy_add_header_map_value") => Func::wrap(s, proxy_add_header_map_value),
        ("env", "proxy_replace_header_map_value") => Func::wrap(s, proxy_replace_header_map_value),
        ("env", "proxy_remove_header_map_value") => Func::wrap(s, proxy_remove_header_map_value),
        ("env", "proxy_get_property") => Func::wrap(s, proxy_get_property),
        ("env", "proxy_set_property") => Func::wrap(s, proxy_set_property),
        ("env", "proxy_get_shared_data") => Func::wrap(s, proxy_get_shared_data),
        ("env", "proxy_set_shared_data") => Func::wrap(s, proxy_set_shared_data),
        ("env", "proxy_register_shared_queue") => Func::wrap(s, proxy_register_shared_queue),
        ("env", "proxy_resolve_shared_queue") => Func::wrap(s, proxy_resolve_shared_queue),
        ("env", "proxy_enqueue_shared_queue") => Func::wrap(s, proxy_enqueue_shared_queue),
        ("env", "proxy_dequeue_shared_queue") => Func::wrap(s, proxy_dequeue_shared_queue),
        ("env", "proxy_continue_stream") => Func::wrap(s, proxy_continue_stream),
        ("env", "proxy_close_stream") => Func::wrap(s, proxy_close_stream),
        ("env", "proxy_send_local_response") => Func::wrap(s, proxy_send_local_response),
        ("env", "proxy_set_effective_context") => Func::wrap(s, proxy_set_effective_context),
        ("env", "proxy_done") => Func::wrap(s, proxy_done),
        ("env", "proxy_get_status") => Func::wrap(s, proxy_get_status),
        ("env", "proxy_call_foreign_function") => Func::wrap(s, proxy_call_foreign_function),
        ("env", "proxy_http_call") => Func::wrap(s, proxy_http_call),
        ("env", "proxy_grpc_call") => Func::wrap(s, proxy_grpc_call),
        ("env", "proxy_grpc_stream") => Func::wrap(s, proxy_grpc_stream),
        ("env", "proxy_grpc_send") => Func::wrap(s, proxy_grpc_send),
        ("env", "proxy_grpc_cancel") => Func::wrap(s, proxy_grpc_cancel),
        ("env", "proxy_grpc_close") => Func::wrap(s, proxy_grpc_close),
        ("env", "proxy_define_metric") => Func::wrap(s, proxy_define_metric),
        ("env", "proxy_increment_metric") => Func::wrap(s, proxy_increment_metric),
        ("env", "proxy_record_metric") => Func::wrap(s, proxy_record_metric),
        ("env", "proxy_get_metric") => Func::wrap(s, proxy_get_metric),
        ("wasi_snapshot_preview1", "args_get") => Func::wrap(s, args_get),
        ("wasi_snapshot_preview1", "args_sizes_get") => Func::wrap(s, args_sizes_get),
        ("wasi_snapshot_preview1", "environ_get") => Func::wrap(s, environ_get),
        ("wasi_snapshot_preview1", "environ_sizes_get") => Func::wrap(s, environ_sizes_get),
        ("wasi_snapshot_preview1", "clock_res_get") => Func::wrap(s, clock_res_get),
        ("wasi_snapshot_preview1", "clock_time_get") => Func::wrap(s, clock_time_get),
        ("wasi_snapshot_preview1", "fd_write") => Func::wrap(s, fd_write),
        ("wasi_snapshot_preview1", "fd_read") => Func::wrap(s, fd_read),
        ("wasi_snapshot_preview1", "fd_seek") => Func::wrap(s, fd_seek),
        ("wasi_snapshot_preview1", "fd_close") => Func::wrap(s, fd_close),
        ("wasi_snapshot_preview1", "fd_fdstat_get") => Func::wrap(s, fd_fdstat_get),
        ("wasi_snapshot_preview1", "fd_prestat_get") => Func::wrap(s, fd_prestat_get),
        ("wasi_snapshot_preview1", "fd_prestat_dir_name") => Func::wrap(s, fd_prestat_dir_name),
        ("wasi_snapshot_preview1", "sched_yield") => Func::wrap(s, sched_yield),
        ("wasi_snapshot_preview1", "poll_oneoff") => Func::wrap(s, poll_oneoff),
        ("wasi_snapshot_preview1", "random_get") => Func::wrap(s, random_get),
        ("wasi_snapshot_preview1", "proc_exit") => Func::wrap(s, proc_exit),
        _ => return None,
    };
    Some(f)
}

/// A stand-in for an import the host cannot serve: calling it records the name and traps.
fn trap_stub(
    store: &mut Store<HostState>,
    ty: wasmtime::FuncType,
    label: String,
    why: String,
) -> Func {
    Func::new(store, ty, move |mut caller, _params, _results| {
        caller.data_mut().unknown_called.push(label.clone());
        Err(Error::msg(format!("the guest called `{label}`: {why}")))
    })
}

/// Resolves every import of the module. Returns the externs in import order and the list of
/// imports the host does not implement (each with the reason), which are linked to trapping
/// stubs so that the module still instantiates and only a call to one fails the test.
pub fn resolve(
    store: &mut Store<HostState>,
    imports: Vec<ImportType<'_>>,
) -> std::result::Result<(Vec<wasmtime::Extern>, Vec<String>), String> {
    let mut externs = Vec::with_capacity(imports.len());
    let mut missing = Vec::new();
    for import in imports {
        let label = format!("{}.{}", import.module(), import.name());
        let ExternType::Func(wanted) = import.ty() else {
            return Err(format!(
                "import `{label}` is not a function ({:?}); the test host only provides functions",
                import.ty()
            ));
        };
        let func = match host_func(store, import.module(), import.name()) {
            Some(f) if f.ty(&*store).matches(&wanted) => f,
            Some(f) => {
                let why = format!(
                    "declared as {wanted:?} but the host implements {:?}",
                    f.ty(&*store)
                );
                missing.push(format!("{label} ({why})"));
                trap_stub(store, wanted, label, why)
            }
            None => {
                missing.push(label.clone());
                trap_stub(
                    store,
                    wanted,
                    label,
                    "the ordertrace test host does not implement this import".into(),
                )
            }
        };
        externs.push(func.into());
    }
    Ok((externs, missing))
}

/// Makes the answer of a finished HTTP call readable by the guest (`CallResponse`) and records it.
pub fn answer_call(
    state: &mut HostState,
    token: u32,
    response: Option<CallResponse>,
) -> Option<HttpCall> {
    let call = state
        .calls
        .iter_mut()
        .find(|c| c.token == token && c.state == CallState::Pending)?;
    call.state = match &response {
        Some(r) => CallState::Answered {
            status: r
                .headers
                .get(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        },
        None => CallState::Failed,
    };
    let call = call.clone();
    state.status = match response {
        Some(_) => (0, String::new()),
        // Envoy: BrokenConnection, "reset".
        None => (11, "reset".into()),
    };
    state.call_response = response;
    Some(call)
}
