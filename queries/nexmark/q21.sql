-- Nexmark Query 21: add a channel id.
-- Flink: SELECT auction, bidder, price, channel,
--          CASE WHEN lower(channel) = 'apple' THEN '0' … ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)
--          END AS channel_id FROM bid
--        WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) is not null
--           or lower(channel) in ('apple', 'google', 'facebook', 'baidu')
-- Differs: REGEXP_EXTRACT(s, p, 2) is regexp_match(s, p)[2].
-- The bid stream, made in-process by the nexmark crate (drop max_events for an endless
-- stream; for the bid topic that `sluice gen --nexmark` fills, use connector = 'kafka',
-- topic = 'nexmark-bid' with the same columns: see README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT auction, bidder, price, channel,
       CASE WHEN lower(channel) = 'apple' THEN '0'
            WHEN lower(channel) = 'google' THEN '1'
            WHEN lower(channel) = 'facebook' THEN '2'
            WHEN lower(channel) = 'baidu' THEN '3'
            ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] END AS channel_id
FROM bid
WHERE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu');
