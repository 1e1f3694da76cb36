-- Nexmark Query 8: monitor new users. Who opened an account and then created an auction
-- within the same 10-second window? A window join: both inputs are windowed aggregates.
-- Flink: SELECT P.id, P.name, P.starttime
--        FROM (SELECT id, name, window_start AS starttime, window_end AS endtime
--              FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
--              GROUP BY id, name, window_start, window_end) P
--        JOIN (SELECT seller, window_start AS starttime, window_end AS endtime
--              FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
--              GROUP BY seller, window_start, window_end) A
--        ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime
-- Differs: the window is a group key, tumble(date_time, …), a struct whose start and end
-- the subqueries take apart (Flink's window table function has the two columns). Each
-- aggregate emits a window once the watermark passes its end; the join then pairs the
-- windows (append output) and drops a window's rows once the other input's watermark
-- has passed its end, so its state holds about one window of each input.
-- The streams, made in-process by the nexmark crate (the same seed for each table, so ids
-- agree across them; drop max_events for endless streams; for the topics that
-- `sluice gen --nexmark` fills, use connector = 'kafka' with the same columns: README.md).
CREATE TABLE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
                     city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'person', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');
CREATE TABLE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
                      reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT,
                      category BIGINT, extra VARCHAR)
WITH (connector = 'nexmark', event_type = 'auction', max_events = '10000000',
      event_time = 'date_time', watermark_delay = '4 seconds');

SELECT p.id, p.name, p.starttime
FROM (SELECT id, name, w['start'] AS starttime, w['end'] AS endtime
      FROM (SELECT id, name, tumble(date_time, INTERVAL '10' SECOND) AS w
            FROM person GROUP BY id, name, tumble(date_time, INTERVAL '10' SECOND)) pw) p
JOIN (SELECT seller, w['start'] AS starttime, w['end'] AS endtime
      FROM (SELECT seller, tumble(date_time, INTERVAL '10' SECOND) AS w
            FROM auction GROUP BY seller, tumble(date_time, INTERVAL '10' SECOND)) aw) a
  ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime;
