//! The WIT component glue (feature `component`, wasm32-wasip2): `ordertrace:collector/span-processor`
//! from wit/ordertrace.wit, over [`crate::Processor`].
//!
//! One processor per component instance, created by `init`; the host calls the exports from one thread,
//! so a thread-local `RefCell` holds it. A re-entrant call (impossible through the canonical ABI, which
//! forbids re-entering an instance) would get `not-initialized` rather than a trap.

use std::cell::RefCell;

use crate::{CollectorConfig, ProcessError as CoreProcessError, Processor};

mod bindings {
    #![allow(
        clippy::all,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    wit_bindgen::generate!({
        path: "../../wit/ordertrace.wit",
        world: "span-processor",
    });
}

use bindings::ordertrace::collector::host::{counter_add, log, Level};
use bindings::{ConfigError, Guest, ProcessError};

thread_local! {
    static PROCESSOR: RefCell<Option<Processor>> = const { RefCell::new(None) };
}

struct Component;

impl Guest for Component {
    fn init(config: String) -> Result<(), ConfigError> {
        match CollectorConfig::from_json(config.as_bytes()) {
            Ok(c) => {
                log(Level::Info, &c.summary());
                let installed = PROCESSOR.with(|p| match p.try_borrow_mut() {
                    Ok(mut slot) => {
                        *slot = Some(Processor::new(c));
                        true
                    }
                    Err(_) => false,
                });
                if installed {
                    Ok(())
                } else {
                    Err(ConfigError {
                        field: String::new(),
                        message: "init called while a batch is being processed".into(),
                    })
                }
            }
            Err(e) => {
                log(Level::Error, &format!("configuration rejected: {e}"));
                Err(ConfigError {
                    message: e.message(),
                    field: e.field,
                })
            }
        }
    }

    fn process(traces: Vec<u8>) -> Result<Vec<u8>, ProcessError> {
        PROCESSOR.with(|p| {
            let Ok(mut slot) = p.try_borrow_mut() else {
                return Err(ProcessError::NotInitialized);
            };
            let Some(processor) = slot.as_mut() else {
                return Err(ProcessError::NotInitialized);
            };
            let (out, stats) = processor.process(&traces);
            for (name, delta) in stats.counters() {
                if delta > 0 {
                    counter_add(name, delta);
                }
            }
            match out {
                Ok(processed) => Ok(processed.into_bytes(traces)),
                Err(CoreProcessError::Malformed(m)) => {
                    log(
                        Level::Warn,
                        &format!("batch of {} bytes rejected: {m}", traces.len()),
                    );
                    Err(ProcessError::Malformed(m))
                }
            }
        })
    }
}

bindings::export!(Component with_types_in bindings);
