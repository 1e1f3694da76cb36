-- Nexmark Query 19: the ten highest bids of each auction (top-N).
-- Flink: SELECT * FROM
--          (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
--           FROM bid)
--        WHERE rank_number <= 10
-- Differs: ties in price are broken by the other columns, so the answer does not depend on
-- arrival order (Flink ranks ties in arrival order); the columns are listed (`*` would
-- add the table's virtual event_time column). An updating result keyed by
-- (auction, rank_number): a new top bid shifts the ones below it; run with
-- --output-mode changelog (or complete).
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, price, channel, url, date_time, extra, rank_number FROM
  (SELECT auction, bidder, price, channel, url, date_time, extra, row_number() OVER (
      PARTITION BY auction
      ORDER BY price DESC, date_time, bidder, channel, url, extra) AS rank_number
   FROM bid) t
WHERE rank_number <= 10;
