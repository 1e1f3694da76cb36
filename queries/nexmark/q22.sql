-- Nexmark Query 22: get URL directories.
-- Flink: SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) as dir1,
--          SPLIT_INDEX(url, '/', 4) as dir2, SPLIT_INDEX(url, '/', 5) as dir3 FROM bid
-- Differs: SPLIT_INDEX is 0-based and NULL past the end; split_part is 1-based and gives
-- '' past the end, hence nullif.
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, price, channel,
       nullif(split_part(url, '/', 4), '') AS dir1,
       nullif(split_part(url, '/', 5), '') AS dir2,
       nullif(split_part(url, '/', 6), '') AS dir3
FROM bid;
