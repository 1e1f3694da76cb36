-- mode: complete
SELECT DISTINCT n FROM (SELECT user_id, count(*) AS n FROM logs GROUP BY user_id) t ORDER BY n;
