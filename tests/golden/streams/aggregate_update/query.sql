-- mode: update
SELECT user_id, count(*) AS n, max(timestamp) AS last FROM logs GROUP BY user_id;
