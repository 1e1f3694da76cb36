-- Crash reports followed within one minute by a login of the same user from another
-- source IP: a stream–stream join of the log stream with itself. An inner join of two
-- append-only inputs: append output, each pair written once, whichever record arrives
-- first. The condition on the timestamps is evaluated per pair; both sides' rows stay in
-- state until state_ttl drops them (interval joins that free rows by the watermark are
-- not built yet), so the TTL below bounds the state to about ten minutes of keys.
CREATE TABLE logs (
    timestamp BIGINT,
    status VARCHAR,
    severity VARCHAR,
    source_ip VARCHAR,
    user_id VARCHAR,
    content VARCHAR
) WITH (
    connector = 'kafka',
    topic = 'logs',
    bootstrap_servers = 'localhost:9092',
    starting_offsets = 'earliest',
    format = 'json',
    state_ttl = '10 minutes'
);

SELECT c.user_id, c.timestamp AS crash_at, l.timestamp AS login_at,
       c.source_ip AS crash_ip, l.source_ip AS login_ip
FROM logs c
JOIN logs l
  ON c.user_id = l.user_id
 AND c.source_ip <> l.source_ip
 AND l.timestamp BETWEEN c.timestamp AND c.timestamp + 60000
WHERE lower(c.content) LIKE '%crash%'
  AND lower(l.content) LIKE '%login%';
