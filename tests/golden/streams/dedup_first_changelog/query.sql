-- mode: changelog
SELECT user_id, timestamp, content FROM
  (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY timestamp) AS rn FROM logs) t
WHERE rn = 1;
