-- Nexmark Query 10: log the bids to a file system, with the day and minute of each.
-- Flink: INSERT INTO fs_sink SELECT auction, bidder, price, dateTime, extra,
--          DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm') FROM bid
-- Differs: DATE_FORMAT is to_char with chrono's format; the Parquet sink writes one
-- file per batch (rolled up by size), not Hive partitions dt=/hm= (the columns are kept).
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

CREATE TABLE nexmark_q10 WITH (connector = 'parquet', path = '/tmp/sluice-nexmark-q10');
INSERT INTO nexmark_q10
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt, to_char(date_time, '%H:%M') AS hm
FROM bid;
