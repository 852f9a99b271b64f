//! The schema: every migration, in SQLite's dialect and in PostgreSQL's, version for version.
//! [`crate::state::State`] applies those a database has not seen when it opens it.

/// The schema's migrations in SQLite's dialect.
pub(crate) const SQLITE_MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), rev INTEGER NOT NULL);
     INSERT INTO revision VALUES (1, 0);
     CREATE TABLE apps (guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, tag INTEGER NOT NULL UNIQUE);
     CREATE TABLE instances (guid TEXT PRIMARY KEY,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        idx INTEGER NOT NULL, cell TEXT NOT NULL, ip TEXT NOT NULL);
     CREATE INDEX instances_by_cell ON instances(cell);
     CREATE TABLE policies (id INTEGER PRIMARY KEY,
        source TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        destination TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        protocol TEXT NOT NULL, start_port INTEGER NOT NULL, end_port INTEGER NOT NULL,
        UNIQUE (source, destination, protocol, start_port, end_port));
     CREATE INDEX policies_by_destination ON policies(destination);
     CREATE TABLE cells (name TEXT PRIMARY KEY, underlay_ip TEXT NOT NULL,
        subnet TEXT NOT NULL UNIQUE, renewed_at INTEGER NOT NULL);",
    // 2: internal domains and routes.
    "CREATE TABLE domains (name TEXT PRIMARY KEY);
     INSERT INTO domains VALUES ('apps.internal');
     CREATE TABLE routes (host TEXT NOT NULL,
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        PRIMARY KEY (host, domain, app_guid));",
    // 3: placement is control's: an instance is placed (by a user's token) before a cell may
    // confirm it with an address; registered cell identities.
    "ALTER TABLE instances RENAME TO instances_v2;
     CREATE TABLE instances (guid TEXT PRIMARY KEY,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        idx INTEGER NOT NULL, cell TEXT NOT NULL, ip TEXT,
        UNIQUE (app_guid, idx));
     INSERT OR IGNORE INTO instances SELECT guid, app_guid, idx, cell, ip FROM instances_v2;
     DROP TABLE instances_v2;
     CREATE INDEX instances_by_cell_v3 ON instances(cell);
     CREATE UNIQUE INDEX instances_by_ip ON instances(ip) WHERE ip IS NOT NULL;
     CREATE TABLE cell_identities (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
        registered_at INTEGER NOT NULL);",
    // 4: Cloud Foundry's policy server: users' tokens (hashed) and the apps each may manage;
    // tags for groups that are not apps (`PUT /internal/tags`, e.g. the router); when the
    // policies last changed (`policies_last_updated`, Unix nanoseconds, strictly increasing).
    "CREATE TABLE tokens (hash TEXT PRIMARY KEY, username TEXT NOT NULL, scope TEXT NOT NULL,
        created_at INTEGER NOT NULL);
     CREATE INDEX tokens_by_user ON tokens(username);
     CREATE TABLE grants (username TEXT NOT NULL,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        PRIMARY KEY (username, app_guid));
     CREATE TABLE tag_groups (guid TEXT NOT NULL, type TEXT NOT NULL, tag INTEGER NOT NULL UNIQUE,
        PRIMARY KEY (guid, type));
     CREATE TABLE policies_info (id INTEGER PRIMARY KEY CHECK (id = 1), last_updated INTEGER NOT NULL);
     INSERT INTO policies_info VALUES (1, 0);
     CREATE TRIGGER policies_added AFTER INSERT ON policies BEGIN
        UPDATE policies_info SET last_updated = MAX(last_updated + 1,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000);
     END;
     CREATE TRIGGER policies_removed AFTER DELETE ON policies BEGIN
        UPDATE policies_info SET last_updated = MAX(last_updated + 1,
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000);
     END;",
    // 5: one-time join tokens for cells joining over the network (hashed; used once; bound to
    // a cell name when they may replace that cell's identity).
    "CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, expires_at INTEGER NOT NULL,
        cell TEXT, used_by TEXT, used_at INTEGER);",
    // 6: orgs and spaces (every app in one; existing apps go to the default space), security
    // groups (rules as CF's JSON) and where they are bound: to every space (`defaults`) or to
    // one, for running or staging.
    ASG_MIGRATION,
    // 7: spaces granted to users (their apps, now and later, are the user's to manage).
    SPACE_GRANTS_MIGRATION,
    // 8: what runs each instance (`c2c push`, `podman 3f2a9c1b0d2e`), as its placer said.
    RUNTIME_MIGRATION,
    // 9: budgets (issue #23): the cell that made each tag group, since when a placement waits
    // for its cell to confirm it, per-space quotas, and routes that could name an instance (a
    // dotted or all-digit host) dropped.
    "ALTER TABLE tag_groups ADD COLUMN owner TEXT;
     CREATE INDEX tag_groups_by_owner ON tag_groups(owner);
     ALTER TABLE instances ADD COLUMN waiting_since INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE cell_grants (username TEXT NOT NULL, cell TEXT NOT NULL,
        PRIMARY KEY (username, cell));
     UPDATE instances SET waiting_since = CAST(strftime('%s', 'now') AS INTEGER) WHERE ip IS NULL;
     CREATE TABLE space_quotas (space_guid TEXT PRIMARY KEY REFERENCES spaces(guid) ON DELETE CASCADE,
        max_apps INTEGER NOT NULL, max_instances INTEGER NOT NULL, max_routes INTEGER NOT NULL);
     DELETE FROM routes WHERE host LIKE '%.%' OR host NOT GLOB '*[^0-9]*';",
    // 10: what each app's sidecar does (issue #24).
    APP_SETTINGS_MIGRATION,
    // 11: the platform the database belongs to, and the replicas serving it.
    "CREATE TABLE platform (id INTEGER PRIMARY KEY CHECK (id = 1), ca_sha256 TEXT NOT NULL,
        token_sha256 TEXT NOT NULL);
     CREATE TABLE replicas (url TEXT PRIMARY KEY, seen_at INTEGER NOT NULL);",
    // 12: what each app speaks on its port (ALPN), for both dialects.
    "ALTER TABLE apps ADD COLUMN app_protocol TEXT NOT NULL DEFAULT 'http1';",
    // 13: when each instance's certificate and identity, as control last signed them, expire.
    EXPIRY_MIGRATION,
    // 14: every policy added or removed, in order (however it was: an app's deletion removes
    // its policies too), so the watches' shared view follows the changes instead of reading
    // every policy again at each revision; the oldest entries are pruned (`pruned_through`).
    // And a counter per part of the view that changes only with the tables it is read from
    // (`view_parts`), so an unchanged part is not read again either.
    "CREATE TABLE policy_journal (id INTEGER PRIMARY KEY AUTOINCREMENT, added INTEGER NOT NULL,
        source TEXT NOT NULL, destination TEXT NOT NULL, protocol TEXT NOT NULL,
        start_port INTEGER NOT NULL, end_port INTEGER NOT NULL);
     CREATE TABLE policy_journal_info (id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_through INTEGER NOT NULL);
     INSERT INTO policy_journal_info VALUES (1, 0);
     CREATE TRIGGER policies_journal_added AFTER INSERT ON policies BEGIN
        INSERT INTO policy_journal (added, source, destination, protocol, start_port, end_port)
        VALUES (1, NEW.source, NEW.destination, NEW.protocol, NEW.start_port, NEW.end_port);
     END;
     CREATE TRIGGER policies_journal_removed AFTER DELETE ON policies BEGIN
        INSERT INTO policy_journal (added, source, destination, protocol, start_port, end_port)
        VALUES (0, OLD.source, OLD.destination, OLD.protocol, OLD.start_port, OLD.end_port);
     END;
     CREATE TABLE view_parts (part TEXT PRIMARY KEY, n INTEGER NOT NULL);
     INSERT INTO view_parts VALUES ('apps', 0), ('instances', 0), ('routes', 0), ('domains', 0);
     CREATE TRIGGER apps_part_added AFTER INSERT ON apps BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'apps'; END;
     CREATE TRIGGER apps_part_changed AFTER UPDATE ON apps BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'apps'; END;
     CREATE TRIGGER apps_part_removed AFTER DELETE ON apps BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'apps'; END;
     CREATE TRIGGER instances_part_added AFTER INSERT ON instances BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'instances'; END;
     CREATE TRIGGER instances_part_changed AFTER UPDATE OF guid, app_guid, idx, cell, ip ON instances BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'instances'; END;
     CREATE TRIGGER instances_part_removed AFTER DELETE ON instances BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'instances'; END;
     CREATE TRIGGER routes_part_added AFTER INSERT ON routes BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'routes'; END;
     CREATE TRIGGER routes_part_changed AFTER UPDATE ON routes BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'routes'; END;
     CREATE TRIGGER routes_part_removed AFTER DELETE ON routes BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'routes'; END;
     CREATE TRIGGER domains_part_added AFTER INSERT ON domains BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'domains'; END;
     CREATE TRIGGER domains_part_changed AFTER UPDATE ON domains BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'domains'; END;
     CREATE TRIGGER domains_part_removed AFTER DELETE ON domains BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = 'domains'; END;",
    // 15: the probes cells host for `c2c check`, found without a scan of every instance.
    PROBES_MIGRATION,
];

/// Step 13 of both dialects (Unix seconds; NULL until signed).
const EXPIRY_MIGRATION: &str = "ALTER TABLE instances ADD COLUMN cert_expires_at BIGINT;
     ALTER TABLE instances ADD COLUMN identity_expires_at BIGINT;";

/// Step 10 of both dialects.
const APP_SETTINGS_MIGRATION: &str =
    "ALTER TABLE apps ADD COLUMN client_identity TEXT NOT NULL DEFAULT 'off';
     ALTER TABLE apps ADD COLUMN proxy_protocol TEXT NOT NULL DEFAULT 'off';";

/// Step 8 of both dialects.
const RUNTIME_MIGRATION: &str = "ALTER TABLE instances ADD COLUMN runtime TEXT;";

/// Step 7 of both dialects.
const SPACE_GRANTS_MIGRATION: &str = "CREATE TABLE space_grants (username TEXT NOT NULL,
        space_guid TEXT NOT NULL REFERENCES spaces(guid) ON DELETE CASCADE,
        PRIMARY KEY (username, space_guid));";

/// Step 6 of both dialects (nothing in it differs).
const ASG_MIGRATION: &str = "CREATE TABLE orgs (guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
     CREATE TABLE spaces (guid TEXT PRIMARY KEY, name TEXT NOT NULL,
        org_guid TEXT NOT NULL REFERENCES orgs(guid), UNIQUE (org_guid, name));
     INSERT INTO orgs VALUES ('00000000-0000-4000-8000-00000000c2c1', 'default');
     INSERT INTO spaces VALUES ('00000000-0000-4000-8000-00000000c2c2', 'default',
        '00000000-0000-4000-8000-00000000c2c1');
     ALTER TABLE apps ADD COLUMN space_guid TEXT NOT NULL
        DEFAULT '00000000-0000-4000-8000-00000000c2c2';
     CREATE TABLE security_groups (guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        rules TEXT NOT NULL);
     CREATE TABLE security_group_defaults (
        sg_guid TEXT NOT NULL REFERENCES security_groups(guid) ON DELETE CASCADE,
        lifecycle TEXT NOT NULL, PRIMARY KEY (sg_guid, lifecycle));
     CREATE TABLE security_group_spaces (
        sg_guid TEXT NOT NULL REFERENCES security_groups(guid) ON DELETE CASCADE,
        space_guid TEXT NOT NULL REFERENCES spaces(guid) ON DELETE CASCADE,
        lifecycle TEXT NOT NULL, PRIMARY KEY (sg_guid, space_guid, lifecycle));";

/// The default space's GUID (made by migration 6).
pub const DEFAULT_SPACE_GUID: &str = "00000000-0000-4000-8000-00000000c2c2";
/// The same migrations in PostgreSQL's dialect, version for version (integers are BIGINT, so
/// every value binds as one 64-bit type). PostgreSQL starts at today's schema: its step 1 is
/// what SQLite's steps 1-3 add up to.
pub(crate) const POSTGRES_MIGRATIONS: &[&str] = &[
    "CREATE TABLE revision (id BIGINT PRIMARY KEY CHECK (id = 1), rev BIGINT NOT NULL);
     INSERT INTO revision VALUES (1, 0);
     CREATE TABLE apps (guid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, tag BIGINT NOT NULL UNIQUE);
     CREATE TABLE instances (guid TEXT PRIMARY KEY,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        idx BIGINT NOT NULL, cell TEXT NOT NULL, ip TEXT,
        UNIQUE (app_guid, idx));
     CREATE INDEX instances_by_cell_v3 ON instances(cell);
     CREATE UNIQUE INDEX instances_by_ip ON instances(ip) WHERE ip IS NOT NULL;
     CREATE TABLE policies (id BIGSERIAL PRIMARY KEY,
        source TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        destination TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        protocol TEXT NOT NULL, start_port BIGINT NOT NULL, end_port BIGINT NOT NULL,
        UNIQUE (source, destination, protocol, start_port, end_port));
     CREATE INDEX policies_by_destination ON policies(destination);
     CREATE TABLE cells (name TEXT PRIMARY KEY, underlay_ip TEXT NOT NULL,
        subnet TEXT NOT NULL UNIQUE, renewed_at BIGINT NOT NULL);
     CREATE TABLE domains (name TEXT PRIMARY KEY);
     INSERT INTO domains VALUES ('apps.internal');
     CREATE TABLE routes (host TEXT NOT NULL,
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        PRIMARY KEY (host, domain, app_guid));
     CREATE TABLE cell_identities (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
        registered_at BIGINT NOT NULL);",
    "",
    "",
    "CREATE TABLE tokens (hash TEXT PRIMARY KEY, username TEXT NOT NULL, scope TEXT NOT NULL,
        created_at BIGINT NOT NULL);
     CREATE INDEX tokens_by_user ON tokens(username);
     CREATE TABLE grants (username TEXT NOT NULL,
        app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,
        PRIMARY KEY (username, app_guid));
     CREATE TABLE tag_groups (guid TEXT NOT NULL, type TEXT NOT NULL, tag BIGINT NOT NULL UNIQUE,
        PRIMARY KEY (guid, type));
     CREATE TABLE policies_info (id BIGINT PRIMARY KEY CHECK (id = 1), last_updated BIGINT NOT NULL);
     INSERT INTO policies_info VALUES (1, 0);
     CREATE FUNCTION c2c_policies_touched() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        -- Once per statement that changed a row (10,000 rows inserted at once are one
        -- update here, not 10,000 versions of this row).
        IF EXISTS (SELECT 1 FROM changed) THEN
            UPDATE policies_info SET last_updated = GREATEST(last_updated + 1,
                (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT * 1000000);
        END IF;
        RETURN NULL;
     END $$;
     CREATE TRIGGER policies_added AFTER INSERT ON policies REFERENCING NEW TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_policies_touched();
     CREATE TRIGGER policies_removed AFTER DELETE ON policies REFERENCING OLD TABLE AS changed
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_policies_touched();",
    "CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, expires_at BIGINT NOT NULL,
        cell TEXT, used_by TEXT, used_at BIGINT);",
    ASG_MIGRATION,
    SPACE_GRANTS_MIGRATION,
    RUNTIME_MIGRATION,
    // 9: as SQLite's.
    "ALTER TABLE tag_groups ADD COLUMN owner TEXT;
     CREATE INDEX tag_groups_by_owner ON tag_groups(owner);
     ALTER TABLE instances ADD COLUMN waiting_since BIGINT NOT NULL DEFAULT 0;
     CREATE TABLE cell_grants (username TEXT NOT NULL, cell TEXT NOT NULL,
        PRIMARY KEY (username, cell));
     UPDATE instances SET waiting_since = CAST(extract(epoch FROM now()) AS BIGINT) WHERE ip IS NULL;
     CREATE TABLE space_quotas (space_guid TEXT PRIMARY KEY REFERENCES spaces(guid) ON DELETE CASCADE,
        max_apps BIGINT NOT NULL, max_instances BIGINT NOT NULL, max_routes BIGINT NOT NULL);
     DELETE FROM routes WHERE host LIKE '%.%' OR host ~ '^[0-9]+$';",
    APP_SETTINGS_MIGRATION,
    // 11: as SQLite's.
    "CREATE TABLE platform (id BIGINT PRIMARY KEY CHECK (id = 1), ca_sha256 TEXT NOT NULL,
        token_sha256 TEXT NOT NULL);
     CREATE TABLE replicas (url TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);",
    // 12: what each app speaks on its port (ALPN), for both dialects.
    "ALTER TABLE apps ADD COLUMN app_protocol TEXT NOT NULL DEFAULT 'http1';",
    EXPIRY_MIGRATION,
    // 14: as SQLite's; one journal insert per statement (its rows in the order they came).
    "CREATE TABLE policy_journal (id BIGSERIAL PRIMARY KEY, added BIGINT NOT NULL,
        source TEXT NOT NULL, destination TEXT NOT NULL, protocol TEXT NOT NULL,
        start_port BIGINT NOT NULL, end_port BIGINT NOT NULL);
     CREATE TABLE policy_journal_info (id BIGINT PRIMARY KEY CHECK (id = 1),
        pruned_through BIGINT NOT NULL);
     INSERT INTO policy_journal_info VALUES (1, 0);
     CREATE FUNCTION c2c_policies_journal() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        INSERT INTO policy_journal (added, source, destination, protocol, start_port, end_port)
        SELECT CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE 0 END, source, destination, protocol,
            start_port, end_port FROM journaled;
        RETURN NULL;
     END $$;
     CREATE TRIGGER policies_journal_added AFTER INSERT ON policies
        REFERENCING NEW TABLE AS journaled
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_policies_journal();
     CREATE TRIGGER policies_journal_removed AFTER DELETE ON policies
        REFERENCING OLD TABLE AS journaled
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_policies_journal();
     CREATE TABLE view_parts (part TEXT PRIMARY KEY, n BIGINT NOT NULL);
     INSERT INTO view_parts VALUES ('apps', 0), ('instances', 0), ('routes', 0), ('domains', 0);
     CREATE FUNCTION c2c_view_part() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        UPDATE view_parts SET n = n + 1 WHERE part = TG_ARGV[0];
        RETURN NULL;
     END $$;
     CREATE TRIGGER apps_part AFTER INSERT OR UPDATE OR DELETE ON apps
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_view_part('apps');
     CREATE TRIGGER instances_part
        AFTER INSERT OR DELETE OR UPDATE OF guid, app_guid, idx, cell, ip ON instances
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_view_part('instances');
     CREATE TRIGGER routes_part AFTER INSERT OR UPDATE OR DELETE ON routes
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_view_part('routes');
     CREATE TRIGGER domains_part AFTER INSERT OR UPDATE OR DELETE ON domains
        FOR EACH STATEMENT EXECUTE FUNCTION c2c_view_part('domains');",
    PROBES_MIGRATION,
];

/// Step 15 of both dialects (see [`crate::state::State::probes_hosted`]).
const PROBES_MIGRATION: &str =
    "CREATE INDEX instances_probes ON instances(cell) WHERE runtime LIKE 'probe:%';";
