-- mode: append
SELECT starttime, max(n) AS most, count(*) AS users FROM
  (SELECT window['start'] AS starttime, n FROM
    (SELECT tumble(event_time, INTERVAL '3 seconds') AS window, user_id, count(*) AS n
     FROM logs GROUP BY tumble(event_time, INTERVAL '3 seconds'), user_id) a) t
GROUP BY starttime;
