-- Nexmark Query 12: processing-time windows. How many bids does each bidder make in each
-- 10 seconds of processing time?
-- Flink: CREATE VIEW B AS SELECT *, PROCTIME() AS p_time FROM bid;
--        SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
--        FROM TABLE(TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
--        GROUP BY bidder, window_start, window_end
-- Differs: the table's time is processing time (event_time = 'proctime()': each row's
-- time is the wall clock when Sluice processes its batch), so the virtual event_time
-- column plays p_time's part; the window is a group key, tumble(event_time, …), taken
-- apart by the outer query. The answer depends on when rows are processed, so it is not
-- reproducible (in Flink neither): which window a bid lands in depends on the speed of
-- the run; only the total per bidder over all windows is fixed. A window is emitted once
-- the wall clock passes its end (the watermark is the clock; no row is ever late).
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'proctime()');

SELECT bidder, bid_count, w['start'] AS starttime, w['end'] AS endtime
FROM (SELECT bidder, count(*) AS bid_count, tumble(event_time, INTERVAL '10' SECOND) AS w
      FROM bid
      GROUP BY bidder, tumble(event_time, INTERVAL '10' SECOND)) t;
