-- Query 2 of the seed workload: records whose content mentions "crash" (any case) with
-- severity High or Critical, counted per user in 10-second tumbling windows of the
-- record's own event time, each window output once when complete (append mode), only
-- users with more than 2 crashes in it. Watermark: 30 seconds behind the largest event
-- time seen; records behind it are dropped and counted.
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
    event_time = 'to_timestamp_millis("timestamp")',
    watermark_delay = '30 seconds'
);

SELECT tumble(event_time, INTERVAL '10 seconds') AS "interval",
       user_id,
       count(*) AS crash_count
FROM logs
WHERE lower(content) LIKE '%crash%' AND severity IN ('High', 'Critical')
GROUP BY tumble(event_time, INTERVAL '10 seconds'), user_id
HAVING count(*) > 2;
