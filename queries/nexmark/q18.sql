-- Nexmark Query 18: the last bid of each bidder on each auction (dedup).
-- Flink: SELECT auction, bidder, price, channel, url, dateTime, extra
--        FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC)
--              AS rank_number FROM bid)
--        WHERE rank_number <= 1
-- Differs: ties in dateTime are broken by the other columns, so the answer does not depend
-- on arrival order (Flink keeps whichever came first). An updating result: each newer bid
-- replaces the pair's row; run with --output-mode changelog (or update into Kafka with
-- key = 'auction', or complete).
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, price, channel, url, date_time, extra
FROM (SELECT *, row_number() OVER (
        PARTITION BY bidder, auction
        ORDER BY date_time DESC, price DESC, channel DESC, url DESC, extra DESC) AS rank_number
      FROM bid) t
WHERE rank_number <= 1;
