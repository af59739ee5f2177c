//! Merging two contacts of a tenant, in one transaction: the merged contact's identifiers,
//! conversations and messages move to the survivor; the merged contact stays as a pointer
//! (`merged_into`) so old links resolve; an audit row says who did it and what moved.
//!
//! - Identifiers: their primary key is (tenant, kind, value), so the survivor can never already
//!   hold one of the merged contact's identifiers — they all move with one UPDATE, and inbound
//!   lookups by identifier find the survivor from the commit on.
//! - Conversations: the partial unique index allows one unresolved conversation per contact,
//!   channel and account. Where both contacts have one, the merged contact's messages, notes and
//!   labels move into the survivor's, and the emptied conversation is resolved with
//!   `merged_into_conversation` pointing there; nothing is deleted.
//! - Both contacts are locked in id order, so opposite concurrent merges (A into B, B into A)
//!   cannot deadlock: the second sees the first's result and is refused.

use kernel::auth::{Actor, Caller};
use kernel::error::ApiError;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::inbound::record_change;

/// Merges `merged` into `survivor` for the caller's tenant. Repeating a merge that happened
/// already changes nothing (it only moves what may have reached the merged contact since, e.g.
/// an inbound message that was being stored during the merge).
pub async fn merge(tx: &mut PgConnection, caller: Caller, merged: Uuid, survivor: Uuid) -> Result<(), ApiError> {
    let tenant = caller.tenant_id.0;
    let locked = sqlx::query!(
        r#"SELECT id, merged_into FROM communications.contacts
           WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE"#,
        tenant,
        &[merged, survivor],
    )
    .fetch_all(&mut *tx)
    .await?;
    let pointer_of = |id: Uuid| locked.iter().find(|row| row.id == id).map(|row| row.merged_into);
    let merged_pointer = pointer_of(merged).ok_or(ApiError::NotFound("contact"))?;
    let survivor_pointer = pointer_of(survivor).ok_or(ApiError::NotFound("contact"))?;
    if merged == survivor {
        return Err(ApiError::validation("into", "a contact cannot be merged into itself"));
    }
    match merged_pointer {
        Some(already) if already == survivor => {
            move_everything(tx, tenant, merged, survivor).await?;
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::conflict(Some("into"), format!("this contact was merged into {other} already")));
        }
        None => {}
    }
    if let Some(next) = survivor_pointer {
        return Err(ApiError::validation("into", format!("that contact was merged into {next}: merge into that one")));
    }
    let moved = move_everything(tx, tenant, merged, survivor).await?;
    // Pointers to the merged contact follow it, so no pointer leads to another pointer.
    sqlx::query!(
        r#"UPDATE communications.contacts SET
               merged_into = $3, merged_at = CASE WHEN id = $2 THEN now() ELSE merged_at END, updated_at = now()
           WHERE tenant_id = $1 AND (id = $2 OR merged_into = $2)"#,
        tenant,
        merged,
        survivor,
    )
    .execute(&mut *tx)
    .await?;
    // What the survivor does not know yet, it learns from the merged contact.
    sqlx::query!(
        r#"UPDATE communications.contacts s SET
               display_name = COALESCE(s.display_name, m.display_name),
               external_id = COALESCE(s.external_id, m.external_id),
               updated_at = now()
           FROM communications.contacts m
           WHERE s.id = $1 AND m.id = $2"#,
        survivor,
        merged,
    )
    .execute(&mut *tx)
    .await?;
    let (agent_id, api_key_id) = match caller.actor {
        Actor::Agent { id, .. } => (Some(id.0), None),
        Actor::ApiKey(key) => (None, Some(key.0)),
    };
    sqlx::query!(
        r#"INSERT INTO communications.contact_merges (id, tenant_id, merged_id, survivor_id, agent_id, api_key_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        Uuid::now_v7(),
        tenant,
        merged,
        survivor,
        agent_id,
        api_key_id,
        moved,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves identifiers, conversations and messages from `merged` to `survivor`; answers what moved
/// (the audit's details).
async fn move_everything(
    tx: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
    survivor: Uuid,
) -> Result<serde_json::Value, ApiError> {
    let identifiers = sqlx::query!(
        "UPDATE communications.contact_identifiers SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
        tenant,
        merged,
        survivor,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();

    let conversations = sqlx::query!(
        r#"SELECT id, channel, channel_account_id, status, assignee_id FROM communications.conversations
           WHERE tenant_id = $1 AND contact_id = $2 ORDER BY id FOR UPDATE"#,
        tenant,
        merged,
    )
    .fetch_all(&mut *tx)
    .await?;
    let (mut moved, mut folded) = (Vec::new(), Vec::new());
    for conversation in &conversations {
        let target = if conversation.status == "resolved" {
            None
        } else {
            sqlx::query_scalar!(
                r#"SELECT id FROM communications.conversations
                   WHERE tenant_id = $1 AND contact_id = $2 AND channel = $3
                     AND channel_account_id IS NOT DISTINCT FROM $4 AND status <> 'resolved'
                   FOR UPDATE"#,
                tenant,
                survivor,
                conversation.channel,
                conversation.channel_account_id,
            )
            .fetch_optional(&mut *tx)
            .await?
        };
        match target {
            None => {
                sqlx::query!(
                    "UPDATE communications.conversations SET contact_id = $2, updated_at = now() WHERE id = $1",
                    conversation.id,
                    survivor,
                )
                .execute(&mut *tx)
                .await
                .map_err(|error| racing_inbound(error.into()))?;
                let payload = json!({ "contact_id": survivor, "merged_contact_id": merged });
                record_change(tx, tenant, "conversation.updated", conversation.id, None, payload).await?;
                moved.push(conversation.id);
            }
            Some(target) => {
                fold(tx, tenant, conversation.id, target, survivor, &conversation.status, conversation.assignee_id)
                    .await?;
                folded.push(json!({ "from": conversation.id, "into": target }));
            }
        }
    }

    super::participants::merge(tx, tenant, merged, survivor).await?;
    // The rest of the merged contact's messages (outbound ones, those outside a conversation).
    let messages = sqlx::query!(
        "UPDATE communications.messages SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
        tenant,
        merged,
        survivor,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(json!({ "identifiers": identifiers, "conversations": moved, "folded": folded, "messages": messages }))
}

/// Moves conversation `from` (the merged contact's, unresolved) into `into` (the survivor's
/// unresolved one on the same account): its messages, notes and labels go there, and `from` is
/// resolved with a pointer. An open `from` wakes a snoozed `into`; an unassigned `into` takes
/// `from`'s assignee, so nobody's work disappears.
async fn fold(
    tx: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    into: Uuid,
    survivor: Uuid,
    from_status: &str,
    from_assignee: Option<Uuid>,
) -> Result<(), ApiError> {
    // The messages' trigger moves `into`'s activity times forward (never back).
    sqlx::query!(
        "UPDATE communications.messages SET conversation_id = $2, contact_id = $3 WHERE conversation_id = $1",
        from,
        into,
        survivor,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE communications.conversation_notes SET conversation_id = $2 WHERE conversation_id = $1",
        from,
        into
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"INSERT INTO communications.conversation_labels (conversation_id, label_id)
           SELECT $2, label_id FROM communications.conversation_labels WHERE conversation_id = $1
           ON CONFLICT DO NOTHING"#,
        from,
        into,
    )
    .execute(&mut *tx)
    .await?;
    // Resolved in the same statement that gives it the survivor: the unique index never sees two
    // unresolved conversations of the survivor on this account.
    sqlx::query!(
        r#"UPDATE communications.conversations SET status = 'resolved', snoozed_until = NULL, contact_id = $2,
                  merged_into_conversation = $3, updated_at = now()
           WHERE id = $1"#,
        from,
        survivor,
        into,
    )
    .execute(&mut *tx)
    .await?;
    let target = sqlx::query!(
        r#"UPDATE communications.conversations SET
               status = CASE WHEN $2 = 'open' THEN 'open' ELSE status END,
               snoozed_until = CASE WHEN $2 = 'open' THEN NULL ELSE snoozed_until END,
               assignee_id = COALESCE(assignee_id, $3),
               updated_at = now()
           WHERE id = $1
           RETURNING status, assignee_id, snoozed_until"#,
        into,
        from_status,
        from_assignee,
    )
    .fetch_one(&mut *tx)
    .await?;
    let payload = json!({ "contact_id": survivor, "status": "resolved", "merged_into_conversation": into });
    record_change(tx, tenant, "conversation.updated", from, None, payload).await?;
    let payload = json!({ "merged_conversation_id": from, "status": target.status,
                          "assignee_id": target.assignee_id, "snoozed_until": target.snoozed_until });
    record_change(tx, tenant, "conversation.updated", into, None, payload).await?;
    Ok(())
}

/// An inbound message that opened a conversation for the survivor on the same account after this
/// merge looked (the unique index refuses the move): the merge is undone; trying again folds it.
fn racing_inbound(error: ApiError) -> ApiError {
    if error.is_unique_violation() {
        ApiError::conflict(None, "a message arrived for these contacts during the merge: try again")
    } else {
        error
    }
}
