-- Nexmark Query 2: selection (bids on a set of auctions).
-- Flink: SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, price FROM bid WHERE auction % 123 = 0;
