-- Nexmark Query 5: hot items. Which auctions have the most bids in each sliding window
-- (10 seconds, every 2 seconds)? Per-window counts joined with the per-window maximum
-- of those counts: a join of a windowed aggregate with an aggregate over it.
-- Flink: SELECT AuctionBids.auction, AuctionBids.num
--        FROM (SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
--              FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
--              GROUP BY auction, window_start, window_end) AS AuctionBids
--        JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
--              FROM (SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
--                    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
--                    GROUP BY auction, window_start, window_end) AS CountBids
--              GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
--        ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
--           AND AuctionBids.num >= MaxBids.maxn
-- Differs: the window is a group key, hop(date_time, slide, size), a struct whose start and
-- end the subqueries take apart (Flink's window table function has the two columns). Each
-- window is emitted once by the windowed aggregate when the watermark passes its end;
-- the aggregate over it is final for that window in the same batch; the join emits
-- append-only rows.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction_bids.auction, auction_bids.num
FROM (SELECT auction, num, w['start'] AS starttime, w['end'] AS endtime
      FROM (SELECT auction, count(*) AS num,
                   hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS w
            FROM bid
            GROUP BY auction, hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) a) auction_bids
JOIN (SELECT max(num) AS maxn, starttime, endtime
      FROM (SELECT w['start'] AS starttime, w['end'] AS endtime, num
            FROM (SELECT count(*) AS num,
                         hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS w
                  FROM bid
                  GROUP BY auction, hop(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) c) count_bids
      GROUP BY starttime, endtime) max_bids
  ON auction_bids.starttime = max_bids.starttime AND auction_bids.endtime = max_bids.endtime
 AND auction_bids.num >= max_bids.maxn;
