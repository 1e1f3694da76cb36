-- mode: complete
SELECT count(*) AS busy, sum(n) AS records, max(n) AS most
FROM (SELECT source_ip, count(*) AS n FROM logs GROUP BY source_ip HAVING count(*) > 3) t;
