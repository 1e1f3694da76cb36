-- mode: append
SELECT c.user_id, c.timestamp AS crash_at, l.timestamp AS login_at, l.source_ip AS login_ip
FROM logs c JOIN logs l ON c.user_id = l.user_id AND c.source_ip <> l.source_ip
WHERE c.content LIKE '%crash%' AND l.content LIKE '%login%';
