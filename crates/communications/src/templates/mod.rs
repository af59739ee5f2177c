//! Notification templates: a named template per tenant with one variant per channel and locale
//! (`sms`/`de-AT`, `email`/`en`, …), rendered with minijinja in strict mode. Locale resolution
//! is exact locale → its language → the template's default locale. Bodies are checked when
//! they are written, so a stored template always compiles; a variable missing at send time is
//! a 422 naming `content.template.variables.<path>`.

pub mod http;
pub mod locale;
mod reads;
pub mod render;
pub mod repository;
pub mod service;

pub use service::{Rendered, TemplateRecord, VariantRecord};
