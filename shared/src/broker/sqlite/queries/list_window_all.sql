-- As list_window.sql, for every tenant (the primary key's index).
SELECT MIN(id), COUNT(*) FROM (
  SELECT id FROM jobs
  WHERE ?1 IS NULL AND id < ?2
  ORDER BY id DESC
  LIMIT ?3
)
