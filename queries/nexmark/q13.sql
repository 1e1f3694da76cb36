-- Nexmark Query 13: bounded side input join (stream enrichment).
-- Flink: SELECT B.auction, B.bidder, B.price, B.dateTime, S.value
--        FROM (SELECT *, PROCTIME() as p_time FROM bid) B
--        JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON mod(B.auction, 10000) = S.key
-- Differs: the side input is a static table (connector 'filesystem'), joined by a lookup
-- join whose hash table is built once; no PROCTIME / FOR SYSTEM_TIME AS OF needed.
-- Run from the repository root (the path is relative).
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

CREATE TABLE side_input ("key" BIGINT, "value" VARCHAR)
WITH (connector = 'filesystem', path = 'queries/nexmark/side_input.csv', format = 'csv');
SELECT b.auction, b.bidder, b.price, b.date_time, s."value"
FROM bid b JOIN side_input s ON b.auction % 10000 = s."key";
