-- Nexmark Query 3: local item suggestion. Who is selling in OR, ID or CA in category 10,
-- and for what auction ids? A regular join of two streams.
-- Flink: SELECT P.name, P.city, P.state, A.id
--        FROM auction AS A INNER JOIN person AS P on A.seller = P.id
--        WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')
-- Differs: the nexmark crate writes states in lower case ('or', not 'OR'). An inner join of two append-only streams emits append-only rows (run in
-- append mode, the default); each side's rows stay in state (set state_ttl to bound it).
-- The streams, made in-process by the nexmark crate (the same seed for each table, so ids
-- agree across them; drop max_events for endless streams; for the topics that
-- `sluice gen --nexmark` fills, use connector = 'kafka' with the same columns: README.md).
CREATE TABLE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
                      reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT,
                      category BIGINT, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'auction', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');
CREATE TABLE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
                     city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'person', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT p.name, p.city, p.state, a.id
FROM auction a JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca');
