-- Typed streams (issue 3): one table per business stream where its own shape makes queries
-- cheaper; site-declared streams in stream_records. Every table keeps the idempotency key
-- (source, message id, time) so a redelivered message is stored once.

-- Public-WiFi logins. The device is kept only as a keyed hash (never a raw MAC).
CREATE TABLE wifi_logins (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    device_hash  text NOT NULL CHECK (device_hash ~ '^[0-9a-f]{32}$'),
    method       text NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('wifi_logins', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX wifi_logins_msg ON wifi_logins (source_id, msg_id, time);

-- One-stop-shop dossier events (received, transferred, completed on time / late, returned …).
CREATE TABLE dossier_events (
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
SELECT create_hypertable('dossier_events', by_range('time', INTERVAL '30 days'));
CREATE UNIQUE INDEX dossier_events_msg ON dossier_events (source_id, msg_id, time);
CREATE INDEX dossier_events_unit_time ON dossier_events (dossier_org_unit, time DESC);
CREATE INDEX dossier_events_dossier ON dossier_events (dossier_id, time DESC);

CREATE TABLE payments (
    time            timestamptz NOT NULL,
    source_id       text NOT NULL,
    org_unit_id     text NOT NULL,
    msg_id          text NOT NULL,
    payment_id      text NOT NULL,
    dossier_id      text,
    amount_vnd      bigint NOT NULL CHECK (amount_vnd >= 0),
    method          text NOT NULL,
    status          text NOT NULL,
    procedure_code  text,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('payments', by_range('time', INTERVAL '30 days'));
CREATE UNIQUE INDEX payments_msg ON payments (source_id, msg_id, time);

CREATE TABLE field_reports (
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
SELECT create_hypertable('field_reports', by_range('time', INTERVAL '30 days'));
CREATE UNIQUE INDEX field_reports_msg ON field_reports (source_id, msg_id, time);
CREATE INDEX field_reports_report ON field_reports (report_id, time DESC);

CREATE TABLE press_items (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    item_id      text NOT NULL,
    outlet       text NOT NULL,
    topic        text NOT NULL,
    sentiment    double precision NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
    title        text,
    url          text,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('press_items', by_range('time', INTERVAL '30 days'));
CREATE UNIQUE INDEX press_items_msg ON press_items (source_id, msg_id, time);

-- Budget-estimate submission status per budget unit (tình hình nộp dự toán).
CREATE TABLE budget_status (
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
SELECT create_hypertable('budget_status', by_range('time', INTERVAL '90 days'));
CREATE UNIQUE INDEX budget_status_msg ON budget_status (source_id, msg_id, time);
CREATE INDEX budget_status_unit ON budget_status (budget_unit, fiscal_year, time DESC);

-- Streams declared in the site file: validated against their declaration, stored as JSONB.
CREATE TABLE stream_records (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    stream       text NOT NULL,
    data         jsonb NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('stream_records', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX stream_records_msg ON stream_records (source_id, msg_id, time);
CREATE INDEX stream_records_stream_time ON stream_records (stream, time DESC);

-- Dead letters get a short reason code, counted per source in Redis.
ALTER TABLE dead_letters ADD COLUMN code text NOT NULL DEFAULT 'invalid';
