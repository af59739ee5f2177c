//! Seeds a tenant's inbox at volume with set-based SQL: contacts, conversations (8 % open, 2 %
//! snoozed, the rest resolved; 40 % of the open ones unassigned), messages alternating inbound
//! and outbound with German and English text (and a reference like `ref93x3` that only one
//! message has), and agents' read cursors (each agent has read two
//! thirds of the open conversations and every resolved one).
//!
//! Triggers are switched off for the seeding connection (`session_replication_role = replica`)
//! and the denormalised columns they keep are computed once afterwards: a million single-row
//! trigger updates would take longer than everything else together.

use std::time::Instant;

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub conversations: i64,
    pub messages: i64,
    pub seconds: f64,
}

/// Words the message texts are drawn from; the benchmark searches for some of them.
pub const WORDS: &[&str] = &[
    "Buchung",
    "Fahrkarte",
    "Abfahrt",
    "Verspätung",
    "Gepäck",
    "Fahrrad",
    "Rechnung",
    "Sitzplatz",
    "Bahnhof",
    "Umbuchung",
    "Erstattung",
    "morgen",
    "heute",
    "bitte",
    "danke",
    "booking",
    "ticket",
    "departure",
    "delay",
    "luggage",
    "bicycle",
    "invoice",
    "seat",
    "station",
    "refund",
    "tomorrow",
    "today",
    "please",
    "thanks",
    "driver",
    "pickup",
    "airport",
    "hotel",
    "wheelchair",
    "stroller",
    "passport",
    "voucher",
    "discount",
    "schedule",
    "platform",
];

/// The phone number of seeded contact `n` (inbound webhooks of the benchmark use them).
pub fn phone(n: i64) -> String {
    format!("+4917{n:09}")
}

pub async fn seed(
    pool: &PgPool,
    tenant: Uuid,
    agents: &[Uuid],
    conversations: i64,
    messages: i64,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .context("switching triggers off")?;
    // Our own constants are formatted into the statements below (AssertSqlSafe); values are bound.
    // Time-ordered UUIDs (v7 layout) for the seeded rows, as the service makes them.
    let v7 = "(lpad(to_hex((extract(epoch from {ts}) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 3) \
              || '8' || substr(md5(random()::text), 1, 15))::uuid";
    let start = "now() - interval '400 days'";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO communications.contacts (id, tenant_id, display_name, created_at)
         SELECT {}, $1, 'Contact ' || n, {start} + n * interval '5 minutes'
         FROM generate_series(1, $2) AS n",
        v7.replace("{ts}", &format!("({start} + n * interval '5 minutes')")),
    )))
    .bind(tenant)
    .bind(conversations)
    .execute(&mut *conn)
    .await
    .context("seeding contacts")?;
    sqlx::query(
        "INSERT INTO communications.contact_identifiers (tenant_id, kind, value, contact_id)
         SELECT $1, 'phone', '+4917' || lpad(row_number() OVER (ORDER BY id)::text, 9, '0'), id
         FROM communications.contacts WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await
    .context("seeding identifiers")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO communications.conversations (id, tenant_id, contact_id, channel, status, assignee_id, snoozed_until, created_at)
         SELECT {}, $1, k.id, 'whatsapp',
                CASE WHEN k.n % 100 < 8 THEN 'open' WHEN k.n % 100 < 10 THEN 'snoozed' ELSE 'resolved' END,
                CASE WHEN k.n % 100 < 8 AND k.n % 5 < 2 THEN NULL ELSE ($2::uuid[])[1 + k.n % cardinality($2::uuid[])] END,
                CASE WHEN k.n % 100 BETWEEN 8 AND 9 THEN now() + interval '3 days' END,
                k.created_at
         FROM (SELECT id, created_at, row_number() OVER (ORDER BY id) AS n FROM communications.contacts WHERE tenant_id = $1) k",
        v7.replace("{ts}", "k.created_at"),
    )))
    .bind(tenant)
    .bind(agents)
    .execute(&mut *conn)
    .await
    .context("seeding conversations")?;
    let per_conversation = (messages / conversations.max(1)).max(1);
    let words: Vec<String> = WORDS.iter().map(|w| (*w).to_owned()).collect();
    // In slices, so each statement stays a few seconds and progress shows.
    let slice = 10_000;
    for first in (0..conversations).step_by(slice as usize) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO communications.messages (id, tenant_id, contact_id, conversation_id, direction, channel, recipient,
                                                  content, status, provider, provider_message_id, provider_timestamp,
                                                  metadata, created_at, updated_at)
             SELECT {}, $1, c.contact_id, c.id, CASE WHEN m % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'whatsapp', '+4917',
                    jsonb_build_object(CASE WHEN m % 2 = 0 THEN 'body' ELSE 'text' END,
                        $3[1 + (c.n * 7 + m * 13) % cardinality($3)] || ' ' || $3[1 + (c.n * 11 + m * 3) % cardinality($3)] || ' '
                        || $3[1 + (c.n + m * 29) % cardinality($3)] || ' ' || $3[1 + (c.n * 17 + m) % cardinality($3)] || ' '
                        || 'ref' || c.n || 'x' || m),
                    CASE WHEN m % 2 = 0 THEN 'received' ELSE 'read' END, 'meta', 'wamid.seed.' || c.id || '.' || m,
                    CASE WHEN m % 2 = 0 THEN c.created_at + m * interval '3 minutes' END,
                    '{{}}', c.created_at + m * interval '3 minutes', c.created_at + m * interval '3 minutes'
             FROM (SELECT id, contact_id, created_at, row_number() OVER (ORDER BY id) - 1 AS n
                   FROM communications.conversations WHERE tenant_id = $1) c
             CROSS JOIN generate_series(0, $2 - 1) AS m
             WHERE c.n >= $4 AND c.n < $5",
            v7.replace("{ts}", "(c.created_at + m * interval '3 minutes')"),
        )))
        .bind(tenant)
        .bind(per_conversation)
        .bind(&words)
        .bind(first)
        .bind(first + slice)
        .execute(&mut *conn)
        .await
        .context("seeding messages")?;
        eprintln!(
            "  seeded {} of {conversations} conversations' messages ({:.0} s)",
            (first + slice).min(conversations),
            started.elapsed().as_secs_f64()
        );
    }
    // What the triggers would have kept: activity times and inbound counts.
    sqlx::query(
        "UPDATE communications.conversations c SET last_message_at = x.last_at, last_inbound_at = x.last_in,
                inbound_count = x.inbound
         FROM (SELECT conversation_id, max(COALESCE(provider_timestamp, created_at)) AS last_at,
                      max(provider_timestamp) FILTER (WHERE direction = 'inbound') AS last_in,
                      count(*) FILTER (WHERE direction = 'inbound') AS inbound
               FROM communications.messages WHERE tenant_id = $1 GROUP BY conversation_id) x
         WHERE c.id = x.conversation_id",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await
    .context("computing conversation activity")?;
    sqlx::query(
        "INSERT INTO communications.read_cursors (agent_id, conversation_id, tenant_id, read_count)
         SELECT a.agent, c.id, $1, c.inbound_count
         FROM (SELECT id, status, inbound_count, row_number() OVER (ORDER BY id) AS n
               FROM communications.conversations WHERE tenant_id = $1) c
         CROSS JOIN unnest($2::uuid[]) WITH ORDINALITY AS a(agent, i)
         WHERE c.status = 'resolved' OR (c.n + a.i) % 3 <> 0",
    )
    .bind(tenant)
    .bind(agents)
    .execute(&mut *conn)
    .await
    .context("seeding read cursors")?;
    sqlx::query("SET session_replication_role = DEFAULT").execute(&mut *conn).await?;
    for table in ["contacts", "contact_identifiers", "conversations", "messages", "read_cursors"] {
        // As autovacuum leaves a table in steady state: statistics and the visibility map.
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE communications.{table}"))).execute(&mut *conn).await?;
    }
    let (conversations, messages): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM communications.conversations WHERE tenant_id = $1),
                (SELECT count(*) FROM communications.messages WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Seeded { conversations, messages, seconds: started.elapsed().as_secs_f64() })
}
