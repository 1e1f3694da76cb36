-- mode: changelog
SELECT severity, user_id, timestamp, rn FROM
  (SELECT *, row_number() OVER (PARTITION BY severity ORDER BY timestamp DESC) AS rn FROM logs) t
WHERE rn <= 2;
