-- mode: changelog
SELECT n, count(*) AS users, min(u) AS first_user, max(u) AS last_user
FROM (SELECT user_id AS u, count(*) AS n FROM logs GROUP BY user_id) t GROUP BY n;
