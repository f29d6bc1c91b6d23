//! The store with every operation observed: `store_domain!` declares a domain's trait and,
//! from the same list of methods, its implementation for `Observed`, which times each call
//! and tells a `QueryObserver` (the metrics) which operation took how long. A new store method
//! is so one edit in its trait and one in the SQL implementation.

use std::time::{Duration, Instant};

use crate::storage::{DynStore, Error, Store};

/// Told of every store operation once it is answered: how long it took and whether it
/// succeeded.
pub trait QueryObserver: Send + Sync + 'static {
    fn observe(&self, operation: &'static str, elapsed: Duration, succeeded: bool);
}

/// A store whose operations are observed.
pub struct Observed<O> {
    pub(super) inner: DynStore,
    pub(super) observer: O,
}

/// Wraps `inner` so that each operation is reported to `observer`.
pub fn observed<O: QueryObserver>(inner: DynStore, observer: O) -> DynStore {
    std::sync::Arc::new(Observed { inner, observer })
}

impl<O: QueryObserver> Observed<O> {
    /// Runs one operation and reports how long it took.
    pub(super) async fn time<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let answer = call.await;
        self.observer
            .observe(operation, started.elapsed(), answer.is_ok());
        answer
    }
}

#[async_trait::async_trait]
impl<O: QueryObserver> Store for Observed<O> {
    async fn ping(&self) -> Result<(), Error> {
        self.time("ping", self.inner.ping()).await
    }
    async fn close(&self) {
        // Closing is not a query: it waits for the others.
        self.inner.close().await
    }
}

/// Declares one domain of the store: the trait, as written, and its observed implementation.
macro_rules! store_domain {
    (
        $(#[$meta:meta])*
        pub trait $name:ident {
            $(
                $(#[$method_meta:meta])*
                async fn $method:ident(&self $(, $arg:ident : $type:ty)* $(,)?) -> $answer:ty;
            )*
        }
    ) => {
        $(#[$meta])*
        #[async_trait::async_trait]
        pub trait $name: Send + Sync {
            $(
                $(#[$method_meta])*
                async fn $method(&self $(, $arg: $type)*) -> $answer;
            )*
        }

        #[async_trait::async_trait]
        impl<O: $crate::storage::observed::QueryObserver> $name
            for $crate::storage::observed::Observed<O>
        {
            $(
                async fn $method(&self $(, $arg: $type)*) -> $answer {
                    self.time(stringify!($method), self.inner.$method($($arg),*)).await
                }
            )*
        }
    };
}

pub(super) use store_domain;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::storage::SqlStore;

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(&'static str, bool)>>>);

    impl QueryObserver for Seen {
        fn observe(&self, operation: &'static str, _: Duration, succeeded: bool) {
            self.0.lock().unwrap().push((operation, succeeded));
        }
    }

    #[tokio::test]
    async fn every_operation_is_reported_by_its_name_and_answers_as_the_store_does() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("observed.db").display()
        );
        let inner: DynStore = Arc::new(SqlStore::connect(&url, 1).await.unwrap());
        let seen = Seen::default();
        let store = observed(inner, seen.clone());
        store.create_user("eleve", &[]).await.unwrap();
        assert!(store.user_exists("eleve").await.unwrap());
        assert!(matches!(
            store.create_user("eleve", &[]).await,
            Err(Error::Conflict)
        ));
        assert_eq!(store.roster_item_count("eleve").await.unwrap(), 0);
        store.ping().await.unwrap();
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                ("create_user", true),
                ("user_exists", true),
                ("create_user", false),
                ("roster_item_count", true),
                ("ping", true)
            ]
        );
        store.close().await;
    }
}
