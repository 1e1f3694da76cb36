-- mode: changelog
SELECT severity, u, n, rn FROM
  (SELECT severity, u, n, row_number() OVER (PARTITION BY severity ORDER BY n, u) AS rn FROM
    (SELECT severity, user_id AS u, count(*) AS n FROM logs GROUP BY severity, user_id) t) r
WHERE rn <= 2;
