//! The audit log of directory changes.

use super::*;

#[async_trait::async_trait]
impl AuditStore for SqlStore {
    async fn audit_log(
        &self,
        limit: u32,
        before: Option<i64>,
        search: Option<&str>,
    ) -> Result<Vec<crate::directory::AuditEntry>, Error> {
        super::directory::audit(&self.pool, limit, before, search).await
    }
}
