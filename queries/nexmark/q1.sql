-- Nexmark Query 1: currency conversion (dollars to euros).
-- Flink: SELECT auction, bidder, 0.908 * price as price, dateTime, extra FROM bid
-- Differs: 0.908 is a DOUBLE literal in DataFusion (Flink: DECIMAL); cast it for decimals.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid;
