-- Nexmark Query 4: the average winning bid price per category (winning bid = the highest
-- bid of an auction made while it was open).
-- Flink: SELECT Q.category, AVG(Q.final)
--        FROM (SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
--              WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
--              GROUP BY A.id, A.category) Q
--        GROUP BY Q.category
-- Differs: nothing. A join, an aggregate over its rows, and an aggregate over that
-- aggregate's changes: an updating result keyed by category (run with --output-mode
-- changelog, update into Kafka, or complete). The join keeps every bid and auction
-- (the BETWEEN bound is per auction, not a fixed interval; set state_ttl to bound it).
-- The streams, made in-process by the nexmark crate (the same seed for each table, so ids
-- agree across them; drop max_events for endless streams; for the topics that
-- `sluice gen --nexmark` fills, use connector = 'kafka' with the same columns: README.md).
CREATE TABLE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
                      reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT,
                      category BIGINT, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'auction', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT q.category, avg(q.final) AS avg_final
FROM (SELECT max(b.price) AS final, a.category
      FROM auction a JOIN bid b ON a.id = b.auction
      WHERE b.date_time BETWEEN a.date_time AND a.expires
      GROUP BY a.id, a.category) q
GROUP BY q.category;
