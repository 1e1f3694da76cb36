-- Nexmark Query 14: calculation (bid time type, a character count, a price range).
-- Flink: SELECT auction, bidder, 0.908 * price as price,
--          CASE WHEN HOUR(dateTime) >= 8 AND HOUR(dateTime) <= 18 THEN 'dayTime'
--               WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN 'nightTime'
--               ELSE 'otherTime' END AS bidTimeType,
--          dateTime, extra, count_char(extra, 'c') AS c_counts
--        FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
-- Differs: HOUR(x) is date_part('hour', x); the count_char UDF is written with length
-- and replace; 0.908 is a DOUBLE.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, 0.908 * price AS price,
       CASE WHEN date_part('hour', date_time) >= 8 AND date_part('hour', date_time) <= 18 THEN 'dayTime'
            WHEN date_part('hour', date_time) <= 6 OR date_part('hour', date_time) >= 20 THEN 'nightTime'
            ELSE 'otherTime' END AS bid_time_type,
       date_time, extra,
       character_length(extra) - character_length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
