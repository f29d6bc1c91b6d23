//! The store, timed: every operation's latency goes to `causette_store_query_seconds`, by
//! operation, whichever backend answers. The wrapper itself is the store's own
//! (`storage::observed`, written from each domain's list of methods); the metrics observe it.

use std::sync::Arc;
use std::time::Duration;

use crate::storage::{DynStore, QueryObserver, observed};

use super::Metrics;

/// The metrics as the store's observer: every operation's latency, and the offline messages
/// kept.
struct StoreLatency(Arc<Metrics>);

impl QueryObserver for StoreLatency {
    fn observe(&self, operation: &'static str, elapsed: Duration, succeeded: bool) {
        self.0.store_query(operation, elapsed);
        if succeeded && operation == "push_offline" {
            self.0.offline_stored.inc();
        }
    }
}

/// Wraps `inner` so that each call is timed into `metrics`.
pub(crate) fn timed_store(inner: DynStore, metrics: Arc<Metrics>) -> DynStore {
    observed(inner, StoreLatency(metrics))
}
