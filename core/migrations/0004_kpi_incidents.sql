-- KPIs against the plan's targets, rules, incidents, dispatch and the audit trail (issue 5).

-- Input streams this migration reads. Migration 0003 (ingestion) and 0002 (camera events) create
-- them with these exact columns; on a database without those migrations they are created here so
-- the KPI engine has its inputs. IF NOT EXISTS keeps one definition where both run.
CREATE TABLE IF NOT EXISTS dossier_events (
    time              timestamptz NOT NULL,
    source_id         text NOT NULL,
    org_unit_id       text NOT NULL,
    msg_id            text NOT NULL,
    dossier_id        text NOT NULL,
    event             text NOT NULL CHECK (event IN ('received', 'in_progress', 'transferred',
                                   'completed_on_time', 'completed_late', 'returned')),
    channel           text NOT NULL CHECK (channel IN ('online', 'counter')),
    procedure_code    text NOT NULL,
    agency            text NOT NULL,
    dossier_org_unit  text NOT NULL,
    end_to_end        boolean,
    ingested_at       timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('dossier_events', by_range('time', INTERVAL '30 days'),
                         if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS dossier_events_msg ON dossier_events (source_id, msg_id, time);

CREATE TABLE IF NOT EXISTS field_reports (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    report_id    text NOT NULL,
    category     text NOT NULL,
    status       text NOT NULL,
    lat          double precision,
    lon          double precision,
    description  text,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('field_reports', by_range('time', INTERVAL '30 days'),
                         if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS field_reports_msg ON field_reports (source_id, msg_id, time);
CREATE INDEX IF NOT EXISTS field_reports_report ON field_reports (report_id, time DESC);

CREATE TABLE IF NOT EXISTS budget_status (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    budget_unit  text NOT NULL,
    fiscal_year  integer NOT NULL,
    plan         text NOT NULL,
    status       text NOT NULL,
    amount_vnd   bigint,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('budget_status', by_range('time', INTERVAL '90 days'),
                         if_not_exists => true);
CREATE INDEX IF NOT EXISTS budget_status_unit ON budget_status (budget_unit, fiscal_year, time DESC);

CREATE TABLE IF NOT EXISTS wifi_logins (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    device_hash  text NOT NULL,
    method       text NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('wifi_logins', by_range('time', INTERVAL '7 days'), if_not_exists => true);

CREATE TABLE IF NOT EXISTS stream_records (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    stream       text NOT NULL,
    data         jsonb NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('stream_records', by_range('time', INTERVAL '7 days'),
                         if_not_exists => true);

CREATE TABLE IF NOT EXISTS camera_events (
    start_at        timestamptz NOT NULL,
    id              text NOT NULL,
    camera_id       text NOT NULL,
    org_unit_id     text NOT NULL,
    rule            text NOT NULL,
    zone            text,
    label           text NOT NULL DEFAULT '',
    track_ids       integer[] NOT NULL DEFAULT '{}',
    end_at          timestamptz,
    peak_count      integer NOT NULL DEFAULT 1,
    best_score      real NOT NULL DEFAULT 0,
    model           text NOT NULL DEFAULT '',
    model_version   text NOT NULL DEFAULT '',
    snapshot        text,
    detail          jsonb NOT NULL DEFAULT '{}',
    false_positive  boolean,
    reviewed_by     text,
    reviewed_at     timestamptz
);
SELECT create_hypertable('camera_events', by_range('start_at', INTERVAL '7 days'),
                         if_not_exists => true);
CREATE UNIQUE INDEX IF NOT EXISTS camera_events_id ON camera_events (id, start_at);

-- ---------------------------------------------------------------- KPI rollups
-- Hours whose input rows changed (written by row triggers in the writer's transaction): the KPI
-- job recomputes exactly these hourly buckets, late data included, never the whole history.
CREATE TABLE kpi_dirty (
    input   text NOT NULL,
    bucket  timestamptz NOT NULL,
    PRIMARY KEY (input, bucket)
);

CREATE FUNCTION kpi_mark_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE t timestamptz;
BEGIN
    IF TG_ARGV[0] = 'start_at' THEN
        t := NEW.start_at;
    ELSIF TG_ARGV[0] = 'bucket' THEN
        t := NEW.bucket;
    ELSE
        t := NEW.time;
    END IF;
    -- TG_TABLE_NAME would name the chunk of a hypertable: the table is the second argument
    INSERT INTO kpi_dirty (input, bucket) VALUES (TG_ARGV[1], date_trunc('hour', t))
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER dossier_events_kpi AFTER INSERT OR UPDATE ON dossier_events
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('time', 'dossier_events');
CREATE TRIGGER field_reports_kpi AFTER INSERT OR UPDATE ON field_reports
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('time', 'field_reports');
CREATE TRIGGER wifi_logins_kpi AFTER INSERT ON wifi_logins
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('time', 'wifi_logins');
CREATE TRIGGER stream_records_kpi AFTER INSERT ON stream_records
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('time', 'stream_records');
CREATE TRIGGER telemetry_kpi AFTER INSERT ON telemetry
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('time', 'telemetry');
CREATE TRIGGER camera_events_kpi AFTER INSERT OR UPDATE ON camera_events
    FOR EACH ROW EXECUTE FUNCTION kpi_mark_dirty('start_at', 'camera_events');
-- wifi_ap_1m is created after migrations by core.timescale.ensure_storage; the KPI job attaches
-- the same trigger to it (Apache edition) or rescans its recent hours (continuous aggregate).

-- One row per (measure, org unit, hour): count, sum and, for percentile KPIs, a histogram over
-- the measure's declared bin edges. Every calendar and rolling window is a sum of these rows.
CREATE TABLE kpi_rollup (
    measure      text NOT NULL,
    org_unit_id  text NOT NULL,
    bucket       timestamptz NOT NULL,
    n            bigint NOT NULL,
    total        double precision NOT NULL,
    hist         bigint[],
    PRIMARY KEY (measure, org_unit_id, bucket)
);
SELECT create_hypertable('kpi_rollup', by_range('bucket', INTERVAL '90 days'));

-- Measures whose history has been backfilled once (a new measure in the site file is built from
-- the raw rows one time, then kept incrementally).
CREATE TABLE kpi_measures (
    measure     text PRIMARY KEY,
    input       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The current value of every KPI per org unit and window, what dashboards read (one row each);
-- kpi_values keeps the history of changes.
CREATE TABLE kpi_current (
    kpi_id       text NOT NULL,
    org_unit_id  text NOT NULL,
    "window"     text NOT NULL,
    value        double precision,
    target       double precision,
    status       text CHECK (status IN ('on_track', 'at_risk', 'missed')),
    forecast     double precision,
    period_end   timestamptz,
    detail       jsonb NOT NULL DEFAULT '{}',
    computed_at  timestamptz NOT NULL,
    PRIMARY KEY (kpi_id, org_unit_id, "window")
);
CREATE INDEX kpi_current_unit ON kpi_current (org_unit_id);
ALTER TABLE kpi_values ADD COLUMN status text, ADD COLUMN forecast double precision;

-- Dossier state (one row per dossier), kept by a trigger on dossier_events; the due time in
-- working days is filled by the KPI job (Vietnam's calendar lives in Python, from `holidays`).
CREATE TABLE dossier_state (
    dossier_id      text PRIMARY KEY,
    org_unit_id     text NOT NULL,
    agency          text NOT NULL,
    procedure_code  text NOT NULL,
    channel         text NOT NULL,
    received_at     timestamptz,
    status          text NOT NULL,
    last_event_at   timestamptz NOT NULL,
    completed_at    timestamptz,
    due_at          timestamptz,
    due_days        integer
);
CREATE INDEX dossier_state_open ON dossier_state (org_unit_id, due_at) WHERE completed_at IS NULL;
CREATE INDEX dossier_state_due_missing ON dossier_state (dossier_id) WHERE due_at IS NULL;

CREATE FUNCTION dossier_state_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dossier_state AS s (dossier_id, org_unit_id, agency, procedure_code, channel,
                                    received_at, status, last_event_at, completed_at)
    VALUES (NEW.dossier_id, NEW.dossier_org_unit, NEW.agency, NEW.procedure_code, NEW.channel,
            CASE WHEN NEW.event = 'received' THEN NEW.time END, NEW.event, NEW.time,
            CASE WHEN NEW.event IN ('completed_on_time', 'completed_late', 'returned')
                 THEN NEW.time END)
    ON CONFLICT (dossier_id) DO UPDATE SET
        received_at = CASE WHEN NEW.event = 'received'
                           THEN least(s.received_at, NEW.time) ELSE s.received_at END,
        status = CASE WHEN NEW.time >= s.last_event_at THEN NEW.event ELSE s.status END,
        org_unit_id = CASE WHEN NEW.time >= s.last_event_at THEN NEW.dossier_org_unit
                           ELSE s.org_unit_id END,
        agency = CASE WHEN NEW.time >= s.last_event_at THEN NEW.agency ELSE s.agency END,
        last_event_at = greatest(s.last_event_at, NEW.time),
        completed_at = CASE WHEN NEW.event IN ('completed_on_time', 'completed_late', 'returned')
                            THEN greatest(s.completed_at, NEW.time) ELSE s.completed_at END,
        due_at = CASE WHEN NEW.event = 'received' AND s.received_at IS DISTINCT FROM
                               least(s.received_at, NEW.time) THEN NULL ELSE s.due_at END;
    RETURN NULL;
END $$;
CREATE TRIGGER dossier_events_state AFTER INSERT ON dossier_events
    FOR EACH ROW EXECUTE FUNCTION dossier_state_apply();

-- ---------------------------------------------------------------- incidents
CREATE TABLE incidents (
    id                  bigserial PRIMARY KEY,
    dedup_key           text NOT NULL,
    rule_id             text NOT NULL,
    kind                text NOT NULL,
    domain              text NOT NULL DEFAULT 'general',
    severity            text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low',
                                                          'info')),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged',
                            'assigned', 'in_progress', 'resolved', 'closed')),
    title               text NOT NULL,
    org_unit_id         text NOT NULL REFERENCES org_units (id),
    source_id           text,
    lat                 double precision,
    lon                 double precision,
    team                text,
    opened_at           timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    occurrences         integer NOT NULL DEFAULT 1,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    assigned_to         text,
    resolved_at         timestamptz,
    closed_at           timestamptz,
    auto_resolve        boolean NOT NULL DEFAULT true,
    ack_due_at          timestamptz,
    resolve_due_at      timestamptz,
    escalation_level    integer NOT NULL DEFAULT 0,
    next_escalation_at  timestamptz,
    parent_id           bigint REFERENCES incidents (id),
    evidence            jsonb NOT NULL DEFAULT '[]',
    version             integer NOT NULL DEFAULT 1
);
-- One open incident per deduplication key: a repeat bumps its counter instead of a new row.
CREATE UNIQUE INDEX incidents_one_open_per_key ON incidents (dedup_key)
    WHERE status NOT IN ('resolved', 'closed');
CREATE INDEX incidents_status ON incidents (status, opened_at DESC);
CREATE INDEX incidents_escalation ON incidents (next_escalation_at)
    WHERE status = 'open' AND next_escalation_at IS NOT NULL;
CREATE INDEX incidents_unit ON incidents (org_unit_id, opened_at DESC);

-- Timeline of an incident: transitions (who, when, note), escalations, notifications, evidence.
CREATE TABLE incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    from_status  text,
    to_status    text,
    note         text NOT NULL DEFAULT '',
    data         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

-- Per rule and key: pending timers, flap history and the firing flag (the engine's memory).
CREATE TABLE rule_state (
    rule_id     text NOT NULL,
    key         text NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (rule_id, key)
);

-- Silences and maintenance windows: matching rules open no incident between starts and ends.
CREATE TABLE silences (
    id           bigserial PRIMARY KEY,
    rule_id      text,
    org_unit_id  text,
    source_id    text,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_active ON silences (ends_at);

-- ---------------------------------------------------------------- dispatch
CREATE TABLE staff (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('field', 'operator', 'duty_leader', 'leader')),
    team          text NOT NULL,
    org_unit_id   text NOT NULL REFERENCES org_units (id),
    email         text,
    phone         text,
    zalo_id       text,
    username      text,
    lat           double precision,
    lon           double precision,
    located_at    timestamptz,
    active        boolean NOT NULL DEFAULT true
);
CREATE TABLE duty_shifts (
    id         bigserial PRIMARY KEY,
    staff_id   text NOT NULL REFERENCES staff (id),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX duty_shifts_time ON duty_shifts (starts_at, ends_at);

CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    incident_id  bigint REFERENCES incidents (id),
    staff_id     text NOT NULL,
    channel      text NOT NULL,
    purpose      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    fallback_of  bigint REFERENCES notifications (id),
    created_at   timestamptz NOT NULL,
    sent_at      timestamptz
);
CREATE INDEX notifications_incident ON notifications (incident_id);
CREATE TABLE notification_attempts (
    notification_id  bigint NOT NULL REFERENCES notifications (id),
    attempt          integer NOT NULL,
    at               timestamptz NOT NULL,
    ok               boolean NOT NULL,
    error            text,
    PRIMARY KEY (notification_id, attempt)
);

-- ---------------------------------------------------------------- reports
CREATE TABLE kpi_reports (
    id           bigserial PRIMARY KEY,
    org_unit_id  text NOT NULL,
    period       text NOT NULL,
    formats      text[] NOT NULL,
    files        text[] NOT NULL,
    generated_at timestamptz NOT NULL,
    trigger      text NOT NULL CHECK (trigger IN ('schedule', 'demand')),
    sent_to      text,
    send_error   text
);
CREATE UNIQUE INDEX kpi_reports_scheduled ON kpi_reports (org_unit_id, period)
    WHERE trigger = 'schedule';

-- ---------------------------------------------------------------- audit
-- Append-only: every state change of incidents, rules, silences and assignments with actor,
-- time, before and after. The application role may only INSERT and SELECT; a trigger refuses
-- UPDATE, DELETE and TRUNCATE for every role, except inside audit_purge() (retention, run by the
-- owner), which sets a transaction-local flag first.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    action      text NOT NULL,
    before      jsonb,
    after       jsonb,
    db_user     text NOT NULL DEFAULT current_user
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);

CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ioc.audit_purge', true) = 'on' AND TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();

-- The maintenance path: delete audit rows older than the retention horizon (never newer than
-- the 3 months the security rules require). Only the owner may run it.
CREATE FUNCTION audit_purge(older_than timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    IF older_than > now() - INTERVAL '92 days' THEN
        RAISE EXCEPTION 'audit rows are kept at least 3 months';
    END IF;
    PERFORM set_config('ioc.audit_purge', 'on', true);
    DELETE FROM audit_log WHERE at < older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('ioc.audit_purge', 'off', true);
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION audit_purge(timestamptz) FROM PUBLIC;

-- ---------------------------------------------------------------- the application role
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ioc_app') THEN
    GRANT SELECT, INSERT ON audit_log, incident_events, notification_attempts TO ioc_app;
    GRANT SELECT, INSERT, UPDATE ON incidents, silences, rule_state, notifications, staff,
          duty_shifts TO ioc_app;
    GRANT SELECT ON kpi_current, kpi_values, kpi_rollup, dossier_state, kpi_reports, org_units,
          sources TO ioc_app;
    GRANT USAGE ON SEQUENCE audit_log_id_seq, incident_events_id_seq, incidents_id_seq,
          silences_id_seq, notifications_id_seq, duty_shifts_id_seq TO ioc_app;
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM ioc_app;
  END IF;
END $$;
