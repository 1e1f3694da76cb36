-- mode: changelog
SELECT c.user_id, c.timestamp AS crash_at, l.timestamp AS login_at
FROM (SELECT * FROM logs WHERE content LIKE '%crash%') c
LEFT JOIN (SELECT * FROM logs WHERE content LIKE '%login%') l
  ON c.user_id = l.user_id AND l.timestamp > c.timestamp;
