//! Narrow questions one module asks another, answered by the server's wiring: a module never
//! reads another's schema.

use std::future::Future;
use std::pin::Pin;

use crate::error::ApiError;
use crate::ids::{AgentId, TenantId};

/// A future the directory answers with.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// Who the tenant's agents are (identity answers; the inbox asks before assigning).
pub trait AgentDirectory: Send + Sync + std::fmt::Debug {
    /// Whether `agent` is an agent of `tenant`.
    fn is_agent(&self, tenant: TenantId, agent: AgentId) -> Answer<'_, bool>;
}
