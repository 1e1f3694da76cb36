-- Crash sessions: per user, crash reports less than 30 seconds apart form one session
-- (Spark's session_window); each session is emitted once, when the watermark passes
-- its end, with how many crashes it held and when they started and stopped.
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

SELECT session(event_time, INTERVAL '30 seconds') AS session, user_id,
       count(*) AS crashes, min(event_time) AS first_crash, max(event_time) AS last_crash
FROM logs
WHERE lower(content) LIKE '%crash%' AND severity IN ('High', 'Critical')
GROUP BY session(event_time, INTERVAL '30 seconds'), user_id
HAVING count(*) > 1;
