-- Nexmark Query 11: user sessions. How many bids did each bidder make in each session
-- of activity (bids less than 10 seconds apart)?
-- Flink: SELECT B.bidder, count(*) AS bid_count,
--          SESSION_START(B.dateTime, INTERVAL '10' SECOND) AS starttime,
--          SESSION_END(B.dateTime, INTERVAL '10' SECOND) AS endtime
--        FROM bid B GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND)
-- Differs: the session is a group key, session(date_time, gap), a struct whose start and
-- end the outer query takes apart (Flink's legacy SESSION_START / SESSION_END). A session
-- is [first bid, last bid + 10 s), as in Flink. Each session is emitted once, when the
-- watermark passes its end: append output, as in Flink.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT bidder, bid_count, s['start'] AS starttime, s['end'] AS endtime
FROM (SELECT bidder, count(*) AS bid_count, session(date_time, INTERVAL '10' SECOND) AS s
      FROM bid
      GROUP BY bidder, session(date_time, INTERVAL '10' SECOND)) t;
