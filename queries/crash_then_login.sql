-- Crash reports followed within one minute by a login of the same user from another
-- source IP: a stream–stream join of the log stream with itself. The BETWEEN on the
-- event times makes it an interval join: a crash stays in state until the watermark is a
-- minute past it, a login until the watermark passes it (no crash to come can precede
-- it), so state holds about a minute plus the watermark delay of records. An inner join of
-- two append-only inputs: append output, each pair written once, whichever record arrives
-- first; logins more than 5 s behind the newest record are late and dropped (counted).
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
    event_time = 'timestamp',
    watermark_delay = '5 seconds'
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
