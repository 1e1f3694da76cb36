-- mode: append
SELECT tumble(event_time, INTERVAL '3 seconds') AS window, user_id, count(*) AS n
FROM logs GROUP BY tumble(event_time, INTERVAL '3 seconds'), user_id;
