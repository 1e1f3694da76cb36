-- Kafka sink throughput: a stateless filter writing about a quarter of the records
-- (severity High) as keyed JSON messages to topic `sink-bench`, one transaction per
-- batch. Create the topic first (scripts/kafka-local.sh topic sink-bench 2), then:
--   sluice run benchmarks/kafka_sink.sql --source generator:2000000 --available-now \
--     --max-records-per-batch 500000
CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR,
                   user_id VARCHAR, content VARCHAR)
WITH (connector = 'generator');
CREATE TABLE out WITH (connector = 'kafka', topic = 'sink-bench',
                       bootstrap_servers = 'localhost:9092', key = 'user_id');
INSERT INTO out SELECT timestamp, severity, source_ip, user_id, content FROM logs
WHERE severity = 'High';
