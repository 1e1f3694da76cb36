-- mode: append
-- A window join (Nexmark q8's shape): per user and 5-second window, crashes counted
-- over one table and logins over the other, joined on the user and the window. Each
-- pair is emitted once, in the batch where the later of its two windows closes. Each
-- aggregate follows its own table's watermark (the minimum is taken where the two
-- streams meet, at the join, as in Flink), so the logins' windows close first: u2's
-- login at 00:00:04 (batch 1) arrives after the logins' [0 s, 5 s) window closed and is
-- dropped, and so u2 has no row; so is u3's crash at 00:00:04.5 (batch 2). Users with
-- crashes but no logins in a window, or the other way round, have no row.
SELECT c.user_id, c.starttime, c.crashes, l.logins
FROM (SELECT user_id, w['start'] AS starttime, w['end'] AS endtime, n AS crashes
      FROM (SELECT user_id, tumble(event_time, INTERVAL '5 seconds') AS w, count(*) AS n
            FROM crashes GROUP BY user_id, tumble(event_time, INTERVAL '5 seconds')) cw) c
JOIN (SELECT user_id, w['start'] AS starttime, w['end'] AS endtime, n AS logins
      FROM (SELECT user_id, tumble(event_time, INTERVAL '5 seconds') AS w, count(*) AS n
            FROM logins GROUP BY user_id, tumble(event_time, INTERVAL '5 seconds')) lw) l
  ON c.user_id = l.user_id AND c.starttime = l.starttime AND c.endtime = l.endtime;
