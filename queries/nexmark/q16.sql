-- Nexmark Query 16: channel statistics per day.
-- Flink: SELECT channel, DATE_FORMAT(dateTime, 'yyyy-MM-dd') as day,
--          max(DATE_FORMAT(dateTime, 'HH:mm')) as minute, count(*) AS total_bids, …
--        FROM bid GROUP BY channel, DATE_FORMAT(dateTime, 'yyyy-MM-dd')
-- Differs: DATE_FORMAT is to_char. An updating result: --output-mode update or complete.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT channel, to_char(date_time, '%Y-%m-%d') AS "day",
       max(to_char(date_time, '%H:%M')) AS "minute",
       count(*) AS total_bids,
       count(*) FILTER (WHERE price < 10000) AS rank1_bids,
       count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       count(DISTINCT bidder) AS total_bidders,
       count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
       count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
       count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
       count(DISTINCT auction) AS total_auctions,
       count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
       count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
       count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
FROM bid
GROUP BY channel, to_char(date_time, '%Y-%m-%d');
