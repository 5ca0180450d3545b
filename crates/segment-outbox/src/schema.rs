//! The outbox's tables, indexes and SQL functions, installed and upgraded by [`init`].
//!
//! Tables and indexes are versioned migrations, applied once each, in order,
//! in one transaction under an advisory lock (so two `relay init` at once are
//! safe). The functions are replaced on every `init`, so fixes to them need
//! no migration.

use tokio_postgres::Client;

use crate::db::Schema;
use crate::error::{Kind, OutboxError};

/// Versioned table and index changes; index `i` is version `i + 1`.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE {s}.outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       text,
    anonymous_id  text,
    -- Per-customer order is kept per identity key: the userId, else the anonymousId.
    identity_key  text GENERATED ALWAYS AS (coalesce(user_id, anonymous_id)) STORED,
    message_id    text NOT NULL,
    event_time    timestamptz NOT NULL,
    traits        jsonb NOT NULL,
    context       jsonb,
    integrations  jsonb,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts      integer NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT now(),
    leased_until  timestamptz,
    lease_owner   text,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
) WITH (fillfactor = 80);
-- Claims walk pending rows in id order; the second index answers "is there
-- an earlier pending row of this customer?". Leasing changes no indexed
-- column, so claims are HOT updates (hence the fillfactor).
CREATE INDEX outbox_pending ON {s}.outbox (id) WHERE state = 'pending';
CREATE INDEX outbox_pending_identity ON {s}.outbox (identity_key, id) WHERE state = 'pending';
CREATE INDEX outbox_delivered ON {s}.outbox (finished_at) WHERE state = 'delivered';
CREATE INDEX outbox_dead ON {s}.outbox (id) WHERE state = 'dead';
"#];

/// The schema version this build installs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The functions, replaced on every `init`. `{library}` is the
/// `context.library` the Rust client adds, counted in the size check.
const FUNCTIONS: &str = r#"
-- How many bytes jsonb's text output spends on spaces that compact JSON
-- (what the relay sends) does not have: ": " after each key, ", " between items.
CREATE OR REPLACE FUNCTION {s}.json_spacing(v jsonb) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    n bigint := 0;
    items bigint := 0;
    item jsonb;
BEGIN
    IF jsonb_typeof(v) = 'object' THEN
        FOR item IN SELECT value FROM jsonb_each(v) LOOP
            items := items + 1;
            IF jsonb_typeof(item) IN ('object', 'array') THEN
                n := n + {s}.json_spacing(item);
            END IF;
        END LOOP;
        IF items > 0 THEN n := n + 2 * items - 1; END IF;
    ELSIF jsonb_typeof(v) = 'array' THEN
        FOR item IN SELECT value FROM jsonb_array_elements(v) LOOP
            items := items + 1;
            IF jsonb_typeof(item) IN ('object', 'array') THEN
                n := n + {s}.json_spacing(item);
            END IF;
        END LOOP;
        IF items > 0 THEN n := n + items - 1; END IF;
    END IF;
    RETURN n;
END
$fn$;

-- Writes one identify event into the outbox, inside the caller's
-- transaction, and returns its messageId. Refuses (raises) what Segment
-- would refuse, so the application's transaction fails now rather than the
-- event later. Committing wakes the relays.
CREATE OR REPLACE FUNCTION {s}.identify(
    user_id      text,
    traits       jsonb,
    anonymous_id text DEFAULT NULL,
    message_id   text DEFAULT NULL,
    event_time   timestamptz DEFAULT now(),
    context      jsonb DEFAULT NULL,
    integrations jsonb DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_message_id text := coalesce($4, gen_random_uuid()::text);
    v_traits     jsonb := coalesce($2, '{}'::jsonb);
    v_context    jsonb := $6;
    v_event      jsonb;
    v_bytes      bigint;
BEGIN
    IF $1 IS NULL AND $3 IS NULL THEN
        RAISE EXCEPTION 'segment.identify: the event has no identity: give a user_id or an anonymous_id'
            USING ERRCODE = '22023';
    END IF;
    IF btrim($1) = '' THEN
        RAISE EXCEPTION 'segment.identify: user_id is empty' USING ERRCODE = '22023';
    END IF;
    IF btrim($3) = '' THEN
        RAISE EXCEPTION 'segment.identify: anonymous_id is empty' USING ERRCODE = '22023';
    END IF;
    IF v_message_id = '' THEN
        RAISE EXCEPTION 'segment.identify: message_id is empty' USING ERRCODE = '22023';
    END IF;
    IF char_length(v_message_id) >= 100 THEN
        RAISE EXCEPTION 'segment.identify: message_id is % characters; Segment requires fewer than 100',
            char_length(v_message_id) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(v_traits) <> 'object' THEN
        RAISE EXCEPTION 'segment.identify: traits must be a JSON object, not %', jsonb_typeof(v_traits)
            USING ERRCODE = '22023';
    END IF;
    IF v_context IS NOT NULL AND jsonb_typeof(v_context) <> 'object' THEN
        RAISE EXCEPTION 'segment.identify: context must be a JSON object, not %', jsonb_typeof(v_context)
            USING ERRCODE = '22023';
    END IF;
    IF $7 IS NOT NULL AND jsonb_typeof($7) <> 'object' THEN
        RAISE EXCEPTION 'segment.identify: integrations must be a JSON object, not %', jsonb_typeof($7)
            USING ERRCODE = '22023';
    END IF;
    IF v_context IS NOT NULL AND NOT v_context ? 'library' THEN
        v_context := v_context || '{library}'::jsonb;
    END IF;
    -- The event as the relay will send it, measured as compact JSON.
    v_event := jsonb_build_object(
        'type', 'identify',
        'messageId', v_message_id,
        'timestamp', to_char(coalesce($5, now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'traits', v_traits);
    IF $1 IS NOT NULL THEN v_event := v_event || jsonb_build_object('userId', $1); END IF;
    IF $3 IS NOT NULL THEN v_event := v_event || jsonb_build_object('anonymousId', $3); END IF;
    IF v_context IS NOT NULL THEN v_event := v_event || jsonb_build_object('context', v_context); END IF;
    IF $7 IS NOT NULL THEN v_event := v_event || jsonb_build_object('integrations', $7); END IF;
    v_bytes := octet_length(v_event::text) - {s}.json_spacing(v_event);
    IF v_bytes > 32000 THEN
        RAISE EXCEPTION 'segment.identify: the event is % bytes; Segment drops events over 32000 bytes', v_bytes
            USING ERRCODE = '54000';
    END IF;
    INSERT INTO {s}.outbox (user_id, anonymous_id, message_id, event_time, traits, context, integrations)
    VALUES ($1, $3, v_message_id, coalesce($5, now()), v_traits, $6, $7);
    -- NOTIFY serialises committing transactions on one database-wide lock
    -- held through their WAL flush; a producer committing faster than its
    -- disk syncs can opt out (SET {s}.notify = off) and rely on the relays' poll.
    IF coalesce(current_setting('{s}.notify', true), '') <> 'off' THEN
        PERFORM pg_notify('{channel}', '');
    END IF;
    RETURN v_message_id;
END
$fn$;
"#;

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitReport {
    /// The schema version found (0: none).
    pub from_version: i32,
    /// The schema version now installed.
    pub to_version: i32,
}

/// Creates or upgrades the outbox in `schema`: the table, its indexes and
/// the `identify` function. Idempotent, and safe to run from several
/// processes at once.
///
/// # Errors
/// `schema_newer` if the database holds a newer version than this build;
/// `database` if a statement fails (nothing is changed then).
pub async fn init(client: &mut Client, schema: &Schema) -> Result<InitReport, OutboxError> {
    let db = |e| OutboxError::database("cannot install the outbox schema", e);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('segment-outbox:' || $1, 0))",
        &[&schema.name()],
    )
    .await
    .map_err(db)?;
    tx.batch_execute(&schema.sql(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now());",
    ))
    .await
    .map_err(db)?;
    let from_version: i32 = tx
        .query_one(
            &schema.sql("SELECT coalesce(max(version), 0) FROM {s}.schema_version"),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if from_version > SCHEMA_VERSION {
        return Err(OutboxError::new(
            Kind::SchemaNewer,
            format!(
                "the outbox schema in the database is version {from_version}; this build knows up to {SCHEMA_VERSION}"
            ),
        ));
    }
    for (version, migration) in (1..).zip(MIGRATIONS) {
        if version <= from_version {
            continue;
        }
        tx.batch_execute(&schema.sql(migration)).await.map_err(db)?;
        tx.execute(
            &schema.sql("INSERT INTO {s}.schema_version (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(db)?;
    }
    tx.batch_execute(&functions_sql(schema)).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(InitReport {
        from_version,
        to_version: SCHEMA_VERSION,
    })
}

/// Fails with `schema_missing` or `schema_newer` unless `schema` holds the
/// version this build installs.
pub(crate) async fn check(client: &Client, schema: &Schema) -> Result<(), OutboxError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.schema_version", schema.name())],
        )
        .await
        .map_err(|e| OutboxError::database("cannot read the outbox schema version", e))?
        .get(0);
    let found: i32 = if exists {
        client
            .query_one(
                &schema.sql("SELECT coalesce(max(version), 0) FROM {s}.schema_version"),
                &[],
            )
            .await
            .map_err(|e| OutboxError::database("cannot read the outbox schema version", e))?
            .get(0)
    } else {
        0
    };
    match found {
        v if v == SCHEMA_VERSION => Ok(()),
        v if v > SCHEMA_VERSION => Err(OutboxError::new(
            Kind::SchemaNewer,
            format!(
                "the outbox schema `{}` is version {v}; this build knows up to {SCHEMA_VERSION}",
                schema.name()
            ),
        )),
        v => Err(OutboxError::new(
            Kind::SchemaMissing,
            format!(
                "the outbox schema `{}` is at version {v}, not {SCHEMA_VERSION}",
                schema.name()
            ),
        )),
    }
}

fn functions_sql(schema: &Schema) -> String {
    let library = serde_json::json!({
        "library": { "name": segment_client::LIBRARY_NAME, "version": env!("CARGO_PKG_VERSION") }
    });
    schema
        .sql(FUNCTIONS)
        .replace("{channel}", &schema.channel())
        .replace("{library}", &library.to_string())
}
