-- mode: changelog
-- A full outer join of two tables: a row of either side is sent null-padded while it
-- matches nothing and taken back when its first match arrives, whichever table brings
-- it (a close may come before its open).
SELECT o.user_id AS opened_by, o.timestamp AS opened_at, c.user_id AS closed_by, c.timestamp AS closed_at
FROM opened o FULL JOIN closed c ON o.user_id = c.user_id;
