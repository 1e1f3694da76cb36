-- Query 1 of the seed workload: high-severity records whose content mentions
-- "vulnerability" (any case), counted per source IP over the whole stream, all groups
-- every batch, largest first (Spark's complete output mode).
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
    format = 'json'
);

SELECT source_ip, count(*) AS count
FROM logs
WHERE lower(content) LIKE '%vulnerability%' AND severity = 'High'
GROUP BY source_ip
ORDER BY count DESC;
