-- Nexmark Query 20: expand each bid with its auction, for auctions of category 10.
-- Flink: SELECT auction, bidder, price, channel, url, B.dateTime, B.extra,
--               itemName, description, initialBid, reserve, A.dateTime, expires, seller,
--               category, A.extra
--        FROM bid AS B INNER JOIN auction AS A on B.auction = A.id WHERE A.category = 10
-- Differs: the crate's column names (item_name, initial_bid, date_time); the two
-- date_time and extra columns are renamed apart. Append-only output (an inner join of two
-- append-only streams); both sides stay in state (set state_ttl to bound it).
-- The streams, made in-process by the nexmark crate (the same seed for each table, so ids
-- agree across them; drop max_events for endless streams; for the topics that
-- `sluice gen --nexmark` fills, use connector = 'kafka' with the same columns: README.md).
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                  date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'bid', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');
CREATE TABLE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
                      reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT,
                      category BIGINT, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'auction', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_date_time,
       b.extra AS bid_extra, a.item_name, a.description, a.initial_bid, a.reserve,
       a.date_time AS auction_date_time, a.expires, a.seller, a.category,
       a.extra AS auction_extra
FROM bid b JOIN auction a ON b.auction = a.id
WHERE a.category = 10;
