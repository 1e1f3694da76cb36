-- Nexmark Query 9: the winning bid of each auction (the highest, earliest bid made while
-- it was open), with the auction's columns.
-- Flink: SELECT id, itemName, …, auction, bidder, price, bid_dateTime, bid_extra
--        FROM (SELECT A.*, B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime,
--                B.extra AS bid_extra,
--                ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum
--              FROM auction A, bid B
--              WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires)
--        WHERE rownum <= 1
-- Differs: ties in (price, date_time) are broken by bidder, so the answer does not depend
-- on arrival order. A top-1 per auction over the join's rows: an updating result keyed by
-- id (run with --output-mode changelog). The join keeps every bid and auction.
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

SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       extra, auction, bidder, price, bid_date_time, bid_extra
FROM (SELECT a.*, b.auction, b.bidder, b.price, b.date_time AS bid_date_time,
             b.extra AS bid_extra,
             row_number() OVER (PARTITION BY a.id
                                ORDER BY b.price DESC, b.date_time ASC, b.bidder ASC) AS rownum
      FROM auction a JOIN bid b ON a.id = b.auction
      WHERE b.date_time BETWEEN a.date_time AND a.expires) t
WHERE rownum <= 1;
