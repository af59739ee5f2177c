//! The inbox: inbound messages become conversations that agents work.
//!
//! - `inbound.rs`: an inbound provider event, inside the transaction that stores its webhook
//!   envelope, becomes a contact (found or created by identifier), a conversation (the contact's
//!   unresolved one on that channel account, else a new one) and an inbound message row, with a
//!   change appended to `communications.changes` — or nothing, when the provider's id was seen
//!   before.
//!
//! Conversations keep `last_message_at` through a database trigger on messages, so no writer can
//! forget it and concurrent inserts cannot move it backwards.

pub mod inbound;
