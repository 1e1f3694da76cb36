-- Nexmark Query 17: auction statistics per day.
-- Flink: SELECT auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd') as day, count(*) AS total_bids,
--          count(*) filter (where price < 10000) AS rank1_bids, …, min(price) AS min_price,
--          max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price
--        FROM bid GROUP BY auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd')
-- Differs: DATE_FORMAT is to_char. An updating result: --output-mode update or complete.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, to_char(date_time, '%Y-%m-%d') AS "day",
       count(*) AS total_bids,
       count(*) FILTER (WHERE price < 10000) AS rank1_bids,
       count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price,
       sum(price) AS sum_price
FROM bid
GROUP BY auction, to_char(date_time, '%Y-%m-%d');
