-- mode: append
-- event_time: timestamp
-- Two tables whose event times run apart: the logins topic starts 10 s ahead of the
-- crashes topic, then sends logins older than its own newest. The join's watermark is
-- the minimum over its inputs, so those logins are on time and match; a crash at the
-- watermark (batch 2, u9) and a login behind it (batch 3, u5) are late and dropped.
SELECT c.user_id, c.timestamp AS crash_at, l.timestamp AS login_at
FROM crashes c JOIN logins l
  ON c.user_id = l.user_id AND l.timestamp BETWEEN c.timestamp AND c.timestamp + 3000;
