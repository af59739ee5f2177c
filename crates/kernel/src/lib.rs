//! The shared kernel: the few types every module agrees on, and nothing of any domain.
//!
//! Belongs here: typed ids, the authenticated [`auth::Caller`] extractor, the one error type
//! that becomes an HTTP response ([`error::ApiError`]), JSON/path/query extractors whose
//! rejections are JSON errors naming the field, cursor pagination, secret wrappers, request
//! batching, pooled connections kept between batches (`kept`), and in-memory caches voided by
//! PostgreSQL notifications (`cache`).
//!
//! Must not be here: SQL against any module's schema, provider knowledge, or business rules.
//! Modules depend on the kernel; the kernel depends on no module.

pub mod auth;
pub mod batch;
pub mod cache;
pub mod crypto;
pub mod directory;
pub mod error;
pub mod extract;
pub mod ids;
pub mod kept;
pub mod pagination;
pub mod scheduling;

pub use secrecy::{ExposeSecret, SecretString};
