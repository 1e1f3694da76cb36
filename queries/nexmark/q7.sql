-- Nexmark Query 7: highest bid. The bids of each 10-second window that carry its highest
-- price: bids joined with an aggregate of the same stream.
-- Flink: SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra
--        FROM bid B
--        JOIN (SELECT MAX(price) AS maxprice, window_end as dateTime
--              FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
--              GROUP BY window_start, window_end) B1
--        ON B.price = B1.maxprice
--        WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime
-- Differs: the window is a group key, tumble(date_time, …), whose end the subquery takes
-- (Flink's window table function has window_end). The BETWEEN makes an interval join
-- of the bids with the closed windows: a bid leaves state once the aggregate's watermark
-- is 10 s past it, a window's maximum once the bids' watermark passes its end. Append
-- output, as in Flink.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
FROM bid b
JOIN (SELECT maxprice, w['end'] AS date_time
      FROM (SELECT max(price) AS maxprice, tumble(date_time, INTERVAL '10' SECOND) AS w
            FROM bid GROUP BY tumble(date_time, INTERVAL '10' SECOND)) m) b1
  ON b.price = b1.maxprice
WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time;
