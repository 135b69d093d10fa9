-- Camera events (one row per event of a rule, or per camera offline period) and line-crossing
-- counts per minute. Operators mark false positives; precision per camera, zone and rule is a
-- view over those marks so thresholds are tuned from evidence.
CREATE TABLE camera_events (
    start_at        timestamptz NOT NULL,
    id              text NOT NULL,
    camera_id       text NOT NULL,
    org_unit_id     text NOT NULL,
    rule            text NOT NULL CHECK (rule IN ('intrusion', 'crowding', 'loitering',
                                                  'line_crossing', 'stopped_vehicle', 'tampering',
                                                  'camera_offline')),
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
    reviewed_at     timestamptz,
    CHECK (end_at IS NULL OR end_at >= start_at)
);
SELECT create_hypertable('camera_events', by_range('start_at', INTERVAL '7 days'));
CREATE UNIQUE INDEX camera_events_id ON camera_events (id, start_at);
CREATE INDEX camera_events_camera_time ON camera_events (camera_id, start_at DESC);
CREATE INDEX camera_events_rule_time ON camera_events (rule, start_at DESC);

-- Line-crossing counts (vehicles or people per minute and direction) as a time series.
CREATE TABLE camera_counts (
    time        timestamptz NOT NULL,
    camera_id   text NOT NULL,
    zone        text NOT NULL,
    direction   text NOT NULL CHECK (direction IN ('in', 'out')),
    label       text NOT NULL,
    count       integer NOT NULL CHECK (count >= 0),
    PRIMARY KEY (camera_id, zone, direction, label, time)
);
SELECT create_hypertable('camera_counts', by_range('time', INTERVAL '7 days'));

-- Precision from operator review: events not marked false positive over events reviewed.
CREATE VIEW camera_event_precision AS
SELECT camera_id, zone, rule,
       count(*) AS events,
       count(*) FILTER (WHERE false_positive IS NOT NULL) AS reviewed,
       count(*) FILTER (WHERE false_positive) AS false_positives,
       CASE WHEN count(*) FILTER (WHERE false_positive IS NOT NULL) = 0 THEN NULL
            ELSE (count(*) FILTER (WHERE false_positive = false))::double precision
                 / count(*) FILTER (WHERE false_positive IS NOT NULL) END AS precision
FROM camera_events
WHERE rule <> 'camera_offline'
GROUP BY camera_id, zone, rule;
