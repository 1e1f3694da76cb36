-- mode: complete
SELECT severity, status, r FROM
  (SELECT severity, status, rank() OVER (PARTITION BY severity ORDER BY status) AS r FROM logs) t
WHERE r <= 1
ORDER BY severity, status;
