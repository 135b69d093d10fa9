-- Base schema: org-unit tree, sources, time-series hypertables, dead letters, users.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE org_units (
    id          text PRIMARY KEY,
    parent_id   text REFERENCES org_units (id) DEFERRABLE INITIALLY DEFERRED,
    kind        text NOT NULL CHECK (kind IN ('province', 'department', 'district', 'commune',
                                              'ward', 'town', 'agency')),
    name        text NOT NULL,
    name_en     text,
    lat         double precision,
    lon         double precision,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX org_units_parent ON org_units (parent_id);

CREATE TABLE sources (
    id                  text PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('camera', 'wifi_gateway', 'wifi_ap',
                                                      'service_system', 'sensor')),
    org_unit_id         text NOT NULL REFERENCES org_units (id),
    name                text NOT NULL,
    lat                 double precision,
    lon                 double precision,
    expected_interval_s double precision NOT NULL DEFAULT 60,
    active              boolean NOT NULL DEFAULT true,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_org_unit ON sources (org_unit_id);

-- WiFi access-point readings: one row per status message. The (source, message id, time) key
-- absorbs redeliveries: a message stored twice is stored once.
CREATE TABLE wifi_ap_readings (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    up           boolean NOT NULL,
    clients      integer NOT NULL,
    rx_bytes     bigint,
    tx_bytes     bigint,
    logins       integer,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('wifi_ap_readings', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX wifi_ap_readings_msg ON wifi_ap_readings (source_id, msg_id, time);
CREATE INDEX wifi_ap_readings_source_time ON wifi_ap_readings (source_id, time DESC);

-- Numeric telemetry of sensors and gauges (narrow: one metric a row).
CREATE TABLE telemetry (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    metric       text NOT NULL,
    value        double precision NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('telemetry', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX telemetry_msg ON telemetry (source_id, msg_id, metric, time);
CREATE INDEX telemetry_source_metric_time ON telemetry (source_id, metric, time DESC);

-- Business and camera events (dossiers, field reports, detections, source offline …).
CREATE TABLE events (
    time         timestamptz NOT NULL,
    source_id    text NOT NULL,
    org_unit_id  text NOT NULL,
    msg_id       text NOT NULL,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    ingested_at  timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('events', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX events_msg ON events (source_id, msg_id, time);
CREATE INDEX events_kind_time ON events (kind, time DESC);

-- KPI values as a time series: the trend of every KPI per org unit and window.
CREATE TABLE kpi_values (
    time         timestamptz NOT NULL,
    kpi_id       text NOT NULL,
    org_unit_id  text NOT NULL,
    "window"     text NOT NULL DEFAULT 'now',
    value        double precision NOT NULL,
    target       double precision,
    PRIMARY KEY (kpi_id, org_unit_id, "window", time)
);
SELECT create_hypertable('kpi_values', by_range('time', INTERVAL '7 days'));

-- Rejected input, kept with its reason so nothing is silently lost.
CREATE TABLE dead_letters (
    received_at  timestamptz NOT NULL DEFAULT now(),
    transport    text NOT NULL,
    topic        text,
    source_id    text,
    reason       text NOT NULL,
    payload      bytea
);
SELECT create_hypertable('dead_letters', by_range('received_at', INTERVAL '7 days'));
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);

-- Minute buckets touched by new rows, written in the same transaction as the rows: the project's
-- own rollup job (Apache edition) recomputes exactly these buckets, late data included.
CREATE TABLE rollup_dirty (
    rollup     text NOT NULL,
    bucket     timestamptz NOT NULL,
    source_id  text NOT NULL,
    PRIMARY KEY (rollup, bucket, source_id)
);

-- Jobs the project runs itself where the edition has no native policies.
CREATE TABLE job_runs (
    job         text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,62}$'),
    display_name   text NOT NULL DEFAULT '',
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'operator', 'leader', 'field')),
    org_unit_id    text NOT NULL REFERENCES org_units (id),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);
