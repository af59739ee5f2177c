//! Contacts: one external person across channels, de-duplicated per tenant by identifiers
//! (E.164 phones, lower-cased emails). The send API finds or creates them, for a batch of
//! messages at once: [`lookup`] reads what exists (two statements, one when no contact is known
//! yet; [`lookup_with_suppressions`] also reads the opt-outs of the addresses a batch names), the
//! caller decides which messages can go ahead, and [`persist`] creates and completes their
//! contacts (two more).

use kernel::error::ApiError;
use std::collections::HashMap;

use kernel::ids::TenantId;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::channels::validate;
use crate::messages::model::Channel;

/// Whom a message is for, as the API takes it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub contact_id: Option<Uuid>,
    /// E.164.
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// A recipient as the API named it, validated: an existing contact, or identifiers to find or
/// create one by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactRequest {
    Id(Uuid),
    /// At least one of the two.
    Identifiers {
        phone: Option<String>,
        email: Option<String>,
    },
}

impl ContactRequest {
    /// Validates the API's input: 422s name `to`, `to.phone` or `to.email`.
    pub fn parse(input: &RecipientInput) -> Result<Self, ApiError> {
        if let Some(id) = input.contact_id {
            if input.phone.is_some() || input.email.is_some() {
                return Err(ApiError::validation("to", "give either contact_id or phone/email, not both"));
            }
            return Ok(Self::Id(id));
        }
        let phone = input.phone.as_deref().map(|p| validate::e164("to.phone", p.trim())).transpose()?;
        let email = input.email.as_deref().map(normalized_email).transpose()?;
        if phone.is_none() && email.is_none() {
            return Err(ApiError::validation("to", "needs contact_id, phone or email"));
        }
        Ok(Self::Identifiers { phone, email })
    }

    /// The identifiers it names, phone first (a phone match wins over an email one).
    fn identifiers(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::Id(_) => Vec::new(),
            Self::Identifiers { phone, email } => [("phone", phone), ("email", email)]
                .into_iter()
                .filter_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
                .collect(),
        }
    }
}

fn normalized_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.contains('@') && !email.contains(char::is_whitespace)
    });
    if valid { Ok(email) } else { Err(ApiError::validation("to.email", "is not a valid email address")) }
}

/// A contact as a message will address it: an existing one (with its identifiers, completed by
/// the request's) or one to be created from the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedContact {
    /// `None` until [`persist`] creates it.
    pub id: Option<Uuid>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub whatsapp: Option<String>,
}

impl ResolvedContact {
    /// The address on `channel`, or a 422 on `to` saying what is missing.
    pub fn address(&self, channel: Channel) -> Result<String, ApiError> {
        let address = match channel {
            Channel::Sms => self.phone.clone(),
            Channel::Whatsapp => self.whatsapp.clone().or_else(|| self.phone.clone()),
            Channel::Email => self.email.clone(),
            Channel::Webchat => {
                return Err(ApiError::validation(
                    "channels",
                    "webchat messages go to a visitor's open chat: answer in the conversation \
                     (POST /api/v1/conversations/{id}/messages)",
                ));
            }
        };
        address.ok_or_else(|| {
            let what = if channel == Channel::Email { "an email address" } else { "a phone number" };
            ApiError::validation("to", format!("the recipient has no {what} for the {} channel", channel.as_str()))
        })
    }

    fn slot(&mut self, kind: &str) -> Option<&mut Option<String>> {
        match kind {
            "phone" => Some(&mut self.phone),
            "email" => Some(&mut self.email),
            "whatsapp" => Some(&mut self.whatsapp),
            _ => None,
        }
    }

    /// Records `value` as the address of `kind` unless it has one already (identifiers come
    /// ordered by kind and value: the first of each kind is the contact's address).
    fn set(&mut self, kind: &str, value: &str) {
        if let Some(slot @ None) = self.slot(kind) {
            *slot = Some(value.to_owned());
        }
    }
}

/// Finds what each of `requests` (tenant, request) refers to: the existing contact with its
/// identifiers plus the request's, or a contact still to create from the request. A contact id
/// that is not the tenant's is a 422 on `to.contact_id` for that request alone. Two statements
/// for any number of requests.
pub async fn lookup(
    db: &mut PgConnection,
    requests: &[(TenantId, &ContactRequest)],
) -> Result<Vec<Result<ResolvedContact, ApiError>>, ApiError> {
    Ok(lookup_with_suppressions(db, requests, &[]).await?.0)
}

/// Why each of `endpoints` (tenant, channel, address) is suppressed, as
/// `compliance::suppressions_of` answers (those that are not are absent).
pub type Suppressed = HashMap<(Uuid, Channel, String), String>;

/// [`lookup`], and in the same statement the suppressions of `endpoints`: the acceptance asks
/// about the addresses its requests name, so that a batch of new recipients reads once.
pub async fn lookup_with_suppressions(
    db: &mut PgConnection,
    requests: &[(TenantId, &ContactRequest)],
    endpoints: &[(Uuid, Channel, String)],
) -> Result<(Vec<Result<ResolvedContact, ApiError>>, Suppressed), ApiError> {
    let (hits, suppressed) = find_owners(db, requests, endpoints).await?;
    let mut wanted: Vec<Uuid> = hits.values().copied().collect();
    wanted.extend(requests.iter().filter_map(|(_, request)| match request {
        ContactRequest::Id(id) => Some(*id),
        ContactRequest::Identifiers { .. } => None,
    }));
    let known = load(db, &wanted).await?;
    let contacts = requests
        .iter()
        .enumerate()
        .map(|(index, (tenant, request))| {
            let existing = match request {
                ContactRequest::Id(id) => Some(*id),
                ContactRequest::Identifiers { .. } => hits.get(&index).copied(),
            };
            let mut contact = match existing.and_then(|id| known.get(&id)) {
                Some((owner, contact)) if *owner == tenant.0 => contact.clone(),
                _ if matches!(request, ContactRequest::Id(_)) => {
                    return Err(ApiError::validation("to.contact_id", "no such contact"));
                }
                _ => ResolvedContact::default(),
            };
            for (kind, value) in request.identifiers() {
                contact.set(kind, value);
            }
            Ok(contact)
        })
        .collect();
    Ok((contacts, suppressed))
}

/// For each identifier request (by position) that matches an existing contact: that contact,
/// the phone's over the email's; and the suppressions of `endpoints`. One statement: the rows of
/// the second question follow those of the first, told apart by `what`.
async fn find_owners(
    db: &mut PgConnection,
    requests: &[(TenantId, &ContactRequest)],
    endpoints: &[(Uuid, Channel, String)],
) -> Result<(HashMap<usize, Uuid>, Suppressed), ApiError> {
    let (mut positions, mut ranks, mut tenants, mut kinds, mut values) = (vec![], vec![], vec![], vec![], vec![]);
    for (index, (tenant, request)) in requests.iter().enumerate() {
        for (rank, (kind, value)) in request.identifiers().into_iter().enumerate() {
            positions.push(index as i32);
            ranks.push(rank as i32);
            tenants.push(tenant.0);
            kinds.push(kind);
            values.push(value);
        }
    }
    if positions.is_empty() && endpoints.is_empty() {
        return Ok((HashMap::new(), HashMap::new()));
    }
    let endpoint_tenants: Vec<Uuid> = endpoints.iter().map(|e| e.0).collect();
    let endpoint_channels: Vec<&str> = endpoints.iter().map(|e| e.1.as_str()).collect();
    let endpoint_addresses: Vec<String> = endpoints.iter().map(|e| e.2.to_lowercase()).collect();
    // A lateral subquery with LIMIT is looked up by its whole key for each identifier: a plain
    // join let the planner, with statistics that did not know a new tenant yet, walk the
    // tenant's whole identifier index instead (3 ms per lookup after a few thousand contacts).
    let rows = sqlx::query!(
        r#"SELECT 'owner' AS "what!", w.position AS "position?", w.rank AS "rank?", owner.contact_id AS "contact_id?",
                  NULL::uuid AS "tenant_id?", NULL::text AS "channel?", NULL::text AS "address?", NULL::text AS "reason?"
           FROM unnest($1::int4[], $2::int4[], $3::uuid[], $4::text[], $5::text[])
                AS w(position, rank, tenant_id, kind, value)
           CROSS JOIN LATERAL (
               SELECT i.contact_id FROM communications.contact_identifiers i
               WHERE i.tenant_id = w.tenant_id AND i.kind = w.kind AND i.value = w.value LIMIT 1) AS owner
           UNION ALL
           SELECT 'suppressed', NULL, NULL, NULL, s.tenant_id, s.channel, s.address, s.reason
           FROM communications.suppressions s
           JOIN unnest($6::uuid[], $7::text[], $8::text[]) AS e (tenant_id, channel, address)
             ON s.tenant_id = e.tenant_id AND s.channel = e.channel AND s.address = e.address
           ORDER BY 2, 3"#,
        &positions,
        &ranks,
        &tenants,
        &kinds as &[&str],
        &values as &[&str],
        &endpoint_tenants,
        &endpoint_channels as &[&str],
        &endpoint_addresses,
    )
    .fetch_all(&mut *db)
    .await?;
    let (mut owners, mut suppressed) = (HashMap::new(), HashMap::new());
    for row in rows {
        match (row.what.as_str(), row.position, row.contact_id, row.tenant_id, row.channel, row.address, row.reason) {
            ("owner", Some(position), Some(contact), ..) => {
                owners.entry(position as usize).or_insert(contact);
            }
            ("suppressed", _, _, Some(tenant), Some(channel), Some(address), Some(reason)) => {
                if let Some(channel) = Channel::parse(&channel) {
                    suppressed.insert((tenant, channel, address), reason);
                }
            }
            _ => return Err(ApiError::internal("an unexpected row looking up contacts")),
        }
    }
    Ok((owners, suppressed))
}

/// The contacts of `ids` with their tenant and identifiers; a merged contact stands for its
/// survivor (id and identifiers), so old references keep working.
async fn load(db: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, (Uuid, ResolvedContact)>, ApiError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT c.id, COALESCE(c.merged_into, c.id) AS "survivor!", c.tenant_id, i.kind AS "kind?", i.value AS "value?"
           FROM communications.contacts c
           LEFT JOIN communications.contact_identifiers i ON i.contact_id = COALESCE(c.merged_into, c.id)
           WHERE c.id = ANY($1)
           ORDER BY c.id, i.kind, i.value"#,
        ids,
    )
    .fetch_all(&mut *db)
    .await?;
    let mut contacts: HashMap<Uuid, (Uuid, ResolvedContact)> = HashMap::new();
    for row in rows {
        let (_, contact) = contacts
            .entry(row.id)
            .or_insert_with(|| (row.tenant_id, ResolvedContact { id: Some(row.survivor), ..Default::default() }));
        if let (Some(kind), Some(value)) = (&row.kind, &row.value) {
            contact.set(kind, value);
        }
    }
    Ok(contacts)
}

/// A batch's contacts to create and complete, decided before anything is written: [`persist`]
/// writes it in its transaction, and the send API's one-statement acceptance
/// (`messages/single_write.rs`) inside its statement.
#[derive(Debug)]
pub struct PersistPlan<'a> {
    /// Each item's contact: its own, or the new one planned for it.
    pub ids: Vec<Uuid>,
    /// New contacts as (tenant, kind, value, id) of their first identifier, in key order (so
    /// concurrent batches claim shared identifiers in the same order: no deadlock). Requests
    /// for the same new identifier share one.
    pub new: Vec<(Uuid, &'a str, &'a str, Uuid)>,
    /// The request's other identifiers for each contact, (tenant, kind, value, contact), in key
    /// order. An identifier the contact has already, or that another contact owns, is to stay
    /// as it is.
    pub attach: Vec<(Uuid, &'a str, &'a str, Uuid)>,
}

/// The [`PersistPlan`] of `items` (tenant, request, what [`lookup`] found).
pub fn plan_persist<'a>(
    items: &[(TenantId, &'a ContactRequest, &ResolvedContact)],
) -> Result<PersistPlan<'a>, ApiError> {
    let mut new_ids: HashMap<(Uuid, &str, &str), Uuid> = HashMap::new();
    let mut ids = Vec::with_capacity(items.len());
    for (tenant, request, contact) in items {
        let id = match (contact.id, request.identifiers().first().copied()) {
            (Some(id), _) => id,
            (None, Some((kind, value))) => *new_ids.entry((tenant.0, kind, value)).or_insert_with(Uuid::now_v7),
            (None, None) => return Err(ApiError::internal("a contact to create without identifiers")),
        };
        ids.push(id);
    }
    let mut new: Vec<(Uuid, &str, &str, Uuid)> =
        new_ids.into_iter().map(|((tenant, kind, value), id)| (tenant, kind, value, id)).collect();
    new.sort();
    let attach = attachments(items, &ids);
    Ok(PersistPlan { ids, new, attach })
}

/// The identifiers each contact (`ids`, by item) is to be given, in key order.
fn attachments<'a>(
    items: &[(TenantId, &'a ContactRequest, &ResolvedContact)],
    ids: &[Uuid],
) -> Vec<(Uuid, &'a str, &'a str, Uuid)> {
    let mut wanted = Vec::new();
    for ((tenant, request, contact), id) in items.iter().zip(ids) {
        for (position, (kind, value)) in request.identifiers().into_iter().enumerate() {
            // A new contact is created with its first identifier. For an existing one the
            // conflict on identifiers it has already is cheaper than telling them apart here.
            if contact.id.is_none() && position == 0 {
                continue;
            }
            wanted.push((tenant.0, kind, value, *id));
        }
    }
    wanted.sort();
    wanted.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
    wanted
}

/// Creates the contacts [`lookup`] found missing and gives existing ones the request's new
/// identifiers; returns each request's contact id. Requests in the batch for the same new
/// identifier share one new contact. Where a concurrent request created that contact first
/// (the identifier's primary key decides), its contact is the one.
pub async fn persist(
    db: &mut PgConnection,
    items: &[(TenantId, &ContactRequest, &ResolvedContact)],
) -> Result<Vec<Uuid>, ApiError> {
    let mut plan = plan_persist(items)?;
    let lost = create(db, &plan.new).await?;
    if !lost.is_empty() {
        // Another transaction created these first: use its contacts.
        let retry: Vec<(TenantId, ContactRequest)> = lost
            .iter()
            .map(|(tenant, kind, value, _)| {
                let request = match *kind {
                    "phone" => ContactRequest::Identifiers { phone: Some(value.to_string()), email: None },
                    _ => ContactRequest::Identifiers { phone: None, email: Some(value.to_string()) },
                };
                (TenantId(*tenant), request)
            })
            .collect();
        let refs: Vec<(TenantId, &ContactRequest)> = retry.iter().map(|(t, r)| (*t, r)).collect();
        let (owners, _) = find_owners(db, &refs, &[]).await?;
        for (position, (.., ours)) in lost.iter().enumerate() {
            let owner = owners.get(&position).copied().ok_or_else(|| ApiError::internal("contact identifier race"))?;
            for id in plan.ids.iter_mut().filter(|id| **id == *ours) {
                *id = owner;
            }
        }
        plan.attach = attachments(items, &plan.ids);
    }
    attach(db, &plan.attach).await?;
    Ok(plan.ids)
}

/// Inserts the new contacts with their first identifier in one statement; returns those whose
/// identifier another contact owned meanwhile (no contact was created for those).
async fn create<'a>(
    db: &mut PgConnection,
    new: &[(Uuid, &'a str, &'a str, Uuid)],
) -> Result<Vec<(Uuid, &'a str, &'a str, Uuid)>, ApiError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = new.iter().map(|n| n.0).collect();
    let kinds: Vec<&str> = new.iter().map(|n| n.1).collect();
    let values: Vec<&str> = new.iter().map(|n| n.2).collect();
    let ids: Vec<Uuid> = new.iter().map(|n| n.3).collect();
    let created: Vec<Uuid> = sqlx::query_scalar!(
        r#"WITH identifier AS (
               INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[])
               ON CONFLICT DO NOTHING RETURNING contact_id, tenant_id)
           INSERT INTO communications.contacts (id, tenant_id) SELECT contact_id, tenant_id FROM identifier
           RETURNING id"#,
        &tenants,
        &kinds as &[&str],
        &values as &[&str],
        &ids,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(new.iter().filter(|n| !created.contains(&n.3)).copied().collect())
}

/// Gives contacts identifiers, (tenant, kind, value, contact) in key order, in one statement.
async fn attach(db: &mut PgConnection, wanted: &[(Uuid, &str, &str, Uuid)]) -> Result<(), ApiError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = wanted.iter().map(|w| w.0).collect();
    let kinds: Vec<&str> = wanted.iter().map(|w| w.1).collect();
    let values: Vec<&str> = wanted.iter().map(|w| w.2).collect();
    let owners: Vec<Uuid> = wanted.iter().map(|w| w.3).collect();
    sqlx::query!(
        r#"INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[])
           ON CONFLICT DO NOTHING"#,
        &tenants,
        &kinds as &[&str],
        &values as &[&str],
        &owners,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}
